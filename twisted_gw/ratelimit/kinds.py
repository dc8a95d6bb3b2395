"""The one table of rate-limit kinds (CONTRACT 2 ``rate_limit``, CONTRACT 4.5).

Every place that lists the kinds reads :data:`KINDS`: the entity schema and
the ``RateLimit`` entity (:mod:`twisted_gw.config.entities`), the limiter's
windows (:mod:`twisted_gw.ratelimit.limits`), the OpenAPI document and the
admin UI (``/ui/catalog.json``). A new kind is one row here; its counting
(requests, tokens, or a concurrency gate) is one of the three the stores
already apply.

The order of the rows is the contract's check order (rpm, rpd, tpm, tpd,
then concurrency) and the order the kinds are listed everywhere. This module
imports nothing of the gateway, so the config layer can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: what a kind counts: requests per window, tokens per window, or requests in flight
Counts = Literal["requests", "tokens", "concurrency"]


@dataclass(frozen=True)
class LimitKind:
    """One key of a ``rate_limit`` object and how the limiter applies it."""

    name: str  # the key in ``rate_limit``, in the 429 text and the store's key
    counts: Counts
    window: int | None  # seconds of the fixed, epoch-aligned window; None for concurrency
    label: str  # short, for forms ("Requests/minute")
    help: str  # one sentence for the OpenAPI document

    def __post_init__(self) -> None:
        if (self.window is None) != (self.counts == "concurrency"):
            raise ValueError(f"{self.name}: a window iff it counts requests or tokens")

    def describe(self) -> dict[str, Any]:
        """This row as JSON for clients (the admin UI)."""
        return {
            "name": self.name,
            "counts": self.counts,
            "window": self.window,
            "label": self.label,
            "help": self.help,
        }


KINDS: tuple[LimitKind, ...] = (
    LimitKind(
        "rpm",
        "requests",
        60,
        "Requests/minute",
        "Requests per minute (fixed 60 s window aligned to the epoch).",
    ),
    LimitKind(
        "rpd",
        "requests",
        86400,
        "Requests/day",
        "Requests per day (fixed 86400 s window aligned to the epoch).",
    ),
    LimitKind(
        "tpm",
        "tokens",
        60,
        "Tokens/minute",
        "Tokens per minute (usage `total_tokens`, consumed when the request finishes).",
    ),
    LimitKind(
        "tpd",
        "tokens",
        86400,
        "Tokens/day",
        "Tokens per day (usage `total_tokens`, consumed when the request finishes).",
    ),
    LimitKind(
        "concurrency",
        "concurrency",
        None,
        "In flight",
        "Requests in flight at once, this one included.",
    ),
)

#: the kinds by name
BY_NAME: dict[str, LimitKind] = {k.name: k for k in KINDS}
#: every key a ``rate_limit`` object keeps, in table order
NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)
#: the kinds counted in fixed windows (requests or tokens), in check order
WINDOWED: tuple[LimitKind, ...] = tuple(k for k in KINDS if k.window is not None)
#: the kinds that gate requests in flight
GATES: tuple[LimitKind, ...] = tuple(k for k in KINDS if k.counts == "concurrency")
