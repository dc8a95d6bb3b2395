"""The one outbound HTTP stack (twisted_gw._outbound), in memory.

No sockets and no mocks of our own code: requests go through the real treq
client, Agent and connection pool the stack builds, on a
``MemoryReactorClock``; each connection the pool opens is connected by hand to
a ``StringTransport`` (recording pause, resume, stop and abort), and the
upstream's answer is fed to it as bytes. So what is checked is what Twisted
does with our reader: when a connection goes back to the pool, when it is
closed, and what the caller is told.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionAborted,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import URI, ResponseFailed, ResponseNeverReceived

from tests.support.twisted_fakes import RecordingTCP
from twisted_gw._outbound import (
    UPSTREAM_WORDS,
    BodyCloser,
    BodyTooLarge,
    EndpointFactory,
    FailureWords,
    close_connection,
    connection_pool,
    describe_failure,
    discard,
    http_client,
    is_cancellation,
    read_body,
)
from twisted_gw.errors import GatewayError
from twisted_gw.providers.http import UpstreamClient

URL = "http://127.0.0.1:8000/v1/chat/completions"


class Upstream:
    """The real client stack on a MemoryReactorClock, answered by hand."""

    def __init__(self, client: UpstreamClient | None = None) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = connection_pool(self.reactor, max_per_host=4, idle_timeout=60)
        self.http = http_client(self.reactor, self.pool, EndpointFactory(self.reactor))
        self.connections: list[tuple[Any, RecordingTCP]] = []

    def request(self) -> defer.Deferred:
        d = self.http.request("POST", URL, data=b"{}", unbuffered=True)
        self.connect()
        return d

    def connect(self) -> None:
        """Connect every connection the pool asked for since the last call."""
        while len(self.reactor.tcpClients) > len(self.connections):
            factory = self.reactor.tcpClients[len(self.connections)][2]
            protocol = factory.buildProtocol(None)
            transport = RecordingTCP()
            protocol.makeConnection(transport)
            self.connections.append((protocol, transport))

    def answer(self, data: bytes, connection: int = -1) -> None:
        self.connections[connection][0].dataReceived(data)

    def lose(self, reason: BaseException, connection: int = -1) -> None:
        """What the reactor does once a connection is gone."""
        self.connections[connection][0].connectionLost(Failure(reason))

    def response(self, head: bytes) -> Any:
        """A response whose head was ``head`` (its body still to come)."""
        d = self.request()
        self.answer(head)
        return result_of(d)

    @property
    def tcp(self) -> RecordingTCP:
        return self.connections[-1][1]


def closes(tcp: RecordingTCP) -> list[str]:
    """The closes asked of a connection (Twisted itself pauses and resumes it
    around ``deliverBody``)."""
    return [call for call in tcp.calls if call in ("stop", "abort")]


def result_of(d: defer.Deferred) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure_of(d: defer.Deferred) -> Failure:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results and isinstance(results[0], Failure), results
    return results[0]


def head(length: int | None = None, extra: bytes = b"") -> bytes:
    framing = b"Content-Length: %d\r\n" % length if length is not None else b""
    return b"HTTP/1.1 200 OK\r\n" + framing + extra + b"\r\n"


# -- read_body: the bound and the pool ----------------------------------------------------


def test_a_body_within_the_bound_is_read_whole_and_its_connection_reused() -> None:
    up = Upstream()
    response = up.response(head(10))
    body = read_body(response, 10, up.reactor)
    up.answer(b"01234")
    up.answer(b"56789")
    assert result_of(body) == b"0123456789"
    up.reactor.advance(0)
    assert "abort" not in up.tcp.calls and "stop" not in up.tcp.calls
    second = up.request()
    assert len(up.connections) == 1  # taken back from the pool, no new connection
    up.answer(head(2) + b"ok")
    assert result_of(read_body(result_of(second))) == b"ok"


def test_a_content_length_over_the_bound_fails_before_a_byte_and_closes_next_turn() -> None:
    up = Upstream()
    response = up.response(head(11))
    body = read_body(response, 10, up.reactor)
    failure = failure_of(body)
    assert failure.check(BodyTooLarge) and failure.value.limit == 10
    assert str(failure.value) == "response body exceeds 10 bytes"
    assert closes(up.tcp) == []
    up.reactor.advance(0)
    assert closes(up.tcp) == ["abort"]


def test_a_body_growing_past_the_bound_fails_and_its_connection_is_aborted() -> None:
    up = Upstream()
    response = up.response(head(extra=b"Transfer-Encoding: chunked\r\n"))
    body = read_body(response, 4, up.reactor)
    up.answer(b"3\r\nabc\r\n")
    assert not body.called
    up.answer(b"3\r\ndef\r\n")
    assert failure_of(body).check(BodyTooLarge)
    up.reactor.advance(0)
    assert up.tcp.calls[-1] == "abort"
    up.lose(ConnectionAborted())  # the reactor reports it gone: nothing more happens
    assert len(up.reactor.getDelayedCalls()) <= 1  # at most the pool's own timers


def test_without_a_bound_any_size_is_read() -> None:
    up = Upstream()
    response = up.response(head(3000))
    body = read_body(response)
    up.answer(b"x" * 3000)
    assert result_of(body) == b"x" * 3000


def test_a_body_without_length_ends_with_its_connection_and_is_whole() -> None:
    up = Upstream()
    response = up.response(head())
    body = read_body(response, 100, up.reactor)
    up.answer(b"all of it")
    up.lose(ConnectionLost())
    assert result_of(body) == b"all of it"


def test_a_body_cut_mid_way_fails_with_the_transport_failure() -> None:
    up = Upstream()
    response = up.response(head(10))
    body = read_body(response, 100, up.reactor)
    up.answer(b"half")
    up.lose(ConnectionLost())
    failure = failure_of(body)
    assert failure.check(ResponseFailed)
    assert describe_failure(failure) == "connection lost while reading the response"


def test_cancelling_a_read_aborts_its_connection() -> None:
    up = Upstream()
    response = up.response(head(10))
    body = read_body(response, 100, up.reactor)
    up.answer(b"half")
    body.cancel()
    assert failure_of(body).check(defer.CancelledError)
    assert closes(up.tcp) == ["abort"]
    assert up.tcp.disconnected


# -- BodyCloser: the pool race -----------------------------------------------------------


class GivesUp(Protocol):
    """A body protocol that gives up at its first bytes (like an event over the bound)."""

    def __init__(self, reactor: Any) -> None:
        self.closer = BodyCloser(reactor)
        self.ended: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.closer.close(self.transport)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closer.body_ended()
        self.ended.append(reason)


def test_a_close_asked_in_the_read_that_ends_the_body_leaves_the_connection_pooled() -> None:
    """The race BodyCloser fixes: Twisted pools a connection right after the
    read that ends its response, so it must not be closed under the pool."""
    up = Upstream()
    response = up.response(head(5))
    protocol = GivesUp(up.reactor)
    response.deliverBody(protocol)
    up.answer(b"whole")  # the last bytes and the end of the body, in one read
    up.reactor.advance(0)
    assert "abort" not in up.tcp.calls
    assert protocol.ended and not up.tcp.disconnected
    second = up.request()
    assert len(up.connections) == 1  # the next request gets the same, healthy connection
    up.answer(head(2) + b"ok")
    assert result_of(read_body(result_of(second))) == b"ok"


def test_a_close_asked_mid_body_pauses_now_and_aborts_on_the_next_turn() -> None:
    up = Upstream()
    response = up.response(head(100))
    protocol = GivesUp(up.reactor)
    response.deliverBody(protocol)
    up.tcp.calls.clear()
    up.answer(b"part")
    up.answer(b"more")  # asked again while the close is pending: nothing more
    assert up.tcp.calls == ["pause"]
    up.reactor.advance(0)
    assert up.tcp.calls == ["pause", "abort"]


def test_without_a_reactor_a_close_is_immediate() -> None:
    up = Upstream()
    response = up.response(head(100))
    protocol = GivesUp(None)
    response.deliverBody(protocol)
    up.tcp.calls.clear()
    up.answer(b"part")
    assert up.tcp.calls == ["abort"]


def test_closing_after_the_response_is_over_leaves_the_connection_alone() -> None:
    """A late close (a drain timer that lost the race) cannot hurt the pool."""
    up = Upstream()
    response = up.response(head(2))
    protocol = GivesUp(up.reactor)
    protocol.dataReceived = lambda data: None  # type: ignore[method-assign]
    response.deliverBody(protocol)
    up.answer(b"ok")
    assert protocol.ended
    close_connection(protocol.transport)
    protocol.closer.close(protocol.transport)
    up.reactor.advance(0)
    assert closes(up.tcp) == []


def test_discarding_an_unread_answer_closes_its_connection() -> None:
    up = Upstream()
    response = up.response(head(100))
    discard(response, up.reactor)
    assert closes(up.tcp) == []
    up.reactor.advance(0)
    assert closes(up.tcp) == ["abort"]


def test_discarding_an_answer_that_ends_at_once_keeps_its_connection() -> None:
    up = Upstream()
    d = up.request()
    up.answer(head(2) + b"ok")
    discard(result_of(d), up.reactor)
    up.reactor.advance(0)
    assert "abort" not in up.tcp.calls
    up.request()
    assert len(up.connections) == 1


# -- endpoints and the pool --------------------------------------------------------------


def test_the_pool_is_persistent_and_never_retries_by_itself() -> None:
    pool = connection_pool(MemoryReactorClock(), max_per_host=8, idle_timeout=60)
    assert pool.persistent and not pool.retryAutomatically
    assert (pool.maxPersistentPerHost, pool.cachedConnectionTimeout) == (8, 60)


def test_an_ip_literal_is_dialled_directly_with_the_connect_timeout() -> None:
    reactor = MemoryReactorClock()
    endpoints = EndpointFactory(reactor, connect_timeout=2.5)
    endpoints.endpointForURI(URI.fromBytes(b"http://10.1.2.3:2379/v3/kv/range")).connect(
        Factory.forProtocol(Protocol)
    )
    endpoints.endpointForURI(URI.fromBytes(b"http://[::1]:2379/")).connect(
        Factory.forProtocol(Protocol)
    )
    assert [(c[0], c[1], c[3]) for c in reactor.tcpClients] == [
        ("10.1.2.3", 2379, 2.5),
        ("::1", 2379, 2.5),
    ]


def test_one_endpoint_per_scheme_host_and_port() -> None:
    endpoints = EndpointFactory(MemoryReactorClock())
    a = endpoints.endpointForURI(URI.fromBytes(b"http://10.0.0.1:80/a"))
    assert endpoints.endpointForURI(URI.fromBytes(b"http://10.0.0.1:80/b?q=1")) is a
    assert endpoints.endpointForURI(URI.fromBytes(b"http://10.0.0.1:81/a")) is not a
    assert endpoints.endpointForURI(URI.fromBytes(b"https://10.0.0.1:80/a")) is not a
    assert "HostnameEndpoint" in repr(
        endpoints.endpointForURI(URI.fromBytes(b"http://upstream.example:80/"))
    )


def test_connections_log_no_starting_factory_line() -> None:
    endpoint = EndpointFactory(MemoryReactorClock()).endpointForURI(
        URI.fromBytes(b"http://10.0.0.1:80/")
    )
    factory = Factory.forProtocol(Protocol)
    endpoint.connect(factory)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory.doStart()
        factory.doStop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "factory" in (e.get("log_format") or "").lower()]


# -- what went wrong ------------------------------------------------------------------------


def wrapped(kind: type[ResponseFailed], error: BaseException) -> Failure:
    return Failure(kind([Failure(error)]))


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        (Failure(ConnectionRefusedError()), "connection refused"),
        (Failure(DNSLookupError("nowhere")), "DNS lookup failed"),
        (Failure(TimeoutError()), "connect timed out"),
        (Failure(TCPTimedOutError()), "connect timed out"),
        (Failure(ConnectError("no route")), "could not connect to upstream"),
        (wrapped(ResponseNeverReceived, ConnectionLost()), "connection closed before a response"),
        (wrapped(ResponseFailed, ConnectionLost()), "connection lost while reading the response"),
        (Failure(ValueError("secret-bearing text")), "upstream request failed"),
    ],
)
def test_the_upstream_words_for_each_transport_failure(failure: Failure, text: str) -> None:
    assert describe_failure(failure) == text
    assert describe_failure(failure, UPSTREAM_WORDS) == text


class FakeSSLError(Exception):
    """Stands for OpenSSL.SSL.Error: told apart by its module's name."""


FakeSSLError.__module__ = "OpenSSL.SSL"

WORDS = FailureWords(
    refused="refused",
    dns="dns",
    timed_out="timed out",
    connect="cannot connect ({error})",
    no_response="no answer",
    lost="lost",
    other=None,
    tls="TLS failure ({error})",
)


def test_a_callers_words_may_quote_the_error_and_name_tls_failures() -> None:
    assert describe_failure(Failure(ConnectError("no route")), WORDS) == (
        "cannot connect (An error occurred while connecting: no route.)"
    )
    tls = wrapped(ResponseNeverReceived, FakeSSLError("certificate verify failed"))
    assert describe_failure(tls, WORDS) == "TLS failure (certificate verify failed)"
    assert describe_failure(tls) == "connection closed before a response"  # not told apart
    assert describe_failure(Failure(KeyError("k")), WORDS) == "'k'"
    assert describe_failure(Failure(ValueError()), WORDS) == "ValueError"


@pytest.mark.parametrize(
    ("failure", "cancelled"),
    [
        (Failure(defer.CancelledError()), True),
        (Failure(ConnectingCancelledError(None)), True),
        (wrapped(ResponseNeverReceived, defer.CancelledError()), True),
        (wrapped(ResponseFailed, defer.CancelledError()), True),
        (wrapped(ResponseFailed, ConnectionLost()), False),
        (Failure(ConnectionRefusedError()), False),
    ],
)
def test_our_own_cancellations_are_told_apart_whatever_their_shape(
    failure: Failure, cancelled: bool
) -> None:
    assert is_cancellation(failure) is cancelled


# -- the providers' client on the stack ---------------------------------------------------


class ClientUpstream(Upstream):
    """An UpstreamClient on the MemoryReactorClock, answered by hand."""

    def __init__(self, max_response_bytes: int = 100) -> None:
        super().__init__()
        self.client = UpstreamClient(self.reactor, max_response_bytes=max_response_bytes)

    def post(self) -> defer.Deferred:
        d = self.client.post(URL, {b"content-type": [b"application/json"]}, b"{}")
        self.connect()
        return d


def test_an_answer_over_max_response_bytes_is_a_502_and_one_warning() -> None:
    up = ClientUpstream(max_response_bytes=10)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        d = up.post()
        up.answer(head(11))
    finally:
        globalLogPublisher.removeObserver(events.append)
    error = failure_of(d).value
    assert isinstance(error, GatewayError) and error.status == 502
    assert "upstream response exceeds 10 bytes" in str(error.message)
    warnings = [e for e in events if "max_response_bytes" in (e.get("log_format") or "")]
    assert len(warnings) == 1 and warnings[0]["url"] == "http://127.0.0.1:8000"
    up.reactor.advance(0)
    assert up.tcp.calls[-1] == "abort"


def test_a_refused_connection_is_a_502_naming_it() -> None:
    up = ClientUpstream()
    d = up.client.post(URL, {}, b"{}")
    factory = up.reactor.tcpClients[0][2]
    factory.clientConnectionFailed(up.reactor.connectors[0], Failure(ConnectionRefusedError()))
    error = failure_of(d).value
    assert isinstance(error, GatewayError) and error.status == 502
    assert "connection refused" in str(error.message)


def test_a_post_cancelled_while_connecting_is_a_cancellation_not_a_502() -> None:
    up = ClientUpstream()
    d = up.client.post(URL, {}, b"{}")
    d.cancel()
    assert failure_of(d).check(defer.CancelledError)


def test_a_whole_answer_fires_with_status_headers_and_body() -> None:
    up = ClientUpstream()
    d = up.post()
    up.answer(head(2, b"Content-Type: application/json\r\n") + b"{}")
    status, headers, body = result_of(d)
    assert (status, body) == (200, b"{}")
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert up.tcp.value().startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


def test_a_post_is_written_byte_for_byte_as_twisted_webs_agent_writes_it() -> None:
    """UpstreamClient writes its request itself (head and body in one write):
    the bytes are Agent.request's, header names canonical and in order, line
    breaks in a value one space, Host last unless given, and the same on a
    second request over the pooled connection."""
    from twisted.web.client import Agent
    from twisted.web.http_headers import Headers

    from twisted_gw._outbound import BytesProducer

    headers = {
        b"authorization": [b"Bearer sk-a\r\nb"],
        b"content-type": [b"application/json"],
        "X-Str": ["v\u00e9"],
        b"x-multi": [b"1", b"2"],
        b"Accept": [b"text/plain"],
        b"accept": [b"application/json"],
    }
    url = URL + "?q=%C3%A9"
    body = b'{"model":"m"}'
    ours, theirs = ClientUpstream(), Upstream()
    agent = Agent.usingEndpointFactory(
        theirs.reactor, EndpointFactory(theirs.reactor), pool=theirs.pool
    )
    for _ in range(2):
        d1 = ours.client.post(url, {k: list(v) for k, v in headers.items()}, body)
        ours.connect()
        d2 = agent.request(b"POST", url.encode(), Headers(headers), BytesProducer(body))
        theirs.connect()
        assert ours.tcp.value() == theirs.tcp.value()
        assert ours.tcp.value().endswith(b"\r\n\r\n" + body)
        for up in (ours, theirs):
            up.answer(head(2) + b"{}")
            up.tcp.clear()
        assert result_of(d1)[2] == b"{}" and result_of(d2).code == 200
    assert len(ours.connections) == len(theirs.connections) == 1
