"""What one request asks of the limiter, and the pure arithmetic around it.

Fixed windows aligned to the epoch, sized by the kinds table
(:mod:`twisted_gw.ratelimit.kinds`: rpm/tpm 60 s, rpd/tpd 86400 s); the reset
text and the strictest-limit header choice of CONTRACT 4.5; the 429 texts of
CONTRACT 4.1. No I/O here: the stores (memory, Redis) apply a :class:`Plan`
atomically and answer with an :class:`Outcome`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from twisted_gw.config.entities import ApiKey, Model, RateLimit
from twisted_gw.errors import GatewayError
from twisted_gw.ratelimit.kinds import BY_NAME, GATES, WINDOWED


@dataclass(frozen=True, slots=True)
class Window:
    """One fixed-window counter a request is checked against."""

    scope: str  # "apikey" / "model"
    id: str  # the entity's store id (never the key itself)
    kind: str  # a windowed kind of the table: rpm / rpd / tpm / tpd
    limit: int
    # derived once, read on every request
    size: int = field(init=False)
    is_tokens: bool = field(init=False)
    base: str = field(init=False)

    def __post_init__(self) -> None:
        kind = BY_NAME[self.kind]
        object.__setattr__(self, "size", kind.window)
        object.__setattr__(self, "is_tokens", kind.counts == "tokens")
        object.__setattr__(self, "base", f"{self.scope}:{self.id}:{self.kind}:")

    def start(self, now: float) -> int:
        return int(now // self.size) * self.size

    def key(self, now: float) -> str:
        return self.base + str(int(now // self.size) * self.size)

    def reset_in(self, now: float) -> float:
        return self.start(now) + self.size - now


@dataclass(frozen=True, slots=True)
class Concurrency:
    """One in-flight counter."""

    scope: str
    id: str
    limit: int
    kind: str = "concurrency"  # a concurrency kind of the table

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.id}:{self.kind}"


@dataclass(frozen=True)
class Plan:
    """Every limit that applies to one request, in the contract's check order:
    the key's windows, the model's windows, then concurrency (key, model)."""

    windows: tuple[Window, ...] = ()
    concurrency: tuple[Concurrency, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.windows and not self.concurrency


def _windows(scope: str, id: str, limit: RateLimit | None) -> list[Window]:
    if limit is None:
        return []
    return [
        Window(scope, id, kind.name, value)
        for kind in WINDOWED
        if (value := getattr(limit, kind.name)) is not None
    ]


def _gates(scope: str, id: str, limit: RateLimit | None) -> list[Concurrency]:
    if limit is None:
        return []
    return [
        Concurrency(scope, id, value, kind.name)
        for kind in GATES
        if (value := getattr(limit, kind.name)) is not None
    ]


def plan_for(api_key: ApiKey | None, model: Model | None) -> Plan:
    """Every limit of the key and the model that applies to one request."""
    windows: list[Window] = []
    concurrency: list[Concurrency] = []
    for scope, entity in (("apikey", api_key), ("model", model)):
        if entity is not None:
            windows += _windows(scope, entity.id, entity.rate_limit)
    for scope, entity in (("apikey", api_key), ("model", model)):
        if entity is not None:
            concurrency += _gates(scope, entity.id, entity.rate_limit)
    return Plan(tuple(windows), tuple(concurrency))


@dataclass
class Outcome:
    """What a store answered for a plan.

    ``used`` holds, per window in plan order, its count after this request
    (requests: including this one; tokens: what was already spent);
    ``in_flight`` the concurrency counts including this one. When rejected,
    ``rejected_window`` or ``rejected_concurrency`` is the index of the first
    failing check and nothing was consumed."""

    now: float
    used: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
    rejected_window: int | None = None
    rejected_concurrency: int | None = None

    @property
    def allowed(self) -> bool:
        return self.rejected_window is None and self.rejected_concurrency is None


def format_reset(seconds: float) -> str:
    """``55s``, ``2m``, ``1m5s``, ``1440m`` (CONTRACT 4.5), rounded up."""
    total = max(0, math.ceil(seconds - 1e-9))
    minutes, secs = divmod(total, 60)
    if minutes and secs:
        return f"{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _label(scope: str) -> str:
    return "API key ID" if scope == "apikey" else "model ID"


def rejection(plan: Plan, outcome: Outcome) -> GatewayError:
    """The 429 of CONTRACT 4.1 for a rejected outcome."""
    if outcome.rejected_window is not None:
        window = plan.windows[outcome.rejected_window]
        retry = max(0, math.ceil(window.reset_in(outcome.now) - 1e-9))
        return GatewayError(
            429,
            f"Rate limit exceeded for {_label(window.scope)}: {window.id}. "
            f"Limited on {window.kind}, current limit: {window.limit}, remaining: 0",
            "rate_limit_exceeded",
            headers={"Retry-After": str(retry)},
        )
    gate = plan.concurrency[outcome.rejected_concurrency]
    current = outcome.in_flight[outcome.rejected_concurrency]
    return GatewayError(
        429,
        f"Concurrency limit exceeded for resource ID: {gate.id}. "
        f"Limit: {gate.limit}, current: {current}",
        "concurrency_limit_exceeded",
    )


def headers(plan: Plan, outcome: Outcome) -> dict[str, str]:
    """The x-ratelimit-* headers for the strictest applicable limits: lower
    remaining wins, ties go to the earlier reset; requests and tokens are
    chosen separately; a group appears only when such a limit is configured."""
    now = outcome.now
    out: dict[str, str] = {}
    for group, tokens in (("requests", False), ("tokens", True)):
        best = None
        for window, used in zip(plan.windows, outcome.used, strict=True):
            if window.is_tokens != tokens:
                continue
            rank = (max(0, window.limit - used), window.reset_in(now))
            if best is None or rank < best[0]:
                best = (rank, window)
        if best is not None:
            (remaining, reset), window = best
            out[f"x-ratelimit-limit-{group}"] = str(window.limit)
            out[f"x-ratelimit-remaining-{group}"] = str(remaining)
            out[f"x-ratelimit-reset-{group}"] = format_reset(reset)
    if plan.concurrency:
        gate, in_flight = min(
            zip(plan.concurrency, outcome.in_flight, strict=True),
            key=lambda pair: pair[0].limit - pair[1],
        )
        remaining = max(0, gate.limit - in_flight)
        out["x-ratelimit-limit-concurrent"] = str(gate.limit)
        out["x-ratelimit-remaining-concurrent"] = str(remaining)
    return out
