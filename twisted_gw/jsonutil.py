"""JSON in and out, the same way everywhere.

Strict parsing (RFC 8259: no NaN/Infinity, which AISIX's serde also refuses)
and compact UTF-8 output for what goes upstream and to clients.
"""

from __future__ import annotations

import json
from typing import Any


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid number {name}")


def loads(data: bytes | str) -> Any:
    """Parse JSON, refusing NaN and Infinity; raises ValueError."""
    return json.loads(data, parse_constant=_reject_constant)


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
