"""JSON in and out, the same way everywhere.

Strict parsing (RFC 8259: no NaN/Infinity, which AISIX's serde also refuses)
and compact UTF-8 output for what goes upstream and to clients. The codec
objects are built once: ``json.loads``/``dumps`` with keyword arguments build
a new decoder/encoder on every call, on the hot path.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: nesting deeper than this is refused, as serde_json (AISIX's parser) does;
#: it keeps every later step (re-encoding, schema checks) far from Python's
#: recursion limit
MAX_DEPTH = 128

# a \uD800-\uDFFF escape: a surrogate, which is only valid as half of a pair
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON, but no JSON encoder can write it back
        raise ValueError(f"number out of range: {text[:40]}")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _depth(doc: Any) -> int:
    """How deeply containers nest in ``doc`` (iterative: no recursion)."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                break
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return deepest


def loads(data: bytes | str) -> Any:
    """Parse JSON that may be sent on; raises ValueError for anything that is
    not strict JSON (RFC 8259: no NaN/Infinity, which AISIX's serde also
    refuses) or that could not be written back as strict JSON: a number
    beyond a double's range, a lone surrogate escape (``"\\ud800"``), or
    nesting deeper than :data:`MAX_DEPTH`. So whatever this accepts, the
    gateway can re-encode and send on, and nothing else gets in."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        doc = _decoder.decode(data)
    except RecursionError:
        raise ValueError("recursion limit exceeded") from None
    if isinstance(doc, (dict, list)):
        # cheap scans first: the exact checks run only when they could fail
        if data.count("[") + data.count("{") > MAX_DEPTH and _depth(doc) > MAX_DEPTH:
            raise ValueError("recursion limit exceeded")
        if _SURROGATE_ESCAPE.search(data) is not None:
            try:
                _encoder.encode(doc).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("lone leading or trailing surrogate in a string") from None
    elif isinstance(doc, str) and _SURROGATE_ESCAPE.search(data) is not None:
        try:
            doc.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone leading or trailing surrogate in a string") from None
    return doc


try:
    from orjson import loads as _read
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    _read = loads


def read(data: bytes) -> Any:
    """Parse JSON that is only read, never re-serialized (stream chunks, upstream
    answers relayed as they came): orjson, ~4x faster, equally strict. It reads
    integers past 64 bits as floats, so whatever is sent on uses :func:`loads`."""
    return _read(data)


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON; raises ValueError rather than write NaN/Infinity."""
    return _encoder.encode(doc).encode()
