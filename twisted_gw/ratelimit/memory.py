"""In-memory rate-limit store: exact, for one gateway process.

Time comes from the reactor given to it, so tests drive window edges with
``task.Clock``. Counters of windows that have ended are dropped lazily.
"""

from __future__ import annotations

from itertools import repeat
from operator import ge
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
        if now >= self._next_sweep:
            self._sweep(now)
        frame = plan.frame(now)  # the windows' keys, formatted once per window
        keys = frame.keys
        counts = self._counts
        used = list(map(counts.get, keys, repeat(0)))
        gates = self._in_flight
        gate_keys = plan.gate_keys
        in_flight = list(map(gates.get, gate_keys, repeat(0)))
        outcome = Outcome(now, used, in_flight)
        if any(map(ge, used, plan.limits)):
            outcome.rejected_window = _first_reached(used, plan.limits)
            return outcome
        if any(map(ge, in_flight, plan.gate_limits)):
            outcome.rejected_concurrency = _first_reached(in_flight, plan.gate_limits)
            return outcome
        expires, ends = self._expires, frame.ends
        for i in plan.request_windows:
            key = keys[i]
            count = used[i]
            if not count:  # a counter is never 0: a new one, whose end is not set yet
                expires[key] = ends[i]
            used[i] = counts[key] = count + 1
        for i, key in enumerate(gate_keys):
            in_flight[i] = gates[key] = in_flight[i] + 1
        return outcome

    def settle(self, plan: Plan, member: str, tokens: int) -> defer.Deferred:
        self.settle_now(plan, member, tokens)
        return defer.succeed(None)

    def settle_now(self, plan: Plan, member: str, tokens: int) -> bool:
        """Settle at once (every call is synchronous here)."""
        if tokens > 0 and plan.token_windows:
            frame = plan.frame(self.reactor.seconds())
            keys, ends = frame.keys, frame.ends
            counts, expires = self._counts, self._expires
            for i in plan.token_windows:
                key = keys[i]
                count = counts.get(key, 0)
                if not count:
                    expires[key] = ends[i]
                counts[key] = count + tokens
        gates = self._in_flight
        for key in plan.gate_keys:
            left = gates.get(key, 0) - 1
            if left > 0:
                gates[key] = left
            else:
                gates.pop(key, None)
        return True

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
        self._next_sweep = now + 60
        for key in [k for k, t in self._expires.items() if t <= now]:
            del self._expires[key]
            self._counts.pop(key, None)


def _first_reached(counts: list[int], limits: tuple[int, ...]) -> int:
    """The index of the first count at or over its limit."""
    return next(i for i, (count, limit) in enumerate(zip(counts, limits)) if count >= limit)
