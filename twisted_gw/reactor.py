"""The gateway's reactor: Twisted's epoll reactor, with its registrations made
once a loop turn and writes tried before waiting.

Why. A proxied request that the stock ``EPollReactor`` serves costs six
``epoll_ctl`` calls and two extra trips through ``epoll_wait``: each write
(the client's answer, the upstream request) asks epoll for "writable", waits
for the event, sends, then takes the interest back, and the HTTP client
pauses the upstream socket when the response headers arrive and resumes it in
the same turn, once the body has a consumer. Measured with ``strace -c``
under ``bench/``: 6 ``epoll_ctl`` per request, a tenth of the gateway's CPU.

What changes, and what does not:

- ``addReader``/``addWriter``/``removeReader``/``removeWriter`` change the
  wanted state at once (``getReaders``/``getWriters`` and every check of
  ``_reads``/``_writes`` see it), but tell epoll only at the end of the turn,
  just before ``epoll_wait``, and only what changed in net: a pause and a
  resume in one turn cost nothing.
- A TCP connection that starts wanting to write during a turn is written to
  at the end of the turn (right after the events' dispatch), as if epoll had said it was writable (it almost
  always is). What the turn wrote goes out in one ``send`` (an answer's
  headers and body together), and a send that drains the buffer never
  reaches epoll at all. When the kernel takes only part, the rest waits for
  the writable event as before. Connections still connecting (whose
  ``doWrite`` is ``doConnect``) are left to epoll.
- An fd number closed and reused within one turn is told apart by the object
  that owns it, so the new owner is registered afresh (the kernel dropped the
  old registration when the old socket closed).
- Regular files (``EPERM`` from epoll) go to continuous polling, as in the
  stock reactor, when they are first synced.
- :class:`ITurnWrites`, for code that writes: ``at_turn_end(f)`` calls ``f``
  after the dispatch and before the turn's writes are sent (the stream
  relay joins there the events of one upstream read, which twisted.web's
  HTTP client hands over one HTTP chunk at a time, into one write), and
  ``send_now(transport)`` sends a connection's buffer at once, mid-turn (the
  relay's response head and first event, so the client's first token does
  not wait for the rest of the read to be relayed). A send that fails or
  leaves a rest is left to the turn's end, so the caller is never re-entered
  by a ``connectionLost``.

- ``listenSSL``/``connectSSL`` are the stock ones' code, with the TLS layer
  imported on their first call: this module imports Twisted's networking
  without pyOpenSSL (:mod:`twisted_gw._lazytls` says why, and what a process
  gives up for it).

Everything else is the stock reactor: the event dispatch, the waker, the
timers, ``_doReadOrWrite`` and its error handling. ``install()`` is called by
the console script and by the twistd plugin when no reactor is installed yet
(``twistd --reactor=epoll`` picks the stock one).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from twisted_gw._lazytls import import_networking

import_networking()  # first: Twisted's networking without pyOpenSSL (see twisted_gw._lazytls)

from twisted.internet import epollreactor
from twisted.internet.interfaces import IReactorSSL
from twisted.internet.tcp import Connection
from twisted.python import log
from zope.interface import Interface, implementer

_IN = epollreactor.EPOLLIN
_OUT = epollreactor.EPOLLOUT

#: how many times one turn's end writes eagerly before leaving the rest to epoll
_EAGER_ROUNDS = 4


class ITurnWrites(Interface):
    """What a reactor that sends a turn's writes at the turn's end offers to
    code that writes: a call at that end (to join what one turn produced into
    one write), and a send right now (for what must not wait for it)."""

    def at_turn_end(f: Callable[[], None]) -> None:
        """Call ``f()`` once, at the end of this turn's dispatch, before the
        turn's writes are sent (from a timer: before the next wait)."""

    def send_now(transport: Any) -> None:
        """Send what ``transport`` buffered now, not at the turn's end (what
        the kernel does not take, and a failure, are left to the turn's end)."""


@implementer(IReactorSSL, ITurnWrites)
class GatewayReactor(epollreactor.EPollReactor):
    """``EPollReactor`` whose epoll registrations are synced once per turn,
    and whose ``listenSSL``/``connectSSL`` load TLS on first use."""

    def __init__(self) -> None:
        #: what at_turn_end was given this turn
        self._at_end: list[Callable[[], None]] = []
        #: fd -> (event mask, owner) as the kernel's epoll set has it
        self._registered: dict[int, tuple[int, Any]] = {}
        #: fd -> owner, for the fds whose wanted state changed this turn
        self._dirty: dict[int, Any] = {}
        #: fds that started wanting to write this turn (eager-write candidates)
        self._eager: dict[int, Any] = {}
        super().__init__()  # installs the waker, through addReader

    # -- wanted state (what the stock methods do, minus the epoll call) --

    def _add(
        self, xer: Any, primary: set, other: set, selectables: dict, event: int, _: int
    ) -> None:
        fd = xer.fileno()
        if fd not in primary:
            primary.add(fd)
            selectables[fd] = xer
            self._dirty[fd] = xer
            if event == _OUT:
                self._eager[fd] = xer

    def _remove(
        self, xer: Any, primary: set, other: set, selectables: dict, event: int, _: int
    ) -> None:
        fd = xer.fileno()
        if fd == -1:
            for fd, fdes in selectables.items():  # the stock lookup of a closed one
                if xer is fdes:
                    break
            else:
                return
        if fd in primary:
            primary.remove(fd)
            if fd not in other:
                del selectables[fd]
            self._dirty[fd] = xer

    # -- ITurnWrites --

    def at_turn_end(self, f: Callable[[], None]) -> None:
        self._at_end.append(f)

    def send_now(self, transport: Any) -> None:
        if not isinstance(transport, Connection):
            return
        fd = transport.fileno()
        if (
            self._eager.get(fd) is transport  # it wrote this turn, and it is still that fd's
            and fd in self._writes
            and not transport.disconnecting  # its last write's end is the reactor's to handle
            and "doWrite" not in transport.__dict__  # not still connecting
        ):
            del self._eager[fd]
            if transport.doWrite() is not None or fd in self._writes:
                self._eager[fd] = transport  # a failure or a rest: the turn's end sees it

    # -- the end of a turn --

    def _run_at_end(self) -> None:
        """The calls asked for before this end (one asked for by one of them
        runs at the next end, before the next wait: never a loop)."""
        calls, self._at_end = self._at_end, []
        for f in calls:
            try:
                f()
            except Exception:  # noqa: BLE001 - as a timer's failure: logged, the turn goes on
                log.err(None, "Unhandled error in a call at the end of a turn")

    def _write_eagerly(self) -> bool:
        """Write what this turn buffered, on connections that are done
        connecting; whether any write was tried (callbacks may have run)."""
        wrote = False
        for _ in range(_EAGER_ROUNDS):
            if not self._eager:
                break
            eager, self._eager = self._eager, {}
            writes, selectables = self._writes, self._selectables
            for fd, xer in eager.items():
                if (
                    fd in writes
                    and selectables.get(fd) is xer
                    and isinstance(xer, Connection)
                    and "doWrite" not in xer.__dict__  # still connecting: doConnect
                ):
                    wrote = True
                    log.callWithLogger(xer, self._doReadOrWrite, xer, fd, _OUT)
        self._eager = {}  # what is left waits for epoll's writable event
        return wrote

    def _sync(self) -> None:
        """Tell epoll the net change of this turn's wanted state."""
        dirty, self._dirty = self._dirty, {}
        poller, registered = self._poller, self._registered
        reads, writes, selectables = self._reads, self._writes, self._selectables
        for fd in dirty:
            mask = (_IN if fd in reads else 0) | (_OUT if fd in writes else 0)
            owner = selectables.get(fd) if mask else None
            had = registered.get(fd)
            if had is not None and (not mask or had[1] is not owner):
                del registered[fd]
                try:
                    poller.unregister(fd)
                except OSError as e:  # closed meanwhile: the kernel dropped it
                    # EPERM: closed, and the number already reused by a regular
                    # file that another thread opened (the ledger's SQLite, the
                    # trace exporter's files), which epoll never holds
                    if e.errno not in (errno.ENOENT, errno.EBADF, errno.EPERM):
                        raise
                had = None
            if not mask:
                continue
            if had is None:
                self._register(fd, mask, owner)
            elif had[0] != mask:
                poller.modify(fd, mask)
                registered[fd] = (mask, owner)

    def _register(self, fd: int, mask: int, owner: Any) -> None:
        try:
            self._poller.register(fd, mask)
        except OSError as e:
            if e.errno == errno.EEXIST:  # a dup of a registered fd closed meanwhile
                self._poller.modify(fd, mask)
            elif e.errno == errno.EPERM:  # a regular file: the stock fallback
                self._reads.discard(fd)
                self._writes.discard(fd)
                self._selectables.pop(fd, None)
                if mask & _IN:
                    self._continuousPolling.addReader(owner)
                if mask & _OUT:
                    self._continuousPolling.addWriter(owner)
                return
            else:
                raise
        self._registered[fd] = (mask, owner)

    def _end_turn(self) -> bool:
        """The calls at the turn's end, eager writes, then the epoll sync;
        whether callbacks may have run."""
        ran = bool(self._at_end)
        if ran:
            self._run_at_end()
        wrote = (self._write_eagerly() if self._eager else False) or ran
        if self._dirty:
            self._sync()
        return wrote

    def doPoll(self, timeout: float | None) -> None:
        """The stock poll and dispatch, with the turn's end after it.

        The turn ends right after the dispatch, so what the events wrote goes
        out at once and the main loop then sees what those writes' callbacks
        did (a timer, a stop). What timers wrote before the poll is ended
        first; if that ran callbacks, the poll does not block on them."""
        if (self._eager or self._dirty or self._at_end) and self._end_turn():
            timeout = 0
        super().doPoll(timeout)
        if self._eager or self._dirty or self._at_end:
            self._end_turn()

    doIteration = doPoll

    # -- TLS, loaded when first asked for (twisted_gw._lazytls) --

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        """What the stock reactor's does: TCP with ``TLSMemoryBIOFactory``
        over ``factory``, the TLS layer imported now rather than with Twisted."""
        from twisted.protocols.tls import TLSMemoryBIOFactory

        tls = TLSMemoryBIOFactory(contextFactory, False, factory)
        listening = self.listenTCP(port, tls, backlog, interface)
        listening._type = "TLS"  # as the stock one names it: "TLS Port 443 Closed"
        return listening

    def connectSSL(
        self,
        host: str,
        port: int,
        factory: Any,
        contextFactory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> Any:
        """What the stock reactor's does, the TLS layer imported now."""
        from twisted.protocols.tls import TLSMemoryBIOFactory

        tls = TLSMemoryBIOFactory(contextFactory, True, factory)
        return self.connectTCP(host, port, tls, timeout, bindAddress)


def install() -> GatewayReactor:
    """Install :class:`GatewayReactor` as the global reactor."""
    from twisted.internet.main import installReactor

    reactor = GatewayReactor()
    installReactor(reactor)
    return reactor


def install_if_none() -> None:
    """Install it unless a reactor is installed already (the operator's choice)."""
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        install()
