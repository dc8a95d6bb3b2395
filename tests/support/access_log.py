"""The access-log line as a test reads it (CONTRACT 4.6)."""

from __future__ import annotations

import re

#: the fields of an access-log line, in order (the time is the log prefix)
FIELDS = [
    "rid",
    "client",
    "method",
    "path",
    "status",
    "model",
    "key_id",
    "latency_ms",
    "first_token_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "end",
    "attempts",
    "target",
]

#: one ``key=value`` of a logfmt line; the value is bare or a quoted string
LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
