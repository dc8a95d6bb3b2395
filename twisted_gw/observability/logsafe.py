"""Values that are safe to put in a log line (CONTRACT 5.4, last bullet).

Anything a client, an upstream or a store document controls (a model name, a
path, an entity id, an upstream's error text) may hold CR, LF, ESC, NUL or
other control characters that would forge a second line or colour an
operator's terminal. :func:`escape` turns every such character into a visible
escape, so one value stays one piece of one line.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (U+0080-U+009F: U+009B is a one-character
# CSI on some terminals) and the Unicode line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _replace(match: re.Match) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: object) -> str:
    """``str(value)`` with every control character written as an escape."""
    text = value if isinstance(value, str) else str(value)
    if _CONTROL.search(text) is None:  # the common case: no copy
        return text
    return _CONTROL.sub(_replace, text)
