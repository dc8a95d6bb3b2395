"""The UTC windows a budget is counted in (issue 17), pure.

``day`` is the UTC calendar day, ``week`` the ISO week (from Monday 00:00
UTC), ``month`` the UTC calendar month, ``total`` one window for ever. A
window is named by its period and its start, so a key whose window rolled
over starts again at 0 without anything being reset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

_DAY = 86_400
#: 1970-01-01 was a Thursday: days since the epoch + 3, mod 7, is days since Monday
_EPOCH_WEEKDAY = 3


@dataclass(frozen=True)
class Window:
    """One budget window: ``[start, end)`` in epoch seconds (``end`` None: never ends)."""

    period: str
    start: int
    end: int | None

    @property
    def name(self) -> str:
        """The window's part of a store key: ``month:1764547200``."""
        return f"{self.period}:{self.start}"

    def retry_after(self, now: float) -> int | None:
        """Whole seconds until the window ends (at least 1); None for ``total``."""
        if self.end is None:
            return None
        return max(1, math.ceil(self.end - now))

    def ttl(self, now: float, grace: int = _DAY) -> int:
        """Seconds a store keeps the window: to its end and ``grace`` more (for
        requests that began in it and settle after it ended); 0: for ever."""
        if self.end is None:
            return 0
        return max(1, math.ceil(self.end - now)) + grace


def window(period: str, now: float) -> Window:
    """The window of ``period`` that holds the instant ``now`` (epoch seconds)."""
    if period == "total":
        return Window(period, 0, None)
    days = math.floor(now) // _DAY
    if period == "day":
        return Window(period, days * _DAY, (days + 1) * _DAY)
    if period == "week":
        monday = days - (days + _EPOCH_WEEKDAY) % 7
        return Window(period, monday * _DAY, (monday + 7) * _DAY)
    if period == "month":
        at = datetime.fromtimestamp(math.floor(now), UTC)
        start = datetime(at.year, at.month, 1, tzinfo=UTC)
        following = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
        return Window(period, int(start.timestamp()), int(following.timestamp()))
    raise ValueError(f"unknown budget period {period!r}")
