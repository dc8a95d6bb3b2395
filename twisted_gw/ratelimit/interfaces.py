"""The rate-limit store seam: one node in memory, several nodes on Redis."""

from __future__ import annotations

from zope.interface import Interface


class IRateLimitStore(Interface):
    """Applies a Plan atomically and settles it at the end of the request."""

    def acquire(plan, member):
        """Check every window and concurrency gate of ``plan``; only when all
        pass, count one request in each request window and take one
        concurrency slot (named ``member``, the request id) in each gate.
        Fires with an Outcome (rejected outcomes consumed nothing)."""

    def acquire_now(plan, member):
        """What :meth:`acquire` would fire with, when the store can decide
        without waiting (in memory); None when it cannot (Redis: a round
        trip), and then nothing was consumed and the caller calls
        :meth:`acquire`. Why: a Deferred per request saved on the hot path."""

    def settle(plan, member, tokens):
        """At finalize: add ``tokens`` to the plan's token windows and give
        back the concurrency slots taken by ``member``. Fires when done;
        never fails (errors are logged)."""

    def settle_now(plan, member, tokens):
        """Do what :meth:`settle` does, when the store can without waiting
        (in memory): True when done; False when it cannot (a round trip),
        and then nothing was done and the caller calls :meth:`settle`. Why:
        a Deferred and its errback per request saved on the hot path."""

    def close():
        """At shutdown, after the requests in flight were ended: a Deferred
        that fires once the settles still running are done and the store's
        connections are released (so no shared slot is stranded)."""
