"""The finalize hook that puts each request's row in the ledger's buffer."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IHook
from twisted_gw.ledger.rows import row_of
from twisted_gw.ledger.writer import LedgerWriter


@implementer(IHook)
class LedgerHook:
    """One row per request past authentication, at finalize (which runs
    exactly once per request). Runs after the built-in hooks, the budget
    hook included, so ``ctx.cost_usd`` is set when it reads it."""

    name = "ledger"

    def __init__(self, writer: LedgerWriter, clock: Any) -> None:
        self.writer = writer
        self.clock = clock

    def pre_call(self, ctx: RequestContext) -> None:
        return None

    def post_call(self, ctx: RequestContext) -> None:
        pass

    def finalize(self, ctx: RequestContext) -> None:
        if ctx.api_key is None:
            return
        row = row_of(ctx, self.clock.seconds())
        if row is not None:
            self.writer.append(row)
