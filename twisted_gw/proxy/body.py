"""Parsing the JSON body of proxy requests (the ``invalid_json`` row of 4.1)."""

from __future__ import annotations

from typing import Any

from twisted_gw.errors import invalid_json
from twisted_gw.jsonutil import loads


def parse_body(raw: bytes, required: dict[str, tuple[type, ...]]) -> dict:
    """Parse ``raw`` as a JSON object holding ``required`` fields of the given types."""
    try:
        doc: Any = loads(raw)
    except ValueError as e:  # includes UnicodeDecodeError
        raise invalid_json(str(e)) from None
    if not isinstance(doc, dict):
        raise invalid_json(f"invalid type: expected a JSON object, got {type(doc).__name__}")
    for name, types in required.items():
        if name not in doc:
            raise invalid_json(f"missing field `{name}`")
        if not isinstance(doc[name], types) or isinstance(doc[name], bool):
            wanted = " or ".join("string" if t is str else "array" for t in types)
            raise invalid_json(f"invalid type for `{name}`: expected {wanted}")
    return doc


CHAT_FIELDS: dict[str, tuple[type, ...]] = {"model": (str,), "messages": (list,)}
EMBEDDINGS_FIELDS: dict[str, tuple[type, ...]] = {"model": (str,), "input": (str, list)}
