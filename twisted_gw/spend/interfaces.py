"""The budget store seam (issue 17): one node in memory, several on Redis."""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import Interface


@dataclass(frozen=True)
class Reservation:
    """What a reservation decided: ``ok`` (the amount is held), and the
    nano-USD left in the window after it (when ok) or as it is (when not);
    may be below 0 when the spend ran over."""

    ok: bool
    remaining: int


class IBudgetStore(Interface):
    """Reservations and settled spend per API key per window, applied atomically.

    A window is named by ``scope`` (``<key id>:<period>:<start>``). Amounts are
    nano-USD integers. Each request reserves under its ``member`` (request
    id) and settles once; a settle gives back everything the member holds
    and adds what it really cost."""

    def reserve(scope, member, amount, limit, ttl):
        """Hold ``amount`` for ``member`` when it fits what ``limit`` leaves
        after the window's spend and reservations (a window with nothing
        left refuses even a free request); added to what ``member`` already
        holds (a fallback's top-up). ``ttl``: seconds the window is kept (0:
        for ever). Fires with a Reservation; a refusal holds nothing."""

    def reserve_now(scope, member, amount, limit, ttl):
        """What :meth:`reserve` would fire with, when the store can decide
        without waiting (in memory); None when it cannot (Redis)."""

    def remaining(scope, limit):
        """The nano-USD ``limit`` leaves in the window now: an int, or a
        Deferred of one when the store needs a round trip."""

    def settle(scope, member, cost, ttl):
        """Give back what ``member`` holds and add ``cost`` to the window's
        spend. Fires when done; never fails (errors are logged)."""

    def close():
        """At shutdown: a Deferred that fires once the settles still running
        are done."""
