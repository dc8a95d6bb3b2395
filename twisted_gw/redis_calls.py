"""What the Redis-backed stores (rate limits, budgets) do around their Lua
scripts, in one place: each call bounded by the store's timeout, the settles
in flight kept so a shutdown can wait for them (a settle gives back shared
slots or reservations), and a failure counted and warned of at most once a
minute, not once per request."""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet import defer
from twisted.logger import Logger

from twisted_gw.observability.logsafe import escape


class RedisScripts:
    """A base for a store that runs scripts on ``self.redis``.

    The subclass sets ``reactor``, ``redis``, ``timeout``, ``fail_open``,
    ``metrics`` and ``_settling`` (an empty set), and names itself for the warning line (``_log``, its own
    module's logger; ``_warning``, the line with ``{what}``, ``{error}`` and
    ``{policy}``; ``_open_policy``, what happens to requests when it fails open).
    """

    _log: ClassVar[Logger]
    _warning: ClassVar[str]
    _open_policy: ClassVar[str]

    reactor: Any
    redis: Any
    timeout: float
    fail_open: bool
    metrics: Any
    _last_warning: float = float("-inf")
    _settling: set[defer.Deferred]

    def _run(self, script: str, args: list[Any]) -> defer.Deferred:
        """One script call, bounded by the timeout."""
        d = self.redis.eval(script, [], args)
        d.addTimeout(self.timeout, self.reactor)
        return d

    def _settle_call(self, script: str, args: list[Any]) -> defer.Deferred:
        """A settle: failures warned of, the call kept until it is over."""
        d = self._run(script, args)
        d.addErrback(self._warn_failed, "settle")
        self._settling.add(d)
        d.addBoth(self._settled, d)
        return d

    def _settled(self, result: Any, d: defer.Deferred) -> Any:
        self._settling.discard(d)
        return result

    def _warn_failed(self, failure: Any, what: str) -> None:
        """Count a failed call; one warning line a minute at most."""
        if self.metrics is not None:
            self.metrics.ratelimit_store_errors.inc()
        now = self.reactor.seconds()
        if now - self._last_warning >= 60:
            self._last_warning = now
            self._log.warn(
                self._warning,
                what=what,
                error=escape(failure.getErrorMessage() or failure.type.__name__),
                policy=self._open_policy if self.fail_open else "refused (503)",
            )

    def _settles_done(self) -> defer.Deferred:
        """Fires once the settles in flight are over (each bounded by the timeout)."""
        pending = list(self._settling)
        if not pending:
            return defer.succeed(None)
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)
