"""Hardening of the HTTP layer (issue 11), black-box against the real gateway:
oversized heads get a JSON 431, an oversized Content-Length a 413 before its
body, slow heads are cut at ``header_timeout``, connections past
``max_connections`` are refused, an undecodable path is a JSON 400 without a
traceback, and two Authorization headers are a 400. Each in the listener's
error shape (CONTRACT 3 and 4.1).

The auth functions' duplicate-header rules are also checked directly (pure).
Raw sockets are used where a client library would not send what a hostile
client does.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from typing import Any

import pytest

from tests.conftest import Gateway, secret, start_gateway
from tests.support.gateway import http
from twisted_gw.admin.auth import authorize
from twisted_gw.config.entities import ApiKey
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.errors import GatewayError
from twisted_gw.proxy.auth import authenticate

HEADER_TIMEOUT = 1  # seconds, on both listeners of the module's gateway
MAX_BODY = 4096  # server.proxy.max_body_bytes of the module's gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    extra = {
        "server": {
            "proxy": {"header_timeout": HEADER_TIMEOUT, "max_body_bytes": MAX_BODY},
            "admin": {"header_timeout": HEADER_TIMEOUT},
        }
    }
    gateway = start_gateway(tmp_path_factory.mktemp("hardening"), extra=extra)
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    value = secret()
    status, body = gw.admin_call(
        "POST", "/aisix/admin/apikeys", {"key": value, "allowed_models": []}
    )
    assert status == 201, body
    return value


# -- raw HTTP ----------------------------------------------------------------------------


def open_socket(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the gateway closes (a reset after its answer counts as a close)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _unchunk(data: bytes) -> bytes:
    body = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        if int(size, 16) == 0:
            return body
        body, data = body + data[: int(size, 16)], data[int(size, 16) + 2 :]


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or raw bytes) of one response."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(rest)
    else:
        body = rest[: int(headers.get("content-length", len(rest)))]
    try:
        return int(lines[0].split(" ")[1]), headers, json.loads(body)
    except ValueError:
        return int(lines[0].split(" ")[1]), headers, body


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], Any]:
    """Send ``data``; the response, read until the gateway closes."""
    with open_socket(port) as sock:
        sock.sendall(data)
        return parse(read_to_eof(sock))


def get(path: str, *headers: tuple[str, str]) -> bytes:
    """A GET with ``Connection: close``; headers may repeat."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def openai_error(message: str, code: str | None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


def wait_for_log(process: Any, needle: str, timeout: float = 5.0) -> str:
    """The gateway's stdout once it holds ``needle`` (another process: polled)."""
    deadline = time.monotonic() + timeout
    while needle not in process.stdout:
        assert time.monotonic() < deadline, f"{needle!r} not logged:\n{process.output}"
        time.sleep(0.02)
    return process.stdout


# -- 431: heads over twisted.web's bounds ---------------------------------------------------


def test_headers_over_16k_get_a_json_431_and_the_connection_closes(gw):
    pad = [(f"X-Pad-{i}", "a" * 1000) for i in range(17)]
    status, headers, body = raw_exchange(gw.proxy_port, get("/v1/models", *pad))
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert body == openai_error(
        "Request header fields too large", "request_header_fields_too_large"
    )


def test_a_header_line_over_the_line_limit_gets_431_not_a_silent_close(gw):
    status, _, body = raw_exchange(gw.proxy_port, get("/v1/models", ("X-Big", "a" * 17000)))
    assert status == 431
    assert body["error"]["code"] == "request_header_fields_too_large"


def test_a_request_line_over_the_line_limit_gets_431(gw):
    status, _, _ = raw_exchange(gw.proxy_port, get("/v1/" + "a" * 17000))
    assert status == 431


def test_the_admin_listener_answers_431_in_its_own_shape(gw):
    request = get("/aisix/admin/models", ("X-Big", "a" * 17000))
    status, _, body = raw_exchange(gw.admin_port, request)
    assert (status, body) == (431, {"error_msg": "Request header fields too large"})


# -- 413 before the body ----------------------------------------------------------------------


def oversized_post(path: str, *headers: tuple[str, str]) -> bytes:
    """The head of a POST announcing a body far over the bound, with
    ``Expect: 100-continue``; no body follows."""
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {1 << 40}",
        "Expect: 100-continue",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_content_length_over_the_bound_gets_413_at_once_without_100_continue(gw, key):
    with open_socket(gw.proxy_port, timeout=2.0) as sock:
        sock.sendall(oversized_post("/v1/chat/completions", ("Authorization", f"Bearer {key}")))
        raw = read_to_eof(sock)  # closed by the gateway after its answer
    assert b"100 Continue" not in raw
    status, headers, body = parse(raw)
    assert status == 413
    assert headers["connection"] == "close"
    assert body == openai_error(f"Request body exceeds {MAX_BODY} bytes", "request_too_large")
    # the route's normal path: one access-log line, like any request
    log = wait_for_log(gw.process, f"rid={headers['x-request-id']} ")
    [line] = [x for x in log.splitlines() if f"rid={headers['x-request-id']} " in x]
    assert "status=413" in line and "end=rejected" in line


def test_auth_comes_before_the_oversized_body(gw):
    with open_socket(gw.proxy_port, timeout=2.0) as sock:
        sock.sendall(oversized_post("/v1/chat/completions"))
        status, _, body = parse(read_to_eof(sock))
    assert (status, body) == (401, openai_error("Missing API key in request", None))


def test_a_body_trickling_in_after_an_oversized_head_is_never_read(gw, key):
    """The client keeps sending; the gateway has answered and closed."""
    with open_socket(gw.proxy_port, timeout=2.0) as sock:
        sock.sendall(oversized_post("/v1/embeddings", ("Authorization", f"Bearer {key}")))
        try:
            for _ in range(20):
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
        except OSError:
            pass  # the gateway is gone: expected
        raw = read_to_eof(sock)
    assert raw.count(b"HTTP/1.1 ") == 1
    assert parse(raw)[0] == 413


def test_the_admin_api_refuses_an_oversized_document_at_once(gw):
    auth = ("Authorization", f"Bearer {gw.admin_key}")
    with open_socket(gw.admin_port, timeout=2.0) as sock:
        sock.sendall(oversized_post("/aisix/admin/models/too-big", auth).replace(b"POST", b"PUT"))
        status, _, body = parse(read_to_eof(sock))
    assert (status, body) == (413, {"error_msg": f"Request body exceeds {MAX_BODY} bytes"})


def test_a_chunked_body_over_the_bound_still_gets_413_when_it_ends(gw, key):
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * (MAX_BODY + 1)
    status, _, body = raw_exchange(
        gw.proxy_port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    )
    assert (status, body["error"]["code"]) == (413, "request_too_large")


# -- slow heads -----------------------------------------------------------------------------


def test_fifty_trickling_connections_are_cut_at_the_deadline_while_others_are_served(gw, key):
    count, request = 50, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    selector = selectors.DefaultSelector()
    first_byte: dict[socket.socket, float] = {}
    sent: dict[socket.socket, int] = {}
    answers: dict[socket.socket, bytes] = {}
    lived: dict[socket.socket, float] = {}
    for _ in range(count):
        sock = open_socket(gw.proxy_port)
        sock.sendall(request[:1])
        first_byte[sock], sent[sock], answers[sock] = time.monotonic(), 1, b""
        selector.register(sock, selectors.EVENT_READ)
    served = None
    try:
        give_up = time.monotonic() + 5.0
        while len(lived) < count and time.monotonic() < give_up:
            # the slow clients: one more byte each every 0.2 s, until cut
            for event, _ in selector.select(timeout=0.2):
                sock = event.fileobj
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                answers[sock] += chunk
                if not chunk:
                    lived[sock] = time.monotonic() - first_byte[sock]
                    selector.unregister(sock)
            for sock in first_byte:
                if sock not in lived:
                    try:
                        sock.sendall(request[sent[sock] : sent[sock] + 1])
                        sent[sock] += 1
                    except OSError:
                        pass
            if served is None and len(lived) == 0:
                started = time.monotonic()
                status, _, _ = http(
                    "GET", gw.proxy + "/v1/models", headers={"Authorization": f"Bearer {key}"}
                )
                served = (status, time.monotonic() - started)
    finally:
        for sock in first_byte:
            sock.close()
        selector.close()
    assert len(lived) == count, f"{count - len(lived)} trickling connections still open after 5 s"
    assert HEADER_TIMEOUT - 0.05 <= min(lived.values())
    assert max(lived.values()) < 2 * HEADER_TIMEOUT, sorted(lived.values())
    assert {parse(a)[0] for a in answers.values()} == {408}
    assert served is not None and served[0] == 200 and served[1] < 0.5, served


def test_a_keep_alive_connection_idle_past_the_deadline_stays_open(gw, key):
    request = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    with open_socket(gw.proxy_port, timeout=3 * HEADER_TIMEOUT) as sock:
        sock.sendall(request.encode())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        # idle between requests: the idle timeout's business, not the deadline's
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
        assert selector.select(timeout=2 * HEADER_TIMEOUT) == []  # no 408, no close
        selector.close()
        sock.sendall(request.encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


# -- the connection cap ---------------------------------------------------------------------


def test_connections_past_max_connections_are_refused_until_one_closes(tmp_path):
    gw = start_gateway(tmp_path, extra={"server": {"proxy": {"max_connections": 5}}})
    held = []
    try:
        for _ in range(5):  # five keep-alive connections, each seen by the gateway
            sock = open_socket(gw.proxy_port)
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 401")
            held.append(sock)
        for _ in range(3):
            with open_socket(gw.proxy_port) as sixth:
                status, _, body = parse(read_to_eof(sixth))
            assert (status, body["error"]["code"]) == (503, "too_many_connections")
        held.pop().close()
        # the gateway frees the slot when it reads the close (another process: polled)
        deadline = time.monotonic() + 5.0
        while True:
            status, _, _ = raw_exchange(gw.proxy_port, get("/v1/models"))
            if status == 401 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert status == 401  # served (auth's answer), not refused
        log = wait_for_log(gw.process, "connection cap reached")
        assert log.count("connection cap reached") == 1  # at most one warning a minute
        assert f"on port {gw.proxy_port}: 5 connections open" in log
    finally:
        for sock in held:
            sock.close()
        gw.process.stop()


# -- undecodable paths ----------------------------------------------------------------------


def test_an_undecodable_proxy_path_is_a_json_400_after_auth(gw, key):
    status, _, body = raw_exchange(gw.proxy_port, get("/v1/%ff"))
    assert (status, body) == (401, openai_error("Missing API key in request", None))
    status, _, body = raw_exchange(
        gw.proxy_port, get("/v1/%ff", ("Authorization", f"Bearer {key}"))
    )
    assert (status, body) == (
        400,
        openai_error("Request path is not valid UTF-8", "invalid_request"),
    )


def test_an_undecodable_admin_path_is_a_json_400(gw):
    auth = ("Authorization", f"Bearer {gw.admin_key}")
    status, _, body = raw_exchange(gw.admin_port, get("/aisix/admin/models/%ff", auth))
    assert (status, body) == (400, {"error_msg": "Request path is not valid UTF-8"})


def test_a_host_that_cannot_be_routed_is_a_json_400(gw):
    lines = b"GET /v1/models HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
    for host in (b".", b"\xff"):
        status, _, body = raw_exchange(gw.proxy_port, lines % host)
        assert (status, body) == (400, openai_error("Invalid Host header", "invalid_request"))
    status, _, body = raw_exchange(gw.admin_port, lines % b"a..b")
    assert (status, body) == (400, {"error_msg": "Invalid Host header"})


def test_undecodable_paths_leave_no_traceback_in_the_log(gw, key):
    raw_exchange(gw.proxy_port, get("/v1/%ff%fe", ("Authorization", f"Bearer {key}")))
    raw_exchange(gw.admin_port, get("/aisix/admin/apikeys/%c3%28"))
    raw_exchange(gw.proxy_port, b"GET / HTTP/1.1\r\nHost: .\r\nConnection: close\r\n\r\n")
    # both answered through the apps: the proxy's one has its access-log line
    wait_for_log(gw.process, 'path="/v1/%ff%fe"')
    assert "Traceback" not in gw.process.output
    assert "Invalid encoding" not in gw.process.output


# -- two Authorization headers ------------------------------------------------------------


def test_two_authorization_headers_are_a_400_on_the_proxy(gw, key):
    twice = (("Authorization", f"Bearer {key}"), ("Authorization", "Bearer other"))
    status, _, body = raw_exchange(gw.proxy_port, get("/v1/models", *twice))
    assert (status, body) == (
        400,
        openai_error("Multiple Authorization headers", "invalid_request"),
    )


def test_two_authorization_headers_are_a_400_on_the_admin_api(gw):
    twice = (("Authorization", f"Bearer {gw.admin_key}"), ("Authorization", "Bearer other"))
    status, _, body = raw_exchange(gw.admin_port, get("/aisix/admin/models", *twice))
    assert (status, body) == (400, {"error_msg": "Multiple Authorization headers"})


def test_two_x_api_key_headers_are_a_400_on_the_admin_api(gw):
    twice = (("x-api-key", gw.admin_key), ("x-api-key", "other"))
    status, _, body = raw_exchange(gw.admin_port, get("/aisix/admin/models", *twice))
    assert (status, body) == (400, {"error_msg": "Multiple x-api-key headers"})


# -- the auth functions (pure) ------------------------------------------------------------


def _snapshot(key: str) -> Snapshot:
    api_key = ApiKey(id="k1", key=key, allowed_models=frozenset(), rate_limit=None, doc={})
    return Snapshot(keys_by_key={key: api_key}, keys_by_id={"k1": api_key})


def test_authenticate_takes_every_authorization_value():
    snapshot = _snapshot("sk-a")
    assert authenticate(snapshot, [b"Bearer sk-a"]).id == "k1"
    assert authenticate(snapshot, b"bearer sk-a").id == "k1"  # one value, as before
    with pytest.raises(GatewayError) as e:
        authenticate(snapshot, [b"Bearer sk-a", b"Bearer sk-a"])
    assert (e.value.status, e.value.code, e.value.message) == (
        400,
        "invalid_request",
        "Multiple Authorization headers",
    )
    with pytest.raises(GatewayError) as e:
        authenticate(snapshot, None)
    assert e.value.status == 401


def test_admin_authorize_refuses_duplicates_before_checking_the_key():
    keys = (b"admin",)
    assert authorize([b"Bearer admin"], None, keys) is None
    assert authorize(None, [b"admin"], keys) is None
    assert authorize([b"Bearer admin"], [b"x", b"y"], keys) == (400, "Multiple x-api-key headers")
    assert authorize([b"a", b"b"], None, ()) == (400, "Multiple Authorization headers")
    assert authorize(None, None, keys) == (401, "Missing API key")
    assert authorize([b"Bearer nope"], [b"admin"], keys) == (401, "Invalid API key")
