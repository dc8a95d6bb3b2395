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

#: what follows them on the line of a request that failed (CONTRACT 5.4), in
#: order, each only when it applies: its error code, the limit that refused
#: it, the host its last upstream attempt went to and what happened there
FAILURE_FIELDS = ["error", "limit", "upstream", "cause"]

#: one ``key=value`` of a logfmt line; the value is bare or a quoted string
LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
