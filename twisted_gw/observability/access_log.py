"""One access-log line per finished proxy request (CONTRACT 4.6) **[beyond]**.

A finalize hook, so it runs exactly once on every path. The line is logfmt,
made to be read with ``tail -f | grep``: ``key=value`` pairs, values quoted
only when they must be. It never holds a key: the API key is named by its
store id, and the path is without its query string. ``model`` is the name
the client sent, known or not (CONTRACT 5.4), cut to 128 characters, with
every configured client or provider key in it written ``[redacted]`` (a
client that pastes a key into ``model`` must not get it logged).

A request that did not succeed says why (CONTRACT 5.4) in fields that follow
the others, written only then, so a 200 costs nothing more:
``error=<code>`` (the 4.1 code of its answer, ``missing_api_key`` /
``invalid_api_key`` for the two 401s, ``provider_error`` /
``request_timeout`` for a stream cut or stalled after its first chunk),
``limit=<rpm|rpd|tpm|tpd|concurrency>`` on a 429 of the limiter, and when its
last upstream attempt failed, ``upstream=<host[:port]>`` and
``cause=<what happened>`` (``connection refused``, ``timeout after 30000 ms``,
``status 503``, ``stream cut: ...``). A request the client left
(``client_gone``) has none of them: its end says it all.

No value can forge or colour a line (CONTRACT 5.4): logfmt values that hold
anything but plain characters are quoted with every control character
escaped, and the JSON form writes control characters as ``\\uNNNN``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.config.snapshot import Snapshot
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IHook
from twisted_gw.hooks.rate_limit import REJECTED
from twisted_gw.observability.logsafe import escape, json_line

log = Logger()

#: characters a bare value may hold: ``[`` and ``]`` so that ``model=[redacted]``
#: and an IPv6 ``upstream=[::1]:8080`` read as written
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+[]")


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
    if _PLAIN.issuperset(text):
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


#: the ends whose line has no failure fields: it succeeded, or its client left
NO_FAILURE_FIELDS = frozenset({"ok", "done", "empty", "client_gone"})
#: the code of a failure that had no JSON error to answer with (the stream was out)
_END_CODES = {
    "upstream_cut": "provider_error",
    "timeout": "request_timeout",
    "upstream_error": "internal_error",
}
#: the longest model name a line holds (CONTRACT 5.4)
MODEL_CHARS = 128


def client_model(snapshot: Snapshot, name: str) -> str:
    """A model name the client sent that is not a configured model, as the
    log may show it (CONTRACT 5.4): every configured client or provider key
    in it ``[redacted]`` (before the cut, so no part of a key survives it),
    then cut to 128 characters."""
    return snapshot.redact(name)[:MODEL_CHARS]


def logged_model(ctx: RequestContext) -> str | None:
    """The line's ``model``: a configured name as it is, any other through
    :func:`client_model` (only a request that failed sends one)."""
    name = ctx.model_name
    if name is None or name in ctx.snapshot.models_by_name:
        return name
    return client_model(ctx.snapshot, name)


def failure_fields(ctx: RequestContext) -> list[tuple[str, str | None]]:
    """The fields that say why a request failed, in line order; ``[]`` for
    one that succeeded (or that its client left), computed for nothing else."""
    end = ctx.end_reason
    if end in NO_FAILURE_FIELDS:
        return []
    error = ctx.error
    fields: list[tuple[str, str | None]] = [
        ("error", error.log_code if error is not None else _END_CODES.get(end or "", end))
    ]
    limit = ctx.state.get(REJECTED)
    if limit is not None:
        fields.append(("limit", limit))
    failure = ctx.upstream_failure
    if failure is not None and failure.attempt == ctx.attempts:  # the last attempt's
        fields.append(("upstream", failure.host))
        fields.append(("cause", ctx.snapshot.redact(failure.cause)))
    return fields


def access_line(ctx: RequestContext, now: float) -> str:
    """The access-log line of a finished request (pure)."""
    usage = ctx.usage if isinstance(ctx.usage, dict) else {}
    model = ctx.model_name  # logged_model, inline: this runs for every request
    if model is not None and model not in ctx.snapshot.models_by_name:
        model = client_model(ctx.snapshot, model)
    finished = ctx.finished_at if ctx.finished_at is not None else now
    first = None if ctx.first_token_at is None else ctx.first_token_at - ctx.started
    line = " ".join(
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
    if ctx.end_reason in NO_FAILURE_FIELDS:
        return line
    failed = " ".join(f"{name}={logfmt_value(value)}" for name, value in failure_fields(ctx))
    return f"{line} {failed}"


def access_fields(ctx: RequestContext, now: float) -> dict[str, Any]:
    """The access-log fields of a finished request (pure); JSON-lines form."""
    usage = ctx.usage if isinstance(ctx.usage, dict) else {}
    finished = ctx.finished_at if ctx.finished_at is not None else now
    fields = {
        "time": datetime.fromtimestamp(finished, UTC).isoformat(timespec="milliseconds"),
        "rid": ctx.request_id,
        "client": ctx.client,
        "method": ctx.method,
        "path": ctx.path[:200],
        "status": ctx.status,
        "model": logged_model(ctx),
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
    if ctx.end_reason not in NO_FAILURE_FIELDS:
        fields.update(failure_fields(ctx))
    return fields


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
