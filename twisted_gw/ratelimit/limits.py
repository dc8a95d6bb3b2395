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
from math import ceil

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
    key: str = field(init=False, compare=False)  # derived once, read on every request

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.scope}:{self.id}:{self.kind}")


class Frame:
    """A plan's windows at one moment: each window's counter key (its base
    and its start) and its end, the same for every ``now`` from ``lo``
    (the latest start) to ``hi`` (the earliest end). Built when a window
    turns, so a request reads its keys instead of formatting them; ``texts``
    keeps the reset texts already formatted in it."""

    __slots__ = ("ends", "hi", "keys", "lo", "texts")

    def __init__(self, windows: tuple[Window, ...], now: float) -> None:
        starts = [w.start(now) for w in windows]
        self.keys = tuple(w.base + str(s) for w, s in zip(windows, starts, strict=True))
        self.ends = tuple(s + w.size for w, s in zip(windows, starts, strict=True))
        self.lo = max(starts, default=-math.inf)
        self.hi = min(self.ends, default=math.inf)
        self.texts: dict[int, str] = {}

    def reset_text(self, total: int) -> str:
        """:func:`format_reset` of ``total`` seconds, formatted once per frame."""
        texts = self.texts
        if len(texts) >= 128:  # a frame of day windows only lives a day
            texts.clear()
        text = texts[total] = format_reset(total)
        return text


@dataclass(frozen=True)
class Plan:
    """Every limit that applies to one request, in the contract's check order:
    the key's windows, the model's windows, then concurrency (key, model).

    What the stores and the headers read on every request is derived once
    here: the window indices by what they count, the limits, the gate keys,
    and the :class:`Frame` of the current windows (rebuilt when one turns)."""

    windows: tuple[Window, ...] = ()
    concurrency: tuple[Concurrency, ...] = ()
    empty: bool = field(init=False, compare=False, repr=False)
    #: indices in ``windows`` of the request windows and of the token windows
    request_windows: tuple[int, ...] = field(init=False, compare=False, repr=False)
    token_windows: tuple[int, ...] = field(init=False, compare=False, repr=False)
    limits: tuple[int, ...] = field(init=False, compare=False, repr=False)
    gate_keys: tuple[str, ...] = field(init=False, compare=False, repr=False)
    gate_limits: tuple[int, ...] = field(init=False, compare=False, repr=False)
    #: per header group with windows: its three names, its first window, the others
    header_groups: tuple[tuple[str, str, str, int, tuple[int, ...]], ...] = field(
        init=False, compare=False, repr=False
    )
    limit_texts: tuple[str, ...] = field(init=False, compare=False, repr=False)
    gate_limit_texts: tuple[str, ...] = field(init=False, compare=False, repr=False)
    _frame: list[Frame | None] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        windows, gates = self.windows, self.concurrency
        requests = tuple(i for i, w in enumerate(windows) if not w.is_tokens)
        tokens = tuple(i for i, w in enumerate(windows) if w.is_tokens)
        derived = {
            "empty": not windows and not gates,
            "request_windows": requests,
            "token_windows": tokens,
            "header_groups": tuple(
                (
                    f"x-ratelimit-limit-{group}",
                    f"x-ratelimit-remaining-{group}",
                    f"x-ratelimit-reset-{group}",
                    indices[0],
                    indices[1:],
                )
                for group, indices in (("requests", requests), ("tokens", tokens))
                if indices
            ),
            "limit_texts": tuple(str(w.limit) for w in windows),
            "gate_limit_texts": tuple(str(g.limit) for g in gates),
            "limits": tuple(w.limit for w in windows),
            "gate_keys": tuple(g.key for g in gates),
            "gate_limits": tuple(g.limit for g in gates),
            "_frame": [None],
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def frame(self, now: float) -> Frame:
        """The windows' keys and ends at ``now`` (the same object until one turns)."""
        frame = self._frame[0]
        if frame is None or not frame.lo <= now < frame.hi:
            frame = self._frame[0] = Frame(self.windows, now)
        return frame


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


@dataclass(slots=True)
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
    out: dict[str, str] = {}
    add_headers(out, plan, outcome)
    return out


def add_headers(out: dict[str, str], plan: Plan, outcome: Outcome) -> None:
    """:func:`headers` written into ``out`` (a response's headers), in the
    same order."""
    now = outcome.now
    limits = plan.limits
    used = outcome.used
    if len(used) != len(limits):
        raise ValueError("an outcome's counts do not match its plan's windows")
    if plan.header_groups:
        frame = plan.frame(now)
        ends, texts = frame.ends, frame.texts
        for limit_name, remaining_name, reset_name, best, others in plan.header_groups:
            # rank (remaining, reset); the reset is end - now, so the end ranks alike
            remaining = limits[best] - used[best] if used[best] < limits[best] else 0
            for i in others:
                left = limits[i] - used[i] if used[i] < limits[i] else 0
                if left < remaining or (left == remaining and ends[i] < ends[best]):
                    best, remaining = i, left
            out[limit_name] = plan.limit_texts[best]
            out[remaining_name] = str(remaining)
            # format_reset's rounding; end > now within the frame, so never below 0
            total = ceil(ends[best] - now - 1e-9)
            out[reset_name] = texts.get(total) or frame.reset_text(total)
    gate_limits = plan.gate_limits
    if gate_limits:
        in_flight = outcome.in_flight
        if len(in_flight) != len(gate_limits):
            raise ValueError("an outcome's counts do not match its plan's gates")
        best = 0  # the first of the least remaining
        for i in range(1, len(gate_limits)):
            if gate_limits[i] - in_flight[i] < gate_limits[best] - in_flight[best]:
                best = i
        remaining = gate_limits[best] - in_flight[best]
        out["x-ratelimit-limit-concurrent"] = plan.gate_limit_texts[best]
        out["x-ratelimit-remaining-concurrent"] = str(remaining) if remaining > 0 else "0"
