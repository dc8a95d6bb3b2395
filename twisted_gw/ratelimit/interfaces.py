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

    def settle(plan, member, tokens):
        """At finalize: add ``tokens`` to the plan's token windows and give
        back the concurrency slots taken by ``member``. Fires when done;
        never fails (errors are logged)."""
