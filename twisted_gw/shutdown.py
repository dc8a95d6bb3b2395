"""Graceful shutdown (CONTRACT 5.2): drain, then cut; a second signal cuts at once.

SIGTERM/SIGINT stop the reactor (the gateway's own handlers, see
:meth:`Shutdown.take_signals`), whose shutdown runs ``GatewayService.stopService``:
:meth:`Shutdown.begin` turns ``/readyz`` 503 at once, the listeners stop
accepting, and :meth:`Shutdown.drain` delays the reactor's shutdown (its
Deferred) until

- every request in progress on either listener has been answered (streams
  to their end): each answer carries ``Connection: close`` where its head is
  not written yet, and its connection closes after it; a keep-alive
  connection that is idle stays open meanwhile (a request arriving on it,
  a ``/readyz`` probe say, is answered and closes it), and is closed once
  nothing is in progress, so the process never waits out the grace for
  idle connections; or
- ``server.shutdown_grace`` seconds went by, or a second signal came: what is
  still in progress is cut. The proxy's requests finalize as
  ``client_gone`` (their upstream calls cancelled, permits given back, one
  access-log line each) before the Deferred fires, so the limiter and the
  store close after them.

Either way the process then exits 0: the handlers are the gateway's, so
twistd does not re-raise the signal at its end, as it does with its own.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from twisted_gw.health import Health
from twisted_gw.site import GatewaySite

log = Logger()

#: seconds the cut waits for the cut requests' finalize and their connections' close
_CUT_WAIT = 2.0


class Shutdown:
    """The gateway's shutdown policy over its listeners' sites.

    ``abort_in_flight`` ends the proxy's requests in progress so that they
    finalize (``ProxyApp.abort_in_flight``); the sites' :meth:`GatewaySite.cut`
    then drops whatever connection is left."""

    def __init__(
        self,
        sites: Sequence[GatewaySite],
        health: Health,
        grace: float,
        reactor: Any,
        abort_in_flight: Callable[[], defer.Deferred] | None = None,
    ) -> None:
        self.sites = tuple(sites)
        self.health = health
        self.grace = grace
        self.reactor = reactor
        self._abort_in_flight = abort_in_flight
        self._timer: Any = None
        self._done: defer.Deferred[None] | None = None
        self._closing = False
        self._cut = False
        #: a cut asked for before the drain began (a second signal that quick)
        self._cut_asked: str | None = None
        self._signals = 0

    def begin(self) -> None:
        """Readiness is 503 from now on (before the listeners stop accepting)."""
        self.health.shutting_down = True

    def drain(self) -> defer.Deferred[None]:
        """Let requests in progress finish, for up to the grace; fires once
        every connection is closed (see the module docstring)."""
        if self._done is not None:
            return self._done
        self.begin()
        self._done = defer.Deferred()
        for site in self.sites:
            site.drain(self._request_ended)
        if self._cut_asked is not None:
            self.cut(self._cut_asked)
        elif self.grace <= 0:
            self.cut("shutdown_grace is 0")
        else:
            busy = self._busy()
            if busy:
                log.info(
                    "shutting down: {busy} requests in progress may finish within {grace:g} s",
                    busy=busy,
                    grace=self.grace,
                )
            self._timer = self.reactor.callLater(self.grace, self.cut, "the shutdown grace is over")
            self._request_ended()
        return self._done

    def cut(self, why: str = "a second signal") -> None:
        """End what is still in progress now: the grace is over, or a second signal."""
        if self._done is None:  # not draining yet: drain() cuts at once
            self._cut_asked = why
            return
        if self._cut or self._done.called:
            return
        self._cut = True
        self._cancel_timer()
        busy = self._busy()
        if busy:
            log.warn(
                "shutting down: {why}, cutting {busy} requests still in progress",
                why=why,
                busy=busy,
            )
        ended = (
            defer.maybeDeferred(self._abort_in_flight)
            if self._abort_in_flight is not None
            else defer.succeed(None)
        )

        def drop(_: object) -> defer.Deferred[Any]:
            for site in self.sites:
                site.cut()
            return self._closed()

        ended.addBoth(drop)
        ended.addTimeout(_CUT_WAIT, self.reactor)
        ended.addBoth(lambda _: self._finish())

    def take_signals(self, install: Callable[[int, Any], Any] = signal.signal) -> None:
        """Handle SIGTERM and SIGINT instead of the reactor (call it once the
        reactor runs: its own are installed during its start-up).

        The first signal stops the reactor, as the reactor's handler would;
        the next one cuts at once. A handler only schedules, through
        ``callFromThread``, which is safe to call from one."""

        def received(number: int, frame: object) -> None:
            self.reactor.callFromThread(self._signalled, signal.Signals(number).name)

        for number in (signal.SIGTERM, signal.SIGINT):
            install(number, received)

    def _signalled(self, name: str) -> None:
        self._signals += 1
        if self._signals > 1 or self._done is not None:
            self.cut(f"a second signal ({name})")
            return
        log.info("received {name}: shutting down", name=name)
        try:
            self.reactor.stop()
        except ReactorNotRunning:  # stopping already (a start-up failure's exit)
            pass

    # -- internals -----------------------------------------------------------------

    def _busy(self) -> int:
        return sum(site.in_progress() for site in self.sites)

    def _request_ended(self) -> None:
        """Once nothing is in progress: close the idle connections and end
        when they are closed (the grace still bounds a slow reader)."""
        if self._done is None or self._closing or self._cut or self._busy():
            return
        self._closing = True
        for site in self.sites:
            site.close_idle()
        self._closed().addBoth(lambda _: self._finish())

    def _closed(self) -> defer.Deferred[Any]:
        return defer.DeferredList([site.when_closed() for site in self.sites])

    def _finish(self) -> None:
        self._cancel_timer()
        if self._done is not None and not self._done.called:
            self._done.callback(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
