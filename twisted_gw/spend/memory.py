"""In-memory budget store: exact, for one gateway process.

Each window holds its settled spend and the sum of its reservations; each
member (a request in flight) what it holds and where. Windows that ended
with nothing held are dropped lazily; time comes from the reactor given to
it, so tests drive it with ``task.Clock``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from twisted_gw.spend.interfaces import IBudgetStore, Reservation


@implementer(IBudgetStore)
class MemoryBudgetStore:
    """Reservations and spend in dicts; every call completes synchronously."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        #: scope -> [spent, reserved]
        self._windows: dict[str, list[int]] = {}
        #: scope -> when it may be dropped (absent: kept for ever)
        self._expires: dict[str, float] = {}
        #: member -> (scope, amount held)
        self._held: dict[str, tuple[str, int]] = {}
        self._next_sweep = 0.0

    def reserve(self, scope: str, member: str, amount: int, limit: int, ttl: int) -> defer.Deferred:
        return defer.succeed(self.reserve_now(scope, member, amount, limit, ttl))

    def reserve_now(
        self, scope: str, member: str, amount: int, limit: int, ttl: int
    ) -> Reservation:
        now = self.reactor.seconds()
        self._sweep(now)
        counts = self._windows.get(scope)
        if counts is None:
            counts = self._windows[scope] = [0, 0]
        left = limit - counts[0] - counts[1]
        if left <= 0 or amount > left:
            return Reservation(False, left)
        counts[1] += amount
        held = self._held.get(member)
        self._held[member] = (scope, amount + (held[1] if held is not None else 0))
        if ttl:
            self._expires[scope] = max(self._expires.get(scope, 0.0), now + ttl)
        return Reservation(True, left - amount)

    def remaining(self, scope: str, limit: int) -> int:
        counts = self._windows.get(scope)
        return limit if counts is None else limit - counts[0] - counts[1]

    def settle(self, scope: str, member: str, cost: int, ttl: int) -> defer.Deferred:
        held = self._held.pop(member, None)
        if held is not None:  # a member settles once: a second call finds nothing
            counts = self._windows.setdefault(held[0], [0, 0])
            counts[1] = max(counts[1] - held[1], 0)
            counts[0] += max(cost, 0)
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        """Nothing to release: the sums go with the process."""
        return defer.succeed(None)

    def spent(self, scope: str) -> int:
        """The window's settled spend (for tests)."""
        return self._windows.get(scope, [0, 0])[0]

    def reserved(self, scope: str) -> int:
        """The window's reservations now (for tests and metrics)."""
        return self._windows.get(scope, [0, 0])[1]

    def held(self) -> int:
        """Reservations held right now, over every window."""
        return len(self._held)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        holding = {scope for scope, _ in self._held.values()}
        for scope in [s for s, t in self._expires.items() if t <= now and s not in holding]:
            del self._expires[scope]
            self._windows.pop(scope, None)
