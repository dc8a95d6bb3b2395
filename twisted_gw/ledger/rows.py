"""A finished request as one ledger row (pure).

The row is a plain tuple in :data:`COLUMNS` order: the finalize hook builds
one per request, so it costs a few attribute reads and no object of its own.
"""

from __future__ import annotations

from typing import Any

from twisted_gw.hooks.context import RequestContext
from twisted_gw.observability.access_log import logged_model

#: the table's data columns, in the order of a row
COLUMNS = (
    "ts",
    "request_id",
    "key_id",
    "model",
    "deployment",
    "status",
    "end_reason",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "cost_usd",
    "cost_estimated",
    "latency_ms",
)

Row = tuple[Any, ...]


def _count(value: Any) -> int:
    """A usage count as a non-negative int; anything else an upstream sent counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def row_of(ctx: RequestContext, now: float) -> Row | None:
    """The ledger row of a finished request, or None for one that never got
    past authentication (a 401 is no one's spend).

    ``ts`` is when the request finished (seconds since the epoch), the model
    the client-facing name as the access log writes it (a key pasted into
    ``model`` is ``[redacted]``), the deployment ``ctx.target``. The cost is
    what the budget hook put on the context before this runs
    (``ctx.cost_usd``, ``ctx.cost_estimated``); without it, NULL."""
    key = ctx.api_key
    if key is None:
        return None
    usage = ctx.usage if isinstance(ctx.usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    finished = ctx.finished_at if ctx.finished_at is not None else now
    cost = getattr(ctx, "cost_usd", None)
    if not isinstance(cost, (int, float)) or isinstance(cost, bool):
        cost = None
    return (
        finished,
        ctx.request_id,
        key.id,
        logged_model(ctx),
        ctx.target,
        ctx.status,
        ctx.end_reason,
        _count(usage.get("prompt_tokens")),
        cached,
        _count(usage.get("completion_tokens")),
        None if cost is None else float(cost),
        bool(getattr(ctx, "cost_estimated", False)),
        round((finished - ctx.started) * 1000.0, 3),
    )
