"""Runs the hooks in order; owns the exactly-once finalize guarantee."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_gw.config.entities import Model
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IAdmission

log = Logger()


class HookManager:
    """Calls ``pre_call``/``post_call``/``finalize`` of each hook in order.

    Synchronous hooks cost no Deferred: ``pre_call`` returns None when every
    hook answered synchronously, else a Deferred for the rest of the chain.
    """

    def __init__(self, hooks: Sequence[Any], admit_first: Sequence[Any] = ()) -> None:
        """``admit_first``: hooks (of ``hooks``) whose admission of a fallback
        is asked before the others', whatever their place in the hook order:
        one that only holds what it gives back at finalize (a budget's
        reservation) goes before one that spends when it admits (the rate
        limits' request counts), so a fallback one of them refuses costs nothing."""
        self.hooks = tuple(hooks)
        admissions = [h for h in self.hooks if IAdmission.providedBy(h)]
        first = [h for h in admit_first if h in admissions]
        self._admissions = tuple(first + [h for h in admissions if h not in first])

    def admit(self, ctx: RequestContext, model: Model, start: int = 0) -> bool | defer.Deferred:
        """Whether every admitting hook lets ``ctx`` use the fallback ``model``
        (see IAdmission): the first refusal ends it; a Deferred when a hook
        needs a round trip."""
        admissions = self._admissions
        for i in range(start, len(admissions)):
            result = admissions[i].admit(ctx, model)
            if isinstance(result, defer.Deferred):
                return result.addCallback(
                    lambda ok, n=i + 1: self.admit(ctx, model, n) if ok else False
                )
            if not result:
                return False
        return True

    def pre_call(self, ctx: RequestContext, start: int = 0) -> defer.Deferred | None:
        """Run pre_call from hook ``start`` on; a GatewayError ends the request."""
        hooks = self.hooks
        for i in range(start, len(hooks)):
            result = hooks[i].pre_call(ctx)
            if isinstance(result, defer.Deferred):
                return result.addCallback(lambda _, n=i + 1: self.pre_call(ctx, n))
        return None

    def post_call(self, ctx: RequestContext) -> None:
        """Run post_call; a hook that raises is logged, the request goes on."""
        for hook in self.hooks:
            try:
                hook.post_call(ctx)
            except Exception:  # noqa: BLE001 - a broken hook must not break the request
                log.failure(
                    "hook {hook} post_call failed for request {rid}",
                    Failure(),
                    hook=hook.name,
                    rid=ctx.request_id,
                )

    def finalize(self, ctx: RequestContext, end_reason: str | None = None) -> bool:
        """Run every hook's finalize once; later calls do nothing and return False."""
        if ctx.finalized:
            return False
        ctx.finalized = True
        if end_reason is not None and ctx.end_reason is None:
            ctx.end_reason = end_reason
        for hook in self.hooks:
            try:
                hook.finalize(ctx)
            except Exception:  # noqa: BLE001 - a broken hook must not break the request
                log.failure(
                    "hook {hook} finalize failed for request {rid}",
                    Failure(),
                    hook=hook.name,
                    rid=ctx.request_id,
                )
        return True
