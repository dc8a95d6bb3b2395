"""twisted_gw.site in memory: a real GatewaySite and its HTTPChannel over a
StringTransport, time on a task.Clock.

What the site answers itself (431 for oversized heads, 408 for heads that
trickle past ``header_timeout``, 400 for malformed requests, 503 past
``max_connections``) is JSON in the listener's shape; a Content-Length over
the body bound is dispatched at once; an undecodable URL reaches the app's
unmatched handler, marked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from klein import Klein
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import NotFound

from twisted_gw import site as site_module
from twisted_gw.site import GatewayChannel, GatewaySite

LIMIT = 1000  # max_body_bytes of the test sites
DEADLINE = 5.0  # header_timeout of the test sites


def _json(request: Any, doc: Any, status: int = 200) -> bytes:
    body = json.dumps(doc).encode()
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))  # as the gateway's apps do
    return body


class Echo:
    """A Klein app standing in for a listener's: it says what it was given."""

    app = Klein()

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    @app.route("/echo", methods=["GET", "POST"])
    def echo(self, request: Any) -> bytes:
        body = request.content.read()
        return _json(request, {"too_large": request.body_too_large, "body": body.decode()})

    @app.route("/later", methods=["GET"])
    def later(self, request: Any) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append(d)
        return d.addCallback(lambda doc: _json(request, doc))

    @app.handle_errors(NotFound)
    def unmatched(self, request: Any, failure: Any) -> bytes:
        return _json(request, {"undecodable": request.url_undecodable}, 404)


def admin_shape(error: Any) -> bytes:
    return json.dumps({"error_msg": error.message}).encode()


def make_site(clock: Clock, **kw: Any) -> tuple[GatewaySite, Echo]:
    app = Echo()
    kw.setdefault("header_timeout", DEADLINE)
    site = GatewaySite(app.app.resource(), LIMIT, reactor=clock, **kw)
    return site, app


def connect(site: GatewaySite, port: int = 40000) -> tuple[Any, StringTransport]:
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 3000),
        peerAddress=IPv4Address("TCP", "127.0.0.1", port),
    )
    protocol.makeConnection(transport)
    return protocol, transport


def close(protocol: Any) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


def responses(transport: StringTransport) -> list[tuple[int, dict[str, str], bytes]]:
    """Every response written so far: (status, headers, body) (Content-Length framed)."""
    data, out = transport.value(), []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode().lower()] = value.strip().decode()
        length = int(headers.get("content-length", 0))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def only_response(transport: StringTransport) -> tuple[int, dict[str, str], Any]:
    [(status, headers, body)] = responses(transport)
    return status, headers, json.loads(body) if body else None


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- 431 / 400: heads twisted.web refuses ---------------------------------------------


def test_headers_over_16k_in_total_get_431_json_and_the_connection_closes(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(17))
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status, headers_out, body = only_response(transport)
    assert status == 431
    assert headers_out["content-type"] == "application/json"
    assert headers_out["connection"] == "close"
    assert body == {
        "error": {
            "message": "Request header fields too large",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_header_fields_too_large",
        }
    }
    assert transport.disconnecting


def test_one_header_line_over_max_length_gets_431_not_a_silent_close(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    assert only_response(transport)[0] == 431
    assert transport.disconnecting


def test_a_request_line_over_max_length_gets_431_even_before_its_end(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /" + b"a" * 17000)  # no CRLF yet
    assert only_response(transport)[0] == 431
    assert transport.disconnecting


def test_more_headers_than_max_headers_get_431(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    headers = b"".join(b"x%d:1\r\n" % i for i in range(GatewayChannel.maxHeaders + 1))
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n" + headers + b"\r\n")
    assert only_response(transport)[0] == 431


def test_a_malformed_header_gets_a_json_400_not_a_bare_one(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nno colon here\r\n\r\n")
    status, _, body = only_response(transport)
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert transport.disconnecting


def test_the_admin_listener_gets_its_own_error_shape(clock):
    site, _ = make_site(clock, error_body=admin_shape)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    assert only_response(transport)[2] == {"error_msg": "Request header fields too large"}


def test_nothing_is_parsed_after_a_refusal(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n\r\n")
    assert len(responses(transport)) == 1


# -- 413 at once for a Content-Length over the bound ---------------------------------------


def test_content_length_over_the_bound_is_dispatched_at_once_without_100_continue(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % (LIMIT + 1)
    )
    assert b"100 Continue" not in transport.value()
    status, headers, body = only_response(transport)
    assert (status, body) == (200, {"too_large": True, "body": ""})  # the route decides
    assert headers["connection"] == "close"
    assert transport.disconnecting  # closed after the answer


def test_the_rest_of_a_refused_body_is_never_parsed_as_a_request(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    smuggled = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    channel.dataReceived(
        b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (LIMIT + len(smuggled)) + smuggled
    )
    channel.dataReceived(smuggled)
    assert len(responses(transport)) == 1


def test_a_refused_body_is_not_buffered_while_the_route_works(clock):
    site, app = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /later HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (10 * LIMIT))
    channel.dataReceived(b"x" * 50_000)  # arrives while /later is pending
    assert channel._dataBuffer == []
    assert transport.producerState != "paused"
    app.pending[0].callback({})
    assert only_response(transport)[0] == 200
    assert transport.disconnecting


def test_content_length_within_the_bound_still_gets_100_continue_and_its_body(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(
        b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    transport.clear()
    channel.dataReceived(b"hello")
    assert only_response(transport)[2] == {"too_large": False, "body": "hello"}
    assert not transport.disconnecting  # keep-alive as usual


def test_a_chunked_body_over_the_bound_is_refused_when_it_ends(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"y" * 600
    channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2)
    assert transport.value() == b""  # not dispatched before the end
    channel.dataReceived(b"0\r\n\r\n")
    assert only_response(transport)[2] == {"too_large": True, "body": ""}


# -- the header deadline ---------------------------------------------------------------------


def test_a_head_trickled_one_byte_a_second_is_cut_at_the_deadline_with_408(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    for byte in b"GET /echo HTTP/1.1\r\nHost: x"[: int(DEADLINE)]:
        channel.dataReceived(bytes([byte]))
        clock.advance(0.99)
    assert not transport.disconnecting
    clock.advance(DEADLINE - 0.99 * int(DEADLINE))  # exactly DEADLINE after the first byte
    status, _, body = only_response(transport)
    assert status == 408
    assert body["error"]["code"] == "header_timeout"
    assert body["error"]["message"] == "Request headers not received within 5 seconds"
    assert transport.disconnecting


def test_a_refused_client_that_does_not_read_is_aborted_soon_after(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n")
    clock.advance(DEADLINE)
    assert transport.disconnecting and not transport.disconnected
    clock.advance(site_module._ABORT_AFTER)
    assert transport.disconnected  # abortConnection


def test_the_deadline_counts_from_the_first_byte_not_from_the_connection(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    clock.advance(3 * DEADLINE)  # connected, silent: the idle timeout's business
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n")
    clock.advance(DEADLINE - 0.1)
    channel.dataReceived(b"\r\n")
    assert only_response(transport)[0] == 200
    assert not transport.disconnecting


def test_a_keep_alive_connection_idle_between_requests_is_not_cut(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n\r\n")
    clock.advance(3 * DEADLINE)
    assert not transport.disconnecting
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n")  # the next request starts
    clock.advance(DEADLINE)
    assert [r[0] for r in responses(transport)] == [200, 408]


def test_a_head_that_arrives_in_one_read_arms_no_timer(clock):
    site, _ = make_site(clock)
    channel, _ = connect(site)
    timers = len(clock.getDelayedCalls())  # the idle timeout
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(clock.getDelayedCalls()) == timers


def test_a_slow_body_after_a_complete_head_is_not_cut_by_the_deadline(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
    for byte in b"abc":
        clock.advance(DEADLINE)
        channel.dataReceived(bytes([byte]))
    assert only_response(transport)[2] == {"too_large": False, "body": "abc"}


def test_a_pipelined_head_left_incomplete_gets_its_own_deadline(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n")
    clock.advance(DEADLINE)
    assert [r[0] for r in responses(transport)] == [200, 408]


def test_a_head_buffered_behind_a_slow_response_gets_its_deadline_once_parsed(clock):
    site, app = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /later HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n")
    clock.advance(2 * DEADLINE)  # our slowness, not the client's
    assert not transport.disconnecting
    app.pending[0].callback({})
    clock.advance(DEADLINE)
    assert [r[0] for r in responses(transport)] == [200, 408]


def test_the_deadline_is_gone_with_the_connection(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\n")
    close(channel)
    clock.advance(DEADLINE)
    assert transport.value() == b""


# -- the connection cap ----------------------------------------------------------------------


def test_a_connection_past_the_cap_gets_503_and_is_closed_at_once(clock):
    site, _ = make_site(clock, max_connections=2)
    connect(site, 1)
    connect(site, 2)
    refused, transport = connect(site, 3)
    assert not isinstance(refused, GatewayChannel)
    status, _, body = only_response(transport)
    assert status == 503
    assert body["error"]["code"] == "too_many_connections"
    assert transport.disconnecting
    assert site.open_connections == 2
    refused.dataReceived(b"GET /echo HTTP/1.1\r\n\r\n")  # not read
    assert len(responses(transport)) == 1


def test_closing_a_connection_frees_its_slot(clock):
    site, _ = make_site(clock, max_connections=2)
    first, _ = connect(site, 1)
    connect(site, 2)
    close(first)
    again, transport = connect(site, 3)
    assert isinstance(again, GatewayChannel)
    again.dataReceived(b"GET /echo HTTP/1.1\r\n\r\n")
    assert only_response(transport)[0] == 200


def test_the_cap_warning_is_logged_at_most_once_a_minute(clock, monkeypatch):
    events: list[dict] = []
    monkeypatch.setattr(site_module, "log", Logger(observer=events.append))
    site, _ = make_site(clock, max_connections=1)
    connect(site, 1)
    for port in (2, 3, 4):
        connect(site, port)
    clock.advance(59)
    connect(site, 5)
    assert len(events) == 1
    assert events[0]["log_level"].name == "warn"
    assert (events[0]["cap"], events[0]["port"], events[0]["refused"]) == (1, 3000, 1)
    clock.advance(1)
    connect(site, 6)
    assert len(events) == 2
    assert events[1]["refused"] == 4  # three silent ones, and this one


def test_a_refused_connection_that_lingers_is_aborted(clock):
    site, _ = make_site(clock, max_connections=1)
    connect(site, 1)
    _, transport = connect(site, 2)
    clock.advance(site_module._ABORT_AFTER)
    assert transport.disconnected


# -- undecodable URLs ------------------------------------------------------------------------


def test_an_undecodable_path_reaches_the_unmatched_handler_marked(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo%ff HTTP/1.1\r\nHost: x\r\n\r\n")
    assert only_response(transport)[:3:2] == (404, {"undecodable": True})


@pytest.mark.parametrize("host", [b"\xff", b".", b"a..b:3000", b"x" * 64 + b".example"])
def test_a_host_routing_cannot_use_is_a_json_400_from_the_site(clock, host):
    site, _ = make_site(clock, error_body=admin_shape)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
    assert only_response(transport)[:3:2] == (400, {"error_msg": "Invalid Host header"})
    assert not transport.disconnecting


@pytest.mark.parametrize("host", [b"[::1]:3000", b"caf\xc3\xa9.example", b"example.com."])
def test_an_unusual_but_valid_host_is_routed_as_usual(clock, host):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
    assert only_response(transport)[0] == 200


def test_a_percent_encoded_utf8_path_is_routed_as_usual(clock):
    site, _ = make_site(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /ech%6F HTTP/1.1\r\n\r\nGET /caf%C3%A9 HTTP/1.1\r\n\r\n")
    [(s1, _, b1), (s2, _, b2)] = responses(transport)
    assert (s1, json.loads(b1)["too_large"]) == (200, False)
    assert (s2, json.loads(b2)) == (404, {"undecodable": False})


# -- the start-up hold, the probes and CORS before any route -------------------------------


class _Ready:
    def not_ready(self) -> str | None:
        return "config not loaded yet"


def test_held_requests_wait_for_release_and_one_whose_client_left_is_not_dispatched(clock):
    from twisted_gw.health import Health

    site, _ = make_site(clock, health=Health(_Ready()))  # type: ignore[arg-type]
    site.hold()
    waiting, waiting_out = connect(site, 1)
    waiting.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    gone, gone_out = connect(site, 2)
    gone.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    probe, probe_out = connect(site, 3)
    probe.dataReceived(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert waiting_out.value() == gone_out.value() == b""
    status, _, body = only_response(probe_out)
    assert (status, body) == (503, {"status": "not_ready", "reason": "config not loaded yet"})
    close(gone)
    site.release()
    assert only_response(waiting_out)[0] == 200
    assert gone_out.value() == b""
    assert site.held is None


def test_a_drain_drops_the_requests_still_held(clock):
    site, _ = make_site(clock)
    site.hold()
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    site.drain(lambda: None)
    assert transport.disconnecting and transport.value() == b""


def test_cors_marks_every_answer_of_an_allowed_origin_and_answers_its_preflight(clock):
    from twisted_gw.config.file import CorsConfig
    from twisted_gw.cors import CorsPolicy

    cors = CorsPolicy(CorsConfig(("https://a.example",), ("authorization",), 5), ["GET", "POST"])
    site, _ = make_site(clock, cors=cors)
    channel, transport = connect(site)
    channel.dataReceived(
        b"OPTIONS /echo HTTP/1.1\r\nHost: x\r\nOrigin: https://A.example\r\n"
        b"Access-Control-Request-Method: POST\r\n\r\n"
    )
    channel.dataReceived(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n\r\n")
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\nOrigin: https://b.example\r\n\r\n")
    [(preflight, headers, _), (missing, marked, _), (other, plain, _)] = responses(transport)
    assert preflight == 204
    assert headers["access-control-allow-origin"] == "https://A.example"  # as it was sent
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == "authorization"
    assert headers["access-control-max-age"] == "5"
    assert (missing, marked["access-control-allow-origin"], marked["vary"]) == (
        404,
        "https://a.example",
        "Origin",
    )
    assert other == 200 and "access-control-allow-origin" not in plain and "vary" not in plain


# -- fixed-path routes found without werkzeug (FixedRouteResource) ---------------------------


class Fixed(Echo):
    """Echo, with a route that fails and one that answers in a str."""

    app = Klein()
    app.route("/echo", methods=["GET", "POST"])(Echo.echo)
    app.handle_errors(NotFound)(Echo.unmatched)

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0

    @app.route("/later", methods=["GET"])
    def later(self, request: Any) -> Deferred:
        def cancel(_: Deferred) -> None:
            self.cancelled += 1

        d: Deferred = Deferred(cancel)
        self.pending.append(d)
        return d.addCallback(lambda doc: _json(request, doc))

    @app.route("/boom", methods=["GET"])
    def boom(self, request: Any) -> bytes:
        raise RuntimeError("a bug")

    @app.route("/text", methods=["GET"])
    def text(self, request: Any) -> str:
        return "caf\u00e9"

    @app.route("/item/<name>", methods=["GET"])
    def item(self, request: Any, name: str) -> bytes:
        return _json(request, {"name": name, "prepath": [p.decode() for p in request.prepath]})


def _fixed_and_klein(clock: Clock) -> list[tuple[GatewaySite, Fixed]]:
    sites = []
    for fixed in (True, False):
        app = Fixed()
        resource = site_module.FixedRouteResource(app.app) if fixed else app.app.resource()
        sites.append((GatewaySite(resource, LIMIT, reactor=clock), app))
    return sites


def _without_date(data: bytes) -> bytes:
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"Date: "))


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ech%6F HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /echo/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /echo?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /echo HTTP/1.1\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: .\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: \xff\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: [::1]:3000\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n",
        b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /item/a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_a_fixed_route_answers_byte_for_byte_as_klein_does(clock, raw):
    outputs = []
    for site, _ in _fixed_and_klein(clock):
        channel, transport = connect(site)
        channel.dataReceived(raw)
        channel.dataReceived(raw)  # the second time the Host is known to the fixed one
        outputs.append(_without_date(transport.value()))
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith(b"HTTP/1.1 ")


def test_a_fixed_route_is_found_without_werkzeug_and_with_kleins_prepath(clock, monkeypatch):
    (site, _), _ = _fixed_and_klein(clock)
    channel, transport = connect(site)
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")  # the Host is checked once
    seen = []
    resource = site.resource
    monkeypatch.setattr(resource._app.url_map, "bind", lambda *a, **k: seen.append(a))
    channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert seen == [] and [r[0] for r in responses(transport)] == [200, 200]


def test_a_fixed_routes_deferred_is_cancelled_when_the_client_goes(clock):
    for site, app in _fixed_and_klein(clock):
        channel, _ = connect(site)
        channel.dataReceived(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        close(channel)
        assert app.cancelled == 1 and app.pending[0].called


def test_a_fixed_routes_deferred_answer_is_written_when_it_fires(clock):
    outputs = []
    for site, app in _fixed_and_klein(clock):
        channel, transport = connect(site)
        channel.dataReceived(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.value() == b""
        app.pending[0].callback({"late": True})
        outputs.append(_without_date(transport.value()))
    assert outputs[0] == outputs[1] and b'{"late": true}' in outputs[0]
