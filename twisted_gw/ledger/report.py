"""The spend report's parameters and answer (pure): ``GET
/aisix/admin/spend?group_by=key|model&from=<RFC 3339>&to=<RFC 3339>``.

Defaults: ``group_by=key``, ``to`` now, ``from`` 30 days before ``to``. A
parameter that does not parse is a :class:`ReportError`, which the admin
app answers 400 with its message; the message names the parameter and
never echoes more than a short piece of the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted_gw.ledger.database import GROUPS

DEFAULT_SPAN = 30 * 86_400.0
PARAMETERS = ("group_by", "from", "to")


class ReportError(ValueError):
    """A report parameter the gateway cannot use; the message is the answer's."""


@dataclass(frozen=True)
class SpendQuery:
    """A checked report request: what to group by, and ``start <= ts < end``."""

    group_by: str
    start: float
    end: float


def _shown(value: str) -> str:
    return value if len(value) <= 40 else value[:40] + "..."


def parse_time(name: str, value: str) -> float:
    """An RFC 3339 date-time with its offset (``2026-12-01T00:00:00Z``,
    ``...+02:00``, fractions allowed) as seconds since the epoch."""
    text = value.strip()
    if len(text) < 19 or text[10] not in "Tt ":
        raise ReportError(
            f"{name} must be an RFC 3339 date-time such as 2026-12-01T00:00:00Z,"
            f" got '{_shown(value)}'"
        )
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    elif len(text) >= 25 and text[-6] == " " and text[-3] == ":":
        # ``+02:00`` typed into a URL unescaped arrives as `` 02:00``
        text = text[:-6] + "+" + text[-5:]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ReportError(
            f"{name} must be an RFC 3339 date-time with its offset (Z or +hh:mm),"
            f" got '{_shown(value)}'"
        )
    return moment.timestamp()


def parse_query(args: Mapping[str, Sequence[str]], now: float) -> SpendQuery:
    """The report's query from the request's parameters (each at most once)."""
    for name, values in args.items():
        if name not in PARAMETERS:
            known = ", ".join(PARAMETERS)
            raise ReportError(f"unknown parameter '{_shown(name)}' (known: {known})")
        if len(values) != 1:
            raise ReportError(f"parameter '{name}' must be given once")
    group_by = args.get("group_by", ["key"])[0]
    if group_by not in GROUPS:
        raise ReportError(f"group_by must be 'key' or 'model', got '{_shown(group_by)}'")
    end = parse_time("to", args["to"][0]) if "to" in args else now
    start = parse_time("from", args["from"][0]) if "from" in args else end - DEFAULT_SPAN
    if start > end:
        raise ReportError("from must not be after to")
    return SpendQuery(group_by, start, end)


def rfc3339(ts: float) -> str:
    """``ts`` as RFC 3339 in UTC, to the millisecond: ``2026-12-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def spend_document(query: SpendQuery, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The report's answer: groups by cost (unpriced last), then requests, then id.

    ``cost_usd`` is the sum of the priced rows of a group; null when none of
    its rows had a price."""
    groups = [
        {
            "id": id,
            "requests": int(requests),
            "prompt_tokens": int(prompt),
            "completion_tokens": int(completion),
            "cost_usd": None if cost is None else round(float(cost), 10),
        }
        for id, requests, prompt, completion, cost in rows
    ]
    groups.sort(
        key=lambda g: (
            g["cost_usd"] is None,
            -(g["cost_usd"] or 0.0),
            -g["requests"],
            "" if g["id"] is None else str(g["id"]),
        )
    )
    return {
        "from": rfc3339(query.start),
        "to": rfc3339(query.end),
        "group_by": query.group_by,
        "rows": groups,
    }
