"""One access-log line per finished proxy request (CONTRACT 4.6) **[beyond]**.

A finalize hook, so it runs exactly once on every path. The line is logfmt,
made to be read with ``tail -f | grep``: ``key=value`` pairs, values quoted
only when they must be. It never holds a key: the API key is named by its
store id, the model only when it is a configured model name (a client that
pastes a key into ``model`` must not get it logged), and the path without its
query string.

No value can forge or colour a line (CONTRACT 5.4): logfmt values that hold
anything but plain characters are quoted with every control character
escaped, and the JSON form writes control characters as ``\\uNNNN``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IHook
from twisted_gw.observability.logsafe import escape, json_line

log = Logger()

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+")


def logfmt_value(value: Any) -> str:
    """``value`` as a logfmt value: bare when safe, else double-quoted and escaped.

    Quoted, a backslash and a double quote are escaped with a backslash and
    every control character as :func:`~twisted_gw.observability.logsafe.escape`
    writes it (``\\r``, ``\\n``, ``\\x1b``, ``\\u2028``...), so the value
    stays one token of one line."""
    if value is None or value == "":
        return "-"
    text = str(value)
    if len(text) > 200:
        text = text[:200] + "..."
    if all(c in _PLAIN for c in text):
        return text
    escaped = escape(text.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{escaped}"'


def tokens(usage: dict, name: str) -> int:
    """A usage count as a non-negative int; anything else (an upstream's
    strings, which could forge log lines) counts 0."""
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def access_line(ctx: RequestContext, now: float) -> str:
    """The access-log line of a finished request (pure)."""
    usage = ctx.usage if isinstance(ctx.usage, dict) else {}
    model = ctx.model_name if ctx.model_name in ctx.snapshot.models_by_name else None
    finished = ctx.finished_at if ctx.finished_at is not None else now
    first = None if ctx.first_token_at is None else ctx.first_token_at - ctx.started
    return " ".join(
        (
            f"rid={logfmt_value(ctx.request_id)}",
            f"client={logfmt_value(ctx.client)}",
            f"method={logfmt_value(ctx.method)}",
            f"path={logfmt_value(ctx.path)}",
            f"status={ctx.status}",
            f"model={logfmt_value(model)}",
            f"key_id={logfmt_value(ctx.api_key.id if ctx.api_key else None)}",
            f"latency_ms={_ms(finished - ctx.started)}",
            f"first_token_ms={_ms(first)}",
            f"prompt_tokens={tokens(usage, 'prompt_tokens')}",
            f"completion_tokens={tokens(usage, 'completion_tokens')}",
            f"total_tokens={tokens(usage, 'total_tokens')}",
            f"end={logfmt_value(ctx.end_reason)}",
            f"attempts={ctx.attempts}",
            f"target={logfmt_value(ctx.target)}",
        )
    )


def access_fields(ctx: RequestContext, now: float) -> dict[str, Any]:
    """The access-log fields of a finished request (pure); JSON-lines form."""
    usage = ctx.usage if isinstance(ctx.usage, dict) else {}
    finished = ctx.finished_at if ctx.finished_at is not None else now
    return {
        "time": datetime.fromtimestamp(finished, UTC).isoformat(timespec="milliseconds"),
        "rid": ctx.request_id,
        "client": ctx.client,
        "method": ctx.method,
        "path": ctx.path[:200],
        "status": ctx.status,
        "model": ctx.model_name if ctx.model_name in ctx.snapshot.models_by_name else None,
        "key_id": ctx.api_key.id if ctx.api_key else None,
        "latency_ms": round((finished - ctx.started) * 1000, 1),
        "first_token_ms": None
        if ctx.first_token_at is None
        else round((ctx.first_token_at - ctx.started) * 1000, 1),
        "prompt_tokens": tokens(usage, "prompt_tokens"),
        "completion_tokens": tokens(usage, "completion_tokens"),
        "total_tokens": tokens(usage, "total_tokens"),
        "end": ctx.end_reason,
        "attempts": ctx.attempts,
        "target": ctx.target,
    }


def access_json(ctx: RequestContext, now: float) -> str:
    """The access-log line as one JSON object (``access_log.format: json``)."""
    return json_line(access_fields(ctx, now))


@implementer(IHook)
class AccessLogHook:
    """Writes :func:`access_line` through twisted.logger at finalize."""

    name = "access_log"

    def __init__(self, reactor: Any, format: str = "logfmt", worker: int | None = None) -> None:
        self.reactor = reactor
        self._line = access_json if format == "json" else access_line
        #: several workers: the line says which one served the request
        self.worker = worker
        if worker is not None:
            self._line = self._json_of_worker if format == "json" else self._line_of_worker

    def _line_of_worker(self, ctx: RequestContext, now: float) -> str:
        return f"{access_line(ctx, now)} worker={self.worker}"

    def _json_of_worker(self, ctx: RequestContext, now: float) -> str:
        fields = access_fields(ctx, now)
        fields["worker"] = self.worker
        return json_line(fields)

    def pre_call(self, ctx: RequestContext) -> None:
        return None

    def post_call(self, ctx: RequestContext) -> None:
        pass

    def finalize(self, ctx: RequestContext) -> None:
        log.info("access {line}", line=self._line(ctx, self.reactor.seconds()))
