"""What serde and axum say when a typed read of a JSON body fails, shared by
the formats that answer in AISIX's words (CONTRACT-NEXT 0: a body that does
not deserialize into the endpoint's type is a 422 with this prefix)."""

from __future__ import annotations

from typing import Any

from twisted_gw.jsonutil import dumps

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "


def shown(text: str) -> str:
    """A client's string as an error text quotes it: bounded."""
    return text if len(text) <= 64 else text[:64] + "..."


def unexpected(value: Any) -> str:
    """``value`` in serde's words (``serde::de::Unexpected``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {dumps(shown(value)).decode()}"
    return "sequence" if isinstance(value, list) else "map"
