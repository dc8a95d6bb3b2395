"""twisted_gw.shutdown in memory (CONTRACT 5.2): real GatewaySites and their
channels over in-memory transports, time on a task.Clock.

Readiness turns 503 at once and is seen on connections already open; an
answer given while draining closes its connection and says so; the drain
ends when the last request in progress is answered, after the idle
keep-alive connections are closed; what is still in progress when the grace
is over, or on a second signal, is cut."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from klein import Klein
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twisted_gw.health import Health
from twisted_gw.shutdown import Shutdown
from twisted_gw.site import GatewaySite

GRACE = 30.0
GET_READYZ = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
GET_SLOW = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"


class Reactor(Clock):
    """A Clock that can also be stopped and called from a signal handler."""

    def __init__(self) -> None:
        super().__init__()
        self.stops = 0

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def stop(self) -> None:
        self.stops += 1


class ReadyStore:
    """The store side of readiness: always ready (the embedded store's answer)."""

    def not_ready(self) -> str | None:
        return None


class App:
    """``/slow`` answers when the test says so; everything else at once."""

    app = Klein()

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    @app.route("/slow")
    def slow(self, request: Any) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append(d)
        return d

    @app.route("/fast")
    def fast(self, request: Any) -> bytes:
        return b"fast"


class Transport(StringTransport):
    """A transport whose close reaches its protocol on the clock's next turn, as
    a socket's does."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 3000),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        self.clock = clock
        self.aborted = False
        self.protocol: Any = None
        self._lost = False

    def loseConnection(self) -> None:
        super().loseConnection()
        if not self._lost:
            self._lost = True
            self.clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionDone()))

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class Gateway:
    """One site (one listener), its Health and a Shutdown over them."""

    def __init__(self, grace: float = GRACE) -> None:
        self.reactor = Reactor()
        self.app = App()
        self.health = Health(ReadyStore())  # type: ignore[arg-type]
        self.site = GatewaySite(
            self.app.app.resource(), 1000, reactor=self.reactor, health=self.health
        )
        self.aborted: list[str] = []
        self.shutdown = Shutdown([self.site], self.health, grace, self.reactor, self._abort)

    def _abort(self) -> Deferred:
        self.aborted.append("abort_in_flight")
        return succeed(0)

    def connect(self) -> tuple[Any, Transport]:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = Transport(self.reactor)
        transport.protocol = channel
        channel.makeConnection(transport)
        return channel, transport

    def settle(self) -> None:
        self.reactor.advance(0)


def answers(transport: StringTransport) -> list[tuple[int, dict[str, str], bytes]]:
    """Every response written so far (Content-Length or chunked, small bodies)."""
    data, out = transport.value(), []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode().lower()] = value.strip().decode()
        if headers.get("transfer-encoding") == "chunked":
            body, _, data = rest.partition(b"\r\n0\r\n\r\n")
            body = body.partition(b"\r\n")[2]
        else:
            length = int(headers.get("content-length", 0))
            body, data = rest[:length], rest[length:]
        out.append((int(lines[0].split(b" ")[1]), headers, body))
    return out


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


def test_readiness_turns_503_at_once_on_a_connection_already_open(gw):
    channel, transport = gw.connect()
    busy, _ = gw.connect()
    busy.dataReceived(GET_SLOW)  # keeps the drain going
    channel.dataReceived(GET_READYZ)
    gw.shutdown.begin()
    gw.shutdown.drain()
    channel.dataReceived(GET_READYZ)
    gw.settle()
    [(status, _, body), (draining, headers, reason)] = answers(transport)
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    assert draining == 503
    assert json.loads(reason) == {"status": "not_ready", "reason": "shutting down"}
    assert headers["connection"] == "close"  # answered, then closed
    assert transport.disconnecting


def test_a_request_in_progress_finishes_with_connection_close_then_the_drain_ends(gw):
    channel, transport = gw.connect()
    channel.dataReceived(GET_SLOW)
    idle, idle_transport = gw.connect()
    idle.dataReceived(GET_READYZ)  # a keep-alive connection, idle again
    drained = gw.shutdown.drain()
    gw.settle()
    assert not drained.called and not idle_transport.disconnecting  # idle, but kept meanwhile
    gw.app.pending[0].callback(b"done")
    gw.settle()
    [(status, headers, body)] = answers(transport)
    assert (status, body, headers["connection"]) == (200, b"done", "close")
    assert transport.disconnecting and idle_transport.disconnecting
    assert not transport.aborted and not idle_transport.aborted
    assert drained.called
    assert gw.aborted == []  # nothing was cut
    assert gw.reactor.getDelayedCalls() == []  # the grace timer is gone


def test_with_nothing_in_progress_the_idle_connections_close_and_the_drain_ends_at_once(gw):
    channel, transport = gw.connect()
    channel.dataReceived(GET_READYZ)
    drained = gw.shutdown.drain()
    gw.settle()
    assert transport.disconnecting and not transport.aborted
    assert drained.called


def test_a_head_still_arriving_does_not_hold_the_shutdown(gw):
    channel, transport = gw.connect()
    channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    drained = gw.shutdown.drain()
    gw.settle()
    assert drained.called and transport.disconnecting


def test_what_is_in_progress_when_the_grace_is_over_is_cut(gw):
    channel, transport = gw.connect()
    channel.dataReceived(GET_SLOW)
    drained = gw.shutdown.drain()
    gw.reactor.advance(GRACE - 0.1)
    assert not drained.called and not transport.disconnecting
    gw.reactor.advance(0.1)
    gw.settle()
    assert gw.aborted == ["abort_in_flight"]  # the proxy's requests finalize as client_gone
    assert transport.aborted
    assert drained.called


def test_a_grace_of_0_cuts_at_once():
    gw = Gateway(grace=0)
    channel, transport = gw.connect()
    channel.dataReceived(GET_SLOW)
    drained = gw.shutdown.drain()
    gw.settle()
    assert transport.aborted and drained.called


def test_the_first_signal_stops_the_reactor_and_a_second_cuts_at_once(gw):
    handlers: dict[int, Any] = {}
    gw.shutdown.take_signals(install=lambda number, handler: handlers.setdefault(number, handler))
    assert set(handlers) == {signal.SIGTERM, signal.SIGINT}
    channel, transport = gw.connect()
    channel.dataReceived(GET_SLOW)
    handlers[signal.SIGTERM](signal.SIGTERM, None)
    assert gw.reactor.stops == 1
    drained = gw.shutdown.drain()  # what the reactor's shutdown runs (stopService)
    gw.settle()
    assert not drained.called
    handlers[signal.SIGINT](signal.SIGINT, None)
    gw.settle()
    assert gw.reactor.stops == 1  # not stopped twice
    assert transport.aborted and drained.called
    assert gw.aborted == ["abort_in_flight"]


def test_a_second_signal_before_the_drain_began_makes_it_cut_at_once(gw):
    handlers: dict[int, Any] = {}
    gw.shutdown.take_signals(install=lambda number, handler: handlers.setdefault(number, handler))
    channel, transport = gw.connect()
    channel.dataReceived(GET_SLOW)
    handlers[signal.SIGTERM](signal.SIGTERM, None)
    handlers[signal.SIGTERM](signal.SIGTERM, None)  # before the reactor's shutdown ran
    drained = gw.shutdown.drain()
    gw.settle()
    assert transport.aborted and drained.called


def test_a_client_that_goes_away_mid_request_ends_the_drain(gw):
    channel, _ = gw.connect()
    channel.dataReceived(GET_SLOW)
    drained = gw.shutdown.drain()
    channel.connectionLost(Failure(ConnectionDone()))
    gw.settle()
    assert drained.called and gw.aborted == []
