"""When the stream relay's bytes leave, pinned on real sockets with the
gateway's reactor (twisted_gw.reactor.GatewayReactor), driven one turn at a
time: the response head and the first event are sent at once, before the
rest of the upstream read is relayed (the client's first token does not wait
for the whole read), and the events of one read after it go out as one
write at the turn's end. What the client reads is checked byte for byte.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.test_reactor_unit import readable, turn
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.hooks.context import RequestContext
from twisted_gw.proxy.relay import StreamRelay
from twisted_gw.reactor import GatewayReactor

C1, C2, C3 = (b'{"id":"c","choices":[{"delta":{"content":"%d"}}]}' % i for i in (1, 2, 3))


@pytest.fixture
def reactor():
    r = GatewayReactor()
    yield r
    r.removeAll()
    r._end_turn()
    r._poller.close()


class _Capture(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        self.requests.append(request)
        return NOT_DONE_YET


class _Owner:
    """The request's owner as the relay sees it (RelayOwner), recording."""

    def __init__(self, reactor: GatewayReactor) -> None:
        self.reactor = reactor
        self.log: list[str] = []

    def first_chunk(self) -> None:
        self.log.append("first_chunk")

    def activity(self) -> None:
        pass

    def paused(self, paused: bool) -> None:
        self.log.append(f"paused {paused}")

    def upstream_ended(self, clean: bool, detail: str) -> None:
        self.log.append(f"ended {clean}")

    def malformed(self) -> None:
        self.log.append("malformed")

    def client_gone(self) -> None:
        self.log.append("client_gone")


class _Client:
    """The client's socket, read without turning the reactor."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def received(self) -> bytes:
        return readable(self.sock)


def _served(reactor: GatewayReactor) -> tuple[Any, _Client]:
    """A chat request received by a twisted.web Site on the reactor, and its client."""
    resource = _Capture()
    port = reactor.listenTCP(0, Site(resource, reactor=reactor), interface="127.0.0.1")
    sock = socket.create_connection(("127.0.0.1", port.getHost().port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}")
    sock.setblocking(False)
    for _ in range(200):
        turn(reactor, 0.05)
        if resource.requests:
            break
    port.stopListening()
    turn(reactor)
    return resource.requests[0], _Client(sock)


def _relay(reactor: GatewayReactor) -> tuple[StreamRelay, _Owner, _Client]:
    request, client = _served(reactor)
    ctx = RequestContext("rid-1", 0.0, "POST", "/v1/chat/completions", "-", "-", Snapshot())
    owner = _Owner(reactor)
    return StreamRelay(request, ctx, owner), owner, client


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_the_first_event_leaves_with_the_head_before_the_rest_of_the_read_is_relayed(reactor):
    relay, owner, client = _relay(reactor)
    relay.chunk(C1)  # the first event of a read that holds three
    head, _, body = client.received().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-type: text/event-stream" in head.lower()
    assert body == _http_chunk(b"data: " + C1 + b"\n\n")  # sent before the read's next event
    relay.flush()  # the source's flush after that event's HTTP chunk
    relay.chunk(C2)
    relay.flush()
    relay.chunk(C3)
    relay.flush()
    assert client.received() == b""  # the rest of the read waits for the turn's end
    turn(reactor)
    assert client.received() == _http_chunk(b"data: " + C2 + b"\n\ndata: " + C3 + b"\n\n")
    relay.end(done=True)
    turn(reactor)
    assert client.received() == _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    assert owner.log == ["first_chunk"]


def test_frames_waiting_for_the_turns_end_are_dropped_when_the_client_is_gone(reactor):
    relay, _, client = _relay(reactor)
    relay.chunk(C1)
    assert client.received().endswith(_http_chunk(b"data: " + C1 + b"\n\n"))
    relay.chunk(C2)
    relay.flush()
    relay.stop()  # the owner heard that the client went away
    turn(reactor)
    assert client.received() == b""


def test_an_end_in_the_same_read_writes_what_waited_before_the_last_frame(reactor):
    relay, _, client = _relay(reactor)
    relay.chunk(C1)
    client.received()
    relay.chunk(C2)
    relay.flush()
    relay.chunk(C3)  # no flush: the read also held the upstream's [DONE]
    relay.end(done=True)
    turn(reactor)
    assert client.received() == (
        _http_chunk(b"data: " + C2 + b"\n\ndata: " + C3 + b"\n\ndata: [DONE]\n\n") + b"0\r\n\r\n"
    )
