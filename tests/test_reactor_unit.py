"""What :class:`twisted_gw.reactor.GatewayReactor` changes, pinned on real sockets.

Each test drives a fresh reactor one iteration at a time and watches the
epoll calls it makes through a recording poller, so "no epoll call for a
pause and resume in one turn" and "a drained write never reaches epoll" are
asserted, not hoped for. Twisted's own reactor tests run against it too
(tests/test_reactor_twisted_suite.py).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from twisted.internet import epollreactor
from twisted.internet.abstract import FileDescriptor
from twisted.internet.protocol import Factory, Protocol

from twisted_gw.reactor import GatewayReactor


class RecordingPoller:
    """The reactor's epoll object, with every control call recorded."""

    def __init__(self, poller: Any) -> None:
        self._poller = poller
        self.calls: list[tuple[str, int, int]] = []

    def register(self, fd: int, mask: int) -> None:
        self.calls.append(("register", fd, mask))
        self._poller.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self.calls.append(("modify", fd, mask))
        self._poller.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        self.calls.append(("unregister", fd, 0))
        self._poller.unregister(fd)

    def poll(self, timeout: float, maxevents: int) -> Any:
        return self._poller.poll(timeout, maxevents)

    def close(self) -> None:
        self._poller.close()

    def fileno(self) -> int:
        return self._poller.fileno()

    def on(self, fd: int) -> list[tuple[str, int, int]]:
        return [c for c in self.calls if c[1] == fd]


@pytest.fixture
def reactor():
    r = GatewayReactor()
    r._poller = RecordingPoller(r._poller)
    yield r
    r.removeAll()
    r._end_turn()
    r._poller.close()


def turn(reactor: GatewayReactor, timeout: float = 0.0) -> None:
    reactor.runUntilCurrent()
    reactor.doIteration(timeout)


def readable(sock: Any) -> bytes:
    """Everything a non-blocking socket can read now."""
    got = b""
    try:
        while chunk := sock.recv(1 << 20):
            got += chunk
    except BlockingIOError:
        pass
    return got


class Reader(FileDescriptor):
    """A read end of a socketpair, counting its reads."""

    def __init__(self, sock: socket.socket, reactor: Any) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.got = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.got += self.sock.recv(65536)

    def logPrefix(self) -> str:
        return "Reader"


def test_a_pause_and_resume_in_one_turn_cost_no_epoll_call(reactor):
    a, b = socket.socketpair()
    a.setblocking(False)
    reader = Reader(a, reactor)
    reader.startReading()
    turn(reactor)
    assert reactor._poller.on(a.fileno()) == [("register", a.fileno(), epollreactor.EPOLLIN)]
    before = len(reactor._poller.calls)
    reader.stopReading()
    reader.startReading()
    turn(reactor)
    assert reactor._poller.calls[before:] == []
    b.send(b"still heard")
    turn(reactor, 1.0)
    assert reader.got == b"still heard"
    reader.stopReading()
    turn(reactor)
    assert reactor._poller.calls[-1] == ("unregister", a.fileno(), 0)
    a.close()
    b.close()


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"head:")  # two writes in one turn: one send
        self.transport.write(data)


def connected_pair(reactor: GatewayReactor) -> tuple[Any, socket.socket]:
    """A served TCP connection (its server transport) and the client's socket."""
    served: list[Any] = []

    class Keep(Echo):
        def connectionMade(self) -> None:
            served.append(self.transport)

    port = reactor.listenTCP(0, Factory.forProtocol(Keep), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    client.setblocking(False)
    for _ in range(100):
        turn(reactor, 0.05)
        if served:
            break
    port.stopListening()
    turn(reactor)
    return served[0], client


def recv_all(reactor: GatewayReactor, sock: socket.socket, size: int) -> bytes:
    got = b""
    for _ in range(20000):
        turn(reactor, 0.001)
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return got
                got += chunk
        except BlockingIOError:
            pass
        if len(got) >= size:
            return got
    return got


def test_a_drained_write_never_reaches_epoll_and_a_turns_writes_go_in_one_send(reactor):
    transport, client = connected_pair(reactor)
    fd = transport.fileno()
    sends: list[bytes] = []
    real_send = transport.socket.send

    def send(data: Any) -> int:
        sends.append(bytes(data))
        return real_send(data)

    transport.socket = _SocketSpy(transport.socket, send)
    before = len(reactor._poller.calls)
    client.send(b"ping")
    assert recv_all(reactor, client, 9) == b"head:ping"
    assert sends == [b"head:ping"]
    assert [c for c in reactor._poller.calls[before:] if c[1] == fd] == []
    transport.loseConnection()
    assert recv_all(reactor, client, 1) == b""  # closed cleanly
    client.close()


class _SocketSpy:
    def __init__(self, sock: socket.socket, send: Any) -> None:
        self._sock = sock
        self.send = send

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_what_the_kernel_does_not_take_waits_for_the_writable_event(reactor):
    transport, client = connected_pair(reactor)
    fd = transport.fileno()
    big = b"x" * (32 * 1024 * 1024)  # more than loopback's send buffer takes at once
    transport.write(big)
    turn(reactor)  # the eager send takes what fits; the rest is epoll's
    assert ("modify", fd, epollreactor.EPOLLIN | epollreactor.EPOLLOUT) in reactor._poller.on(fd)
    assert len(recv_all(reactor, client, len(big))) == len(big)
    assert reactor._poller.on(fd)[-1] == ("modify", fd, epollreactor.EPOLLIN)
    transport.loseConnection()
    turn(reactor)
    client.close()


def test_an_fd_number_reused_within_one_turn_is_registered_for_its_new_owner(reactor):
    a, b = socket.socketpair()
    a.setblocking(False)
    old = Reader(a, reactor)
    old.startReading()
    turn(reactor)
    number = a.fileno()
    old.stopReading()
    a.close()  # the kernel drops the registration with the socket
    c, d = socket.socketpair()
    if c.fileno() != number:  # the lowest free number is usually the one just freed
        c, d = d, c
    if c.fileno() != number:
        pytest.skip("the kernel did not reuse the fd number")
    c.setblocking(False)
    new = Reader(c, reactor)
    new.startReading()
    turn(reactor)  # same number, new owner: registered afresh
    d.send(b"to the new owner")
    turn(reactor, 1.0)
    assert new.got == b"to the new owner"
    new.stopReading()
    for s in (b, c, d):
        s.close()


def test_a_stop_during_the_turns_end_is_seen_before_the_next_wait(reactor):
    """Writes whose callbacks stop the reactor must not leave it blocked in
    epoll_wait (the turn ends after the dispatch, then the main loop looks)."""
    transport, client = connected_pair(reactor)
    reactor.callLater(0, transport.loseConnection)
    reactor.callLater(0.01, reactor.stop)
    reactor.callLater(5, lambda: pytest.fail("the reactor did not stop"))  # never reached
    reactor.run(installSignalHandlers=False)
    assert not reactor.running
    client.close()


def test_an_fd_number_reused_by_a_file_before_the_turn_ends_is_no_error(reactor, tmp_path):
    """Another thread (the ledger's SQLite, the trace exporter) may open a
    file between a socket's close and the turn's end, and get its number:
    epoll then refuses that number with EPERM, and the socket's own
    registration went with the socket."""
    a, b = socket.socketpair()
    a.setblocking(False)
    reader = Reader(a, reactor)
    reader.startReading()
    turn(reactor)
    number = a.fileno()
    reader.stopReading()  # the unregister waits for the turn's end
    a.close()
    f = open(tmp_path / "ledger.sqlite3", "wb")  # noqa: SIM115 - held open across the turn
    try:
        if f.fileno() != number:
            pytest.skip("the kernel did not reuse the fd number")
        turn(reactor)  # no PermissionError out of the main loop
        assert reactor._poller.on(number)[-1] == ("unregister", number, 0)
    finally:
        f.close()
        b.close()


# -- ITurnWrites: a call at the turn's end, a send now -------------------------------------


class _Spied:
    """A served connection whose sends are recorded."""

    def __init__(self, reactor: GatewayReactor) -> None:
        self.transport, self.client = connected_pair(reactor)
        self.sends: list[bytes] = []
        real_send = self.transport.socket.send

        def send(data: Any) -> int:
            self.sends.append(bytes(data))
            return real_send(data)

        self.transport.socket = _SocketSpy(self.transport.socket, send)

    def received(self) -> bytes:
        """What the client can read now, without a turn of the reactor."""
        return readable(self.client)

    def close(self) -> None:
        self.transport.loseConnection()
        self.client.close()


def test_a_call_at_the_turns_end_runs_after_the_dispatch_and_its_writes_join_the_turns_send(
    reactor,
):
    spied = _Spied(reactor)
    order: list[str] = []

    class Joined(Protocol):
        def dataReceived(self, data: bytes) -> None:
            order.append("dispatch")
            self.transport.write(b"now:")
            reactor.at_turn_end(lambda: (order.append("end"), self.transport.write(b"later")))

    spied.transport.protocol = Joined()
    spied.transport.protocol.makeConnection(spied.transport)
    spied.client.send(b"go")
    assert recv_all(reactor, spied.client, 9) == b"now:later"
    assert order == ["dispatch", "end"] and spied.sends == [b"now:later"]
    spied.close()


def test_a_call_at_the_turns_end_asked_for_by_a_timer_runs_before_the_next_wait(reactor):
    ran: list[bool] = []
    reactor.callLater(0, reactor.at_turn_end, lambda: ran.append(True))
    reactor.runUntilCurrent()
    reactor.doIteration(5.0)  # would block 5 s if the call waited for an event
    assert ran == [True]


def test_send_now_sends_what_the_transport_buffered_before_the_turn_ends(reactor):
    spied = _Spied(reactor)
    spied.transport.write(b"first")
    reactor.send_now(spied.transport)
    assert spied.received() == b"first"  # no turn of the reactor in between
    spied.transport.write(b" then the rest")
    assert spied.received() == b""  # an ordinary write still waits for the turn's end
    assert recv_all(reactor, spied.client, 14) == b" then the rest"
    assert spied.sends == [b"first", b" then the rest"]
    reactor.send_now(spied.transport)  # nothing buffered: nothing sent
    assert spied.sends == [b"first", b" then the rest"]
    spied.close()


def test_a_send_now_that_fails_leaves_the_lost_connection_to_the_turns_end(reactor):
    """The writer that called send_now is never re-entered by connectionLost."""
    spied = _Spied(reactor)
    lost: list[str] = []

    class Watch(Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            lost.append("lost")

    spied.transport.protocol = Watch()
    spied.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    spied.client.close()  # a reset: the next send fails
    spied.transport.write(b"to nobody")
    reactor.send_now(spied.transport)
    assert spied.sends == [b"to nobody"] and lost == []  # tried, failed, not handled here
    for _ in range(100):
        turn(reactor, 0.01)
        if lost:
            break
    assert lost == ["lost"]
