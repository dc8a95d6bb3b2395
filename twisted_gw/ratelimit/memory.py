"""In-memory rate-limit store: exact, for one gateway process.

Time comes from the reactor given to it, so tests drive window edges with
``task.Clock``. Counters of windows that have ended are dropped lazily.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from twisted_gw.ratelimit.interfaces import IRateLimitStore
from twisted_gw.ratelimit.limits import Outcome, Plan


@implementer(IRateLimitStore)
class MemoryRateLimitStore:
    """Counters in dicts; every call completes synchronously."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._next_sweep = 0.0

    def acquire(self, plan: Plan, member: str) -> defer.Deferred:
        return defer.succeed(self.acquire_now(plan, member))

    def acquire_now(self, plan: Plan, member: str = "") -> Outcome:
        """Decide at once (every call is synchronous here); ``member`` is
        not needed: a slot in memory is a count, given back by settle."""
        now = self.reactor.seconds()
        self._sweep(now)
        keys = [w.key(now) for w in plan.windows]
        used = [self._counts.get(k, 0) for k in keys]
        in_flight = [self._in_flight.get(g.key, 0) for g in plan.concurrency]
        outcome = Outcome(now, used, in_flight)
        for i, (window, count) in enumerate(zip(plan.windows, used, strict=True)):
            if count >= window.limit:
                outcome.rejected_window = i
                return outcome
        for i, (gate, count) in enumerate(zip(plan.concurrency, in_flight, strict=True)):
            if count >= gate.limit:
                outcome.rejected_concurrency = i
                return outcome
        for i, (window, key) in enumerate(zip(plan.windows, keys, strict=True)):
            if not window.is_tokens:
                used[i] = self._counts[key] = used[i] + 1
                self._expires[key] = window.start(now) + window.size
        for i, gate in enumerate(plan.concurrency):
            in_flight[i] = self._in_flight[gate.key] = in_flight[i] + 1
        return outcome

    def settle(self, plan: Plan, member: str, tokens: int) -> defer.Deferred:
        now = self.reactor.seconds()
        if tokens > 0:
            for window in plan.windows:
                if window.is_tokens:
                    key = window.key(now)
                    self._counts[key] = self._counts.get(key, 0) + tokens
                    self._expires[key] = window.start(now) + window.size
        for gate in plan.concurrency:
            left = self._in_flight.get(gate.key, 0) - 1
            if left > 0:
                self._in_flight[gate.key] = left
            else:
                self._in_flight.pop(gate.key, None)
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        """Nothing to release: the counters go with the process."""
        return defer.succeed(None)

    def slots_held(self) -> int:
        """Concurrency slots held right now, over every key and model (a
        request holds one per concurrency limit that applies to it)."""
        return sum(self._in_flight.values())

    def in_flight(self, key: str) -> int:
        """Current in-flight count of a concurrency key (for tests and metrics)."""
        return self._in_flight.get(key, 0)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        for key in [k for k, t in self._expires.items() if t <= now]:
            del self._expires[key]
            self._counts.pop(key, None)
