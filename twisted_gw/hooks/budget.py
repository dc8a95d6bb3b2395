"""Built-in hook: prices and budgets (issue 17).

pre_call, after the rate limits (a request they refuse reserves nothing):
a key with a budget may only use a model whose every deployment has a price
(else 403 ``model_price_missing``), and reserves the request's worst-case
cost (prompt estimate + its output cap, on the dearest deployment) in the
window of its period, atomically in the store, or is refused with 429
``budget_exceeded``. The answer carries ``x-budget-remaining-usd``.

finalize, which runs exactly once on every path and before the metrics and
access-log hooks: the request's cost from the usage the upstream reported,
at the prices of the deployment that answered (an estimate when no usage
came), set on ``ctx.cost_usd`` / ``ctx.cost_estimated``; a reservation is
settled to that cost, which gives back the rest.

A key without a budget and a model without a price cost two attribute
checks here and one in the relay per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.config.entities import ApiKey, Model
from twisted_gw.errors import budget_exceeded, model_price_missing
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IAdmission, IHook
from twisted_gw.providers.interfaces import EMBEDDINGS
from twisted_gw.spend.interfaces import IBudgetStore, Reservation
from twisted_gw.spend.prices import (
    MAX_AMOUNT,
    cost_nano,
    estimated_prompt,
    max_output,
    relayed_tokens,
    usage_counts,
    usd,
    usd_text,
    worst_case_nano,
)
from twisted_gw.spend.windows import Window, window

log = Logger()

STATE = "budget"
HEADER = "x-budget-remaining-usd"
#: output tokens a request without ``max_tokens`` (or the like) is reserved for
DEFAULT_MAX_TOKENS = 4096
#: the one model endpoint that costs nothing (Anthropic's token count)
COUNT_TOKENS = "/v1/messages/count_tokens"
#: end reasons after which, without usage, the upstream is taken to have
#: charged nothing: it failed to answer (an error status, unreachable)
_UNANSWERED = frozenset({"upstream_error", "rejected"})


@dataclass
class Held:
    """A request's reservation: where, under which member, and how much."""

    key_id: str
    window: Window
    scope: str
    amount: int  # nano-USD
    limit: int
    #: False: the store could not be asked and fails open (nothing is held)
    checked: bool = True


def scope_of(api_key: ApiKey, win: Window) -> str:
    """The store's name of a key's window: ``<key id>:<period>:<start>``."""
    return f"{api_key.id}:{win.name}"


def request_cost(ctx: RequestContext) -> tuple[int | None, bool]:
    """(nano-USD, estimated) of a finished request, at the prices of its last
    attempt's deployment: the usage's cost, else an estimate from the prompt
    and what was relayed; (None, False) when no priced upstream was tried."""
    deployment = ctx.deployment
    pricing = deployment.pricing if deployment is not None else None
    if pricing is None:
        return None, False
    if ctx.endpoint == COUNT_TOKENS:
        return 0, False
    counts = usage_counts(ctx.usage)
    if counts is not None:
        prompt, completion, cached = counts
        return cost_nano(pricing, prompt, completion, cached), False
    if ctx.end_reason in _UNANSWERED and ctx.first_token_at is None and not ctx.relayed_chars:
        return 0, False
    prompt = estimated_prompt(ctx.body, ctx.endpoint.endswith(EMBEDDINGS))
    return cost_nano(pricing, prompt, relayed_tokens(ctx.relayed_chars)), True


@implementer(IHook, IAdmission)
class BudgetHook:
    """Prices every priced request; reserves and settles budgets on an IBudgetStore."""

    name = "budget"

    def __init__(
        self, store: IBudgetStore, reactor: Any, default_max_tokens: int = DEFAULT_MAX_TOKENS
    ) -> None:
        self.store = store
        self.reactor = reactor
        self.default_max_tokens = default_max_tokens

    # -- pre_call: the price check and the reservation ---------------------------------

    def pre_call(self, ctx: RequestContext) -> Any:
        model = ctx.model
        if model is None:  # endpoints without a model cost nothing
            return None
        ctx.priced = model.priced
        api_key = ctx.api_key
        budget = api_key.budget
        if budget is None or ctx.endpoint == COUNT_TOKENS:  # counting is free
            return None
        now = self.reactor.seconds()
        win = window(budget.period, now)
        scope = scope_of(api_key, win)
        limit = budget.max_nano
        if not model.fully_priced:
            left = self.store.remaining(scope, limit)
            if isinstance(left, Deferred):
                return left.addCallback(self._price_missing, ctx)
            return self._price_missing(left, ctx)
        amount = self._worst_case(ctx, model)
        held = Held(api_key.id, win, scope, amount, limit)
        ttl = win.ttl(now)
        outcome = self.store.reserve_now(scope, ctx.request_id, amount, limit, ttl)
        if outcome is not None:
            self._reserved(outcome, ctx, held)
            return None
        d = self.store.reserve(scope, ctx.request_id, amount, limit, ttl)
        return d.addCallback(self._reserved, ctx, held)

    def _worst_case(self, ctx: RequestContext, model: Model) -> int:
        embeddings = ctx.endpoint.endswith(EMBEDDINGS)
        prompt = estimated_prompt(ctx.body, embeddings)
        output = 0 if embeddings else max_output(ctx.body, self.default_max_tokens)
        return min(worst_case_nano(model.deployments, prompt, output), MAX_AMOUNT)

    @staticmethod
    def _price_missing(left: int, ctx: RequestContext) -> None:
        raise model_price_missing(ctx.model.name, ctx.api_key.id, {HEADER: usd_text(left)})

    def _reserved(self, outcome: Reservation | None, ctx: RequestContext, held: Held) -> None:
        if outcome is None:  # the store could not be asked and fails open
            held.amount, held.checked = 0, False
            ctx.state[STATE] = held
            return
        if not outcome.ok:
            left = usd_text(outcome.remaining)
            headers = {HEADER: left}
            retry_after = held.window.retry_after(self.reactor.seconds())
            if retry_after is not None:
                headers["Retry-After"] = str(retry_after)
            raise budget_exceeded(
                held.key_id,
                held.window.period,
                usd_text(held.limit),
                left,
                usd_text(held.amount),
                headers,
            )
        ctx.state[STATE] = held
        ctx.response_headers[HEADER] = usd_text(outcome.remaining)

    # -- fallbacks (CONTRACT 5.1) ---------------------------------------------------------

    def admit(self, ctx: RequestContext, model: Model) -> bool | Deferred:
        """A fallback must have a price for a budgeted key, and its worst case
        must fit: what it costs beyond the reservation is reserved on top."""
        if model.priced:
            ctx.priced = True
        held = ctx.state.get(STATE)
        if ctx.api_key.budget is None or held is None:
            return True
        if not model.fully_priced:
            return False
        extra = self._worst_case(ctx, model) - held.amount
        if extra <= 0 or not held.checked:  # enough is held, or nothing can be
            return True
        now = self.reactor.seconds()
        ttl = held.window.ttl(now)
        outcome = self.store.reserve_now(held.scope, ctx.request_id, extra, held.limit, ttl)
        if outcome is not None:
            return self._topped_up(outcome, ctx, held, extra)
        d = self.store.reserve(held.scope, ctx.request_id, extra, held.limit, ttl)
        return d.addCallback(self._topped_up, ctx, held, extra)

    @staticmethod
    def _topped_up(
        outcome: Reservation | None, ctx: RequestContext, held: Held, extra: int
    ) -> bool:
        if outcome is None:
            return True
        if not outcome.ok:
            return False
        held.amount += extra
        return True

    def post_call(self, ctx: RequestContext) -> None:
        pass

    # -- finalize: the cost, and the settle -----------------------------------------------

    def finalize(self, ctx: RequestContext) -> None:
        if not ctx.priced:  # never priced, so never reserved: one attribute check
            return
        held = ctx.state.pop(STATE, None)
        cost, estimated = request_cost(ctx)
        if cost is not None:
            ctx.cost_usd = usd(cost)
            ctx.cost_estimated = estimated
        if held is not None:
            d = self.store.settle(
                held.scope, ctx.request_id, cost or 0, held.window.ttl(self.reactor.seconds())
            )
            d.addErrback(
                lambda f: log.failure(
                    "request {rid}: settling its budget failed", f, rid=ctx.request_id
                )
            )
