"""What every part of the bench shares: the one error type, the address, the
client key, the models and the request bodies, and small blocking HTTP calls."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from typing import Any

HOST = "127.0.0.1"
CLIENT_KEY = "sk-bench"
MODEL_NAME = "bench"
CHAT_PATH = "/v1/chat/completions"
REQUEST_BODY = json.dumps(
    {"model": MODEL_NAME, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 8},
    separators=(",", ":"),
)

STREAM_REQUEST_BODY = json.dumps(
    {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 32,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    separators=(",", ":"),
)
GAP_MODEL_NAME = "bench-gap"  # a second model, on an upstream that paces its events
GAP_REQUEST_BODY = STREAM_REQUEST_BODY.replace(f'"{MODEL_NAME}"', f'"{GAP_MODEL_NAME}"', 1)
STREAM_EVENTS = 22  # data events per stream: role, 19 content, finish, usage; then [DONE]


class BenchError(Exception):
    """A step failed; the message says which and why."""


def free_port() -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_call(
    port: int, method: str, path: str, body: Any = None, key: str | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    """One request on a connection of its own; (status, body). A body that is not
    str/bytes goes as JSON, ``key`` as a bearer token."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, str | bytes | None) else json.dumps(body)
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def accepts(port: int) -> bool:
    """Whether something accepts connections on HOST:port (within 0.5 s)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def log_tail(path: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, or "" when it cannot be read."""
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
    return ""
