"""Values that are safe to put in a log line (CONTRACT 5.4, last bullet).

Anything a client, an upstream or a store document controls (a model name, a
path, an entity id, an upstream's error text) may hold CR, LF, ESC, NUL or
other control characters that would forge a second line or colour an
operator's terminal. :func:`escape` turns every such character into a visible
escape, so one value stays one piece of one line; :func:`json_line` does the
same for a JSON-lines record.

twisted.logger formats a message's ``{fields}`` only when an observer writes
it, so a caller escapes the value it passes (``key=escape(key)``), not the
message.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls, DEL, C1 controls (U+0080-U+009F: U+009B is a one-character
# CSI on some terminals, U+0085 a line end to some readers), the Unicode line
# and paragraph separators, the bidirectional controls, which make a
# terminal show a line in another order than it was written, and lone
# surrogates (JSON text may hold them), which no UTF-8 log file can take
_UNSAFE = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_CONTROL = re.compile(f"[\x00-\x1f{_UNSAFE}]")
# what json.dumps(ensure_ascii=False) leaves as it is (it escapes C0 itself)
_JSON_UNSAFE = re.compile(f"[{_UNSAFE}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _replace(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_replace(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape(value: object) -> str:
    """``str(value)`` with every control character written as an escape.

    ``\\n``, ``\\r`` and ``\\t`` by name, other characters below U+0100 as
    ``\\xNN``, the rest as ``\\uNNNN``. A backslash is left as it is: the
    result is for reading, and a value can no longer end or colour the line
    (the access log's logfmt and JSON forms, meant to be parsed back, also
    escape backslashes)."""
    text = value if isinstance(value, str) else str(value)
    if _CONTROL.search(text) is None:  # the common case: no copy
        return text
    return _CONTROL.sub(_replace, text)


def json_line(record: Any) -> str:
    """``record`` as one compact JSON line that no value can break or colour.

    Like ``json.dumps(record, ensure_ascii=False)`` (non-ASCII text stays
    readable), but DEL, the C1 controls, U+2028/U+2029, the bidirectional
    controls and lone surrogates, which it leaves raw inside strings, are
    written as ``\\uNNNN`` too. They can only occur inside strings, so the line still
    parses to the same record."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    if _JSON_UNSAFE.search(text) is None:
        return text
    return _JSON_UNSAFE.sub(_json_replace, text)
