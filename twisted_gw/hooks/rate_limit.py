"""Built-in hook 2: rate limits and concurrency (CONTRACT 4.5).

pre_call builds the request's Plan from the key and model of its snapshot (so
a limit changed through the Admin API applies to the next request), asks the
store to apply it atomically, and either rejects with the contract's 429 or
puts the x-ratelimit-* headers on the response. finalize, which runs exactly
once on every path, spends the tokens the usage reported (missing = 0) and
gives back the concurrency slots.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.config.entities import Model
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IAdmission, IHook
from twisted_gw.ratelimit.interfaces import IRateLimitStore
from twisted_gw.ratelimit.limits import Outcome, Plan, add_headers, plan_for, rejection

log = Logger()

STATE = "rate_limit"
#: the plans of the fallbacks a request was admitted to (CONTRACT 5.1)
FALLBACKS = "rate_limit_fallbacks"
#: the kind of limit that refused the request (``rpm``... ``concurrency``), for
#: the metrics and the access log's ``limit=``
REJECTED = "rate_limit_rejected"


def total_tokens(usage: Any) -> int:
    """``usage.total_tokens`` as a non-negative int; anything else counts 0."""
    if isinstance(usage, dict):
        value = usage.get("total_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


@implementer(IHook, IAdmission)
class RateLimitHook:
    """Checks and accounts the limits of CONTRACT 4.5 on an IRateLimitStore."""

    name = "rate_limit"

    def __init__(self, store: IRateLimitStore) -> None:
        self.store = store
        #: (id(key), id(model)) -> (key, model, plan). Entities are immutable and
        #: replaced on every change, so a plan is built once per pair of a
        #: snapshot; the entities are held so their ids are not reused while cached
        self._plans: dict[tuple[int, int], tuple[Any, Any, Plan]] = {}
        #: the last pair asked for and its plan: most requests repeat it
        self._last: tuple[Any, Any, Plan | None] = (None, None, None)

    def _plan(self, api_key: Any, model: Any) -> Plan:
        last = self._last
        if last[0] is api_key and last[1] is model:
            return last[2]
        hit = self._plans.get((id(api_key), id(model)))
        if hit is None or hit[0] is not api_key or hit[1] is not model:
            if len(self._plans) >= 10000:  # pairs of old snapshots: drop, rebuild lazily
                self._plans.clear()
            hit = self._plans[(id(api_key), id(model))] = (api_key, model, plan_for(api_key, model))
        self._last = hit
        return hit[2]

    def pre_call(self, ctx: RequestContext) -> Any:
        if ctx.model is None:  # endpoints without a model are not limited
            return None
        plan = self._plan(ctx.api_key, ctx.model)
        if plan.empty:
            return None
        outcome = self.store.acquire_now(plan, ctx.request_id)
        if outcome is not None:  # decided at once (in memory): no Deferred
            self._decided(outcome, ctx, plan)
            return None
        d = self.store.acquire(plan, ctx.request_id)
        d.addCallback(self._decided, ctx, plan)
        return d

    @staticmethod
    def _decided(outcome: Outcome, ctx: RequestContext, plan: Plan) -> None:
        if outcome.rejected_window is not None or outcome.rejected_concurrency is not None:
            error = rejection(plan, outcome)
            ctx.state[REJECTED] = (
                plan.windows[outcome.rejected_window].kind
                if outcome.rejected_window is not None
                else "concurrency"
            )
            raise error
        if outcome.used or outcome.in_flight:
            ctx.state[STATE] = plan
            add_headers(ctx.response_headers, plan, outcome)

    def admit(self, ctx: RequestContext, model: Model) -> bool | Deferred:
        """A fallback's own limits (CONTRACT 5.1): the key's were checked with
        the requested model's; a fallback over its limits is skipped, and
        one admitted is settled at finalize like the requested model."""
        plan = self._plan(None, model)
        if plan.empty:
            return True
        outcome = self.store.acquire_now(plan, ctx.request_id)
        if outcome is not None:
            return self._admitted(outcome, ctx, plan)
        return self.store.acquire(plan, ctx.request_id).addCallback(self._admitted, ctx, plan)

    @staticmethod
    def _admitted(outcome: Outcome, ctx: RequestContext, plan: Plan) -> bool:
        if not outcome.allowed:
            return False
        ctx.state.setdefault(FALLBACKS, []).append(plan)
        return True

    def post_call(self, ctx: RequestContext) -> None:
        pass

    def finalize(self, ctx: RequestContext) -> None:
        state = ctx.state
        plan = state.pop(STATE, None)
        fallbacks = state.pop(FALLBACKS, None)
        if plan is None and not fallbacks:
            return
        tokens = total_tokens(ctx.usage)
        if plan is not None:
            self._settle(plan, ctx.request_id, tokens)
        if fallbacks:
            for fallback in fallbacks:
                self._settle(fallback, ctx.request_id, tokens)

    def _settle(self, plan: Plan, rid: str, tokens: int) -> None:
        if not self.store.settle_now(plan, rid, tokens):  # in memory: no Deferred
            self.store.settle(plan, rid, tokens).addErrback(self._settle_failed, rid)

    @staticmethod
    def _settle_failed(failure: Any, rid: str) -> None:
        log.failure("request {rid}: settling rate limits failed", failure, rid=rid)
