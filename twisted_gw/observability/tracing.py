"""OpenTelemetry traces of proxied requests (CONTRACT 5.3) **[beyond]**.

One SERVER span per proxy request, named ``{gen_ai.operation.name}
{gen_ai.request.model}`` (``chat gpt``), continuing the client's W3C
``traceparent``; one CLIENT child span per upstream attempt, whose own
``traceparent`` goes upstream. Attributes follow the OpenTelemetry GenAI
semantic conventions, plus ``twisted_gw.end`` (the access log's end reason)
and ``twisted_gw.attempts``.

The data comes from the points the metrics and the access log use: the
request's context (``ctx.trace``, made by the proxy when the request
arrives), the exchange's attempts (:class:`RequestTrace`), the relay's parsed
chunks, and the finalize hook (:class:`TracingHook`), which ends the spans.
With tracing off none of this exists: ``ctx.trace`` is None and no span
object is ever made.

Export is the SDK's: a BatchSpanProcessor (its own thread, off the reactor)
and the OTLP/HTTP protobuf exporter. A collector that is down or slow never
delays a request: :class:`BoundedExport` keeps the queue bounded and counts
what it drops (a full queue, a failed export) in
``twisted_gw_trace_spans_dropped_total``, which the SDK alone would drop
silently. Shutdown waits for the last export at most ``shutdown_timeout``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from twisted_gw import __version__
from twisted_gw.config.entities import Model
from twisted_gw.config.file import TracingConfig
from twisted_gw.errors import GatewayError
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IHook, IRequestTrace
from twisted_gw.jsonutil import dumps, read
from twisted_gw.observability.logsafe import escape

log = Logger()

#: the GenAI operation of each model route (the Messages and Responses APIs run as chat)
OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/messages/count_tokens": "count_tokens",
}

#: gen_ai.provider.name of the families whose well-known name differs from ours
PROVIDER_NAMES = {
    "gemini": "gcp.gemini",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}

#: how a request ended without an error
_CLEAN_ENDS = frozenset({"ok", "done", "empty"})
#: ends that are the gateway's or the upstream's failure (span status ERROR)
_FAILED_ENDS = frozenset({"upstream_cut", "upstream_error", "timeout"})

#: captured content (capture_content: true): characters of text kept per
#: span attribute, all messages together; the rest is cut
CONTENT_BUDGET = 16 * 1024
#: model names on spans are cut like the access log's
_NAME_LIMIT = 128

SHUTDOWN_TIMEOUT = 1.5

_propagator = TraceContextTextMapPropagator()


class _HeadersGetter:
    """Reads a twisted.web request's headers for the W3C propagator."""

    @staticmethod
    def get(carrier: Any, key: str) -> list[str] | None:
        values = carrier.getRawHeaders(key.encode("latin-1"))
        return None if values is None else [v.decode("latin-1") for v in values]

    @staticmethod
    def keys(carrier: Any) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier.getAllRawHeaders()]


class _HeadersSetter:
    """Writes into the providers' ``{bytes: [bytes]}`` request headers."""

    @staticmethod
    def set(carrier: dict[bytes, list[bytes]], key: str, value: str) -> None:
        carrier[key.encode("latin-1")] = [value.encode("latin-1")]


def provider_name(provider: str) -> str:
    """``gen_ai.provider.name`` of a deployment's provider family or type."""
    name = provider.rsplit(":", 1)[-1]  # a provider type's "provider:<type>"
    return PROVIDER_NAMES.get(name, name)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(content: Any) -> str | None:
    """The text of a chat message's ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str)) or None
    return None


def bounded_messages(messages: Sequence[tuple[str, str | None, str | None]]) -> str:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` (the GenAI
    conventions' JSON: role and text parts), at most :data:`CONTENT_BUDGET`
    characters of text in all; what is cut is marked ``truncated``."""
    budget = CONTENT_BUDGET
    out = []
    for role, text, finish in messages:
        entry: dict[str, Any] = {"role": role, "parts": []}
        if text is not None:
            part: dict[str, Any] = {"type": "text", "content": text[:budget]}
            if len(text) > budget:
                part["truncated"] = True
            budget -= len(part["content"])
            entry["parts"].append(part)
        if finish is not None:
            entry["finish_reason"] = finish
        out.append(entry)
        if budget <= 0:
            break
    return dumps(out).decode()


_T = TypeVar("_T")


def _safe(default: Any = None) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """A trace method that cannot break the request it watches: an
    exception is logged with the request id, and ``default`` returned."""

    def wrap(method: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(method)
        def safe(self: RequestTrace, *args: Any) -> Any:
            try:
                return method(self, *args)
            except Exception:  # noqa: BLE001 - tracing must never fail a request
                log.failure(
                    "request {rid}: tracing failed in {what}",
                    Failure(),
                    rid=self.ctx.request_id,
                    what=method.__name__,
                )
                return default() if callable(default) else default

        return safe

    return wrap


class _Current:
    """Makes a span the current one while an attempt's call is made."""

    __slots__ = ("_context", "_token")

    def __init__(self, span: Span) -> None:
        self._context = otel_trace.set_span_in_context(span)
        self._token: object = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._context)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)


@implementer(IRequestTrace)
class RequestTrace:
    """One request's spans, from its arrival to its finalize."""

    def __init__(self, tracing: Tracing, span: Span, ctx: RequestContext) -> None:
        self.tracing = tracing
        self.span = span
        self.ctx = ctx
        self._parent: Any = None
        #: the attempt now running (its CLIENT span)
        self._attempt: Span | None = None
        #: the provider of the last attempt, for the server span
        self._provider: str | None = None
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.finish_reasons: list[str] = []
        #: capture_content: the answer's text (a stream's, gathered up to the budget)
        self._output: list[str] | None = [] if tracing.capture_content else None
        self._output_len = 0
        self.ended = False

    @property
    def operation(self) -> str | None:
        return OPERATIONS.get(self.ctx.endpoint)

    # -- what the exchange tells ---------------------------------------------------

    @_safe(contextlib.nullcontext)
    def attempt(self, deployment: Model, target: str) -> _Current:
        self._end_attempt(None)  # one still open had no say in how it went
        operation = self.operation or "chat"
        provider = provider_name(deployment.provider)
        self._provider = provider
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": deployment.upstream_model[:_NAME_LIMIT],
            "twisted_gw.target": target,
        }
        max_tokens = self._max_tokens()
        if max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = max_tokens
        if self._parent is None:
            self._parent = otel_trace.set_span_in_context(self.span)
        span = self.tracing.tracer.start_span(
            f"{operation} {deployment.upstream_model[:_NAME_LIMIT]}",
            context=self._parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        self._attempt = span
        return _Current(span)

    @_safe()
    def attempt_failed(self, error: GatewayError) -> None:
        self._end_attempt(error)

    @_safe()
    def answered(self, body: bytes) -> None:
        try:
            doc = read(body)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if self.operation != "embeddings":  # its model is the client's name (CONTRACT 4.2)
            self._response(doc)
        choices = doc.get("choices")
        if isinstance(choices, list):  # chat
            for choice in choices:
                if isinstance(choice, dict):
                    self._finish(choice.get("finish_reason"))
                    message = choice.get("message")
                    if isinstance(message, dict):
                        self._gather(_text(message.get("content")))
        elif doc.get("type") == "message":  # Anthropic's own answer (native Messages)
            self._finish(doc.get("stop_reason"))
            self._gather(_text(doc.get("content")))

    @_safe()
    def chunk(self, doc: dict) -> None:
        if self.response_model is None:
            self._response(doc)
        choices = doc.get("choices")
        if choices:  # chat chunks
            for choice in choices:
                if isinstance(choice, dict):
                    self._finish(choice.get("finish_reason"))
                    if self._output is not None:
                        delta = choice.get("delta")
                        if isinstance(delta, dict):
                            self._gather(_text(delta.get("content")))
            return
        kind = doc.get("type")  # Anthropic's events (native Messages)
        if kind == "message_start" and isinstance(doc.get("message"), dict):
            self._response(doc["message"])
        elif kind == "message_delta" and isinstance(doc.get("delta"), dict):
            self._finish(doc["delta"].get("stop_reason"))
        elif kind == "content_block_delta" and self._output is not None:
            delta = doc.get("delta")
            if isinstance(delta, dict):
                self._gather(delta.get("text"))

    # -- the end (the finalize hook) ---------------------------------------------------

    @_safe()
    def end(self) -> None:
        """Set what is known at the end and end the open spans (once); each
        span's attributes go in one call (the SDK takes a lock per call)."""
        if self.ended:
            return
        self.ended = True
        ctx = self.ctx
        end = ctx.end_reason or "-"
        answer = self._answer_attributes()
        attempt = self._attempt
        if attempt is not None:
            self._attempt = None
            extra: dict[str, Any] = {}
            if ctx.attempt_outcomes and ctx.attempt_outcomes[-1][1] == "ok":  # it answered
                extra = {"http.response.status_code": 200, **answer}
            if end not in _CLEAN_ENDS:
                extra["error.type"] = end
                attempt.set_status(Status(StatusCode.ERROR))
            attempt.set_attributes(extra)
            attempt.end()
        span = self.span
        operation = self.operation
        model = self._model_name()
        attributes: dict[str, Any] = {}
        if operation is not None:
            span.update_name(f"{operation} {model}" if model else operation)
            attributes["gen_ai.operation.name"] = operation
        else:
            route = ctx.endpoint
            span.update_name(ctx.method if route == "-" else f"{ctx.method} {route}")
        if model:
            attributes["gen_ai.request.model"] = model
        provider = self._provider
        if provider is None and ctx.model is not None and ctx.model.provider:
            provider = provider_name(ctx.model.provider)
        if provider is not None:
            attributes["gen_ai.provider.name"] = provider
        max_tokens = self._max_tokens()
        if max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = max_tokens
        attributes.update(answer)
        if ctx.status:
            attributes["http.response.status_code"] = ctx.status
        error_type = self._error_type()
        if error_type is not None:
            attributes["error.type"] = error_type
        if ctx.status >= 500 or end in _FAILED_ENDS:
            span.set_status(Status(StatusCode.ERROR))
        attributes["twisted_gw.end"] = end
        attributes["twisted_gw.attempts"] = ctx.attempts
        if ctx.target is not None:
            attributes["twisted_gw.target"] = ctx.target
        if self.tracing.capture_content:
            self._content(attributes)
        span.set_attributes(attributes)
        span.end()

    # -- helpers --------------------------------------------------------------------

    def _end_attempt(self, error: GatewayError | None) -> None:
        span = self._attempt
        if span is None:
            return
        self._attempt = None
        if error is not None:
            attributes: dict[str, Any] = {"error.type": str(error.attempt_outcome)}
            if error.upstream_status is not None:
                attributes["http.response.status_code"] = error.upstream_status
            span.set_attributes(attributes)
            message = self.ctx.snapshot.redact(error.message)[:256]
            span.set_status(Status(StatusCode.ERROR, message))
        else:
            span.set_attribute("error.type", "abandoned")
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _response(self, doc: dict) -> None:
        model = doc.get("model")
        if isinstance(model, str) and model:
            self.response_model = model[:_NAME_LIMIT]
        rid = doc.get("id")
        if isinstance(rid, str) and rid:
            self.response_id = rid[:_NAME_LIMIT]

    def _finish(self, reason: Any) -> None:
        if isinstance(reason, str) and reason and len(self.finish_reasons) < 16:
            self.finish_reasons.append(reason[:64])

    def _gather(self, text: Any) -> None:
        output = self._output
        if output is None or not isinstance(text, str) or self._output_len > CONTENT_BUDGET:
            return
        output.append(text)
        self._output_len += len(text)

    def _answer_attributes(self) -> dict[str, Any]:
        """What the answer said, for the server span and the attempt that gave it."""
        attributes: dict[str, Any] = {}
        if self.response_model is not None:
            attributes["gen_ai.response.model"] = self.response_model
        if self.response_id is not None:
            attributes["gen_ai.response.id"] = self.response_id
        if self.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = tuple(self.finish_reasons)
        usage = self.ctx.usage
        if isinstance(usage, dict):
            for attribute, name in (
                ("gen_ai.usage.input_tokens", "prompt_tokens"),
                ("gen_ai.usage.output_tokens", "completion_tokens"),
            ):
                count = _int(usage.get(name))
                if count is not None:
                    attributes[attribute] = count
        return attributes

    def _model_name(self) -> str | None:
        """The client's model name as the access log would show it (cut, and
        never a configured key)."""
        name = self.ctx.model_name
        if not isinstance(name, str) or not name:
            return None
        return self.ctx.snapshot.redact(name)[:_NAME_LIMIT]

    def _max_tokens(self) -> int | None:
        body = self.ctx.body
        if not isinstance(body, dict):
            return None
        value = body.get("max_tokens")
        if value is None:
            value = body.get("max_completion_tokens")
        return _int(value)

    def _error_type(self) -> str | None:
        ctx = self.ctx
        error = ctx.error
        if error is not None:
            return error.code or str(error.status)
        if ctx.end_reason is not None and ctx.end_reason not in _CLEAN_ENDS:
            return ctx.end_reason
        return None

    def _content(self, attributes: dict[str, Any]) -> None:
        body = self.ctx.body
        messages = body.get("messages") if isinstance(body, dict) else None
        if isinstance(messages, list):
            entries = [
                (str(m.get("role"))[:32], _text(m.get("content")), None)
                for m in messages
                if isinstance(m, dict)
            ]
            attributes["gen_ai.input.messages"] = self._redact(bounded_messages(entries))
        if self._output:
            finish = self.finish_reasons[0] if self.finish_reasons else None
            text = "".join(self._output)
            output = bounded_messages([("assistant", text, finish)])
            attributes["gen_ai.output.messages"] = self._redact(output)

    def _redact(self, text: str) -> str:
        return self.ctx.snapshot.redact(text)


class BoundedExport(SpanProcessor):
    """The SDK's BatchSpanProcessor behind a gate that counts what is lost.

    The SDK's queue drops silently when full. Here a span is handed on only
    while fewer than ``max_queue_size`` spans wait for export (those handed
    on minus those the exporter took), else it is dropped and counted; so the
    SDK's own queue never overflows. Spans of a failed export are counted
    too. Each count is written by one thread (``on_end`` on the reactor's,
    the export on the processor's), so no lock is needed on the way."""

    def __init__(
        self,
        exporter: SpanExporter,
        max_queue_size: int,
        dropped: Any,
        **batch: Any,
    ) -> None:
        self.max_queue_size = max_queue_size
        self._dropped = dropped  # reason -> a Prometheus counter child
        self._submitted = 0
        self._taken = 0
        self._batch = BatchSpanProcessor(
            _CountingExporter(exporter, self),
            max_queue_size=max_queue_size,
            max_export_batch_size=min(512, max_queue_size),
            **batch,
        )

    @property
    def waiting(self) -> int:
        """Spans handed to the SDK and not yet taken by the exporter."""
        return self._submitted - self._taken

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        if self._submitted - self._taken >= self.max_queue_size:
            self._dropped("queue_full").inc()
            return
        self._submitted += 1
        self._batch.on_end(span)

    def shutdown(self) -> None:
        self._batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def taken(self, count: int) -> None:
        """The exporter took ``count`` spans off the queue (its thread)."""
        self._taken += count

    def failed(self, count: int) -> None:
        """An export of ``count`` spans failed: they are lost, and counted."""
        self._dropped("export_failed").inc(count)


class _CountingExporter(SpanExporter):
    """The real exporter; tells the gate what it took and what failed."""

    def __init__(self, exporter: SpanExporter, gate: BoundedExport) -> None:
        self.exporter = exporter
        self.gate = gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.taken(len(spans))
        try:
            result = self.exporter.export(spans)
        except Exception:
            self.gate.failed(len(spans))
            raise  # the SDK logs it
        if result is not SpanExportResult.SUCCESS:
            self.gate.failed(len(spans))
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class Tracing:
    """The gateway's tracer: makes each request's :class:`RequestTrace`,
    writes the attempts' ``traceparent``, and owns the export pipeline.

    Built by ``service.build`` when tracing is configured; :meth:`start`
    begins exporting (after a daemonizing twistd forked), :meth:`close`
    flushes within ``shutdown_timeout`` seconds and never hangs shutdown."""

    def __init__(
        self,
        config: TracingConfig,
        reactor: Any,
        registry: Any = None,
        exporter: SpanExporter | None = None,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.capture_content = config.capture_content
        self.shutdown_timeout = shutdown_timeout
        attributes = {"service.version": __version__}
        if config.service_name is not None:
            attributes["service.name"] = config.service_name
        resource = Resource.create(attributes)
        if resource.attributes.get("service.name", "").startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "twisted-gw"}))
        # no atexit flush: a collector that is down must not hold the exit
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.tracer = self.provider.get_tracer("twisted_gw", __version__)
        self._exporter = exporter
        self._dropped = _drop_counter(registry)
        self.export: BoundedExport | None = None

    def start(self) -> None:
        """Start the export thread (idempotent)."""
        if self.export is not None:
            return
        exporter = self._exporter
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=self.config.endpoint)
        _route_sdk_logs()
        self.export = BoundedExport(exporter, self.config.max_queue_size, self._dropped)
        self.provider.add_span_processor(self.export)

    def begin(self, request: Request, ctx: RequestContext) -> RequestTrace | None:
        """The request arrived: its SERVER span starts, the child of the
        client's ``traceparent`` if it sent one (None, and a log line, if
        that fails: the request goes on untraced)."""
        try:
            return self._begin(request, ctx)
        except Exception:  # noqa: BLE001 - tracing must never fail a request
            log.failure("request {rid}: tracing failed to begin", Failure(), rid=ctx.request_id)
            return None

    def _begin(self, request: Request, ctx: RequestContext) -> RequestTrace:
        parent = _propagator.extract(request.requestHeaders, getter=_HeadersGetter)
        span = self.tracer.start_span(
            "chat",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": ctx.method,
                "http.route": ctx.endpoint,
                "url.path": ctx.path[:256],
                "twisted_gw.request_id": ctx.request_id,
            },
        )
        return RequestTrace(self, span, ctx)

    def inject(self, url: str, headers: dict[bytes, list[bytes]]) -> None:
        """An upstream request is being sent: when an attempt's span is
        current, ``traceparent`` (its span id) goes with it, and the span
        learns ``server.address``/``server.port`` from the URL."""
        span = otel_trace.get_current_span()
        if not span.get_span_context().is_valid:
            return
        _propagator.inject(headers, setter=_HeadersSetter)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return
        if parts.hostname:
            span.set_attribute("server.address", parts.hostname)
        if port is None:
            port = 443 if parts.scheme == "https" else 80
        span.set_attribute("server.port", port)

    def close(self) -> defer.Deferred:
        """Export what is queued and stop, waiting at most ``shutdown_timeout``
        seconds: the SDK's shutdown runs in a thread of its own (a hung
        collector would hold it for the exporter's whole timeout), and what
        has not gone by then is given up, never waited for."""
        done: defer.Deferred = defer.Deferred()
        if self.export is None:
            done.callback(None)
            return done
        reactor = self.reactor
        over = threading.Event()

        def finished() -> None:
            if not done.called:
                done.callback(None)

        def run() -> None:
            try:
                self.provider.shutdown()
            except Exception:  # noqa: BLE001 - logged; shutdown goes on
                log.failure("tracing: shutdown failed", Failure())
            if not over.is_set():
                with contextlib.suppress(Exception):  # the reactor is gone already
                    reactor.callFromThread(finished)

        threading.Thread(target=run, name="twisted-gw-trace-shutdown", daemon=True).start()
        timer = reactor.callLater(self.shutdown_timeout, finished)

        def settled(result: object) -> object:
            over.set()
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(settled)


class _ToGatewayLog(logging.Handler):
    """The SDK's own warnings (a collector that refuses, an export given up)
    as the gateway's log lines, escaped (CONTRACT 5.4), not bare stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed SDK message still says something
            message = str(record.msg)
        _sdk_log.warn("tracing: {message}", message=escape(message[:1000]))


_sdk_log = Logger(namespace="twisted_gw.observability.tracing.sdk")


def _route_sdk_logs() -> None:
    logger = logging.getLogger("opentelemetry")
    if not any(isinstance(h, _ToGatewayLog) for h in logger.handlers):
        handler = _ToGatewayLog(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False


def _drop_counter(registry: Any) -> Any:
    """``twisted_gw_trace_spans_dropped_total{reason}``: reason -> its child
    (both reasons shown from the start, at 0)."""
    from prometheus_client import CollectorRegistry, Counter

    counter = Counter(
        "twisted_gw_trace_spans_dropped",
        "Spans not exported: the export queue was full, or their export failed.",
        ["reason"],
        registry=registry if registry is not None else CollectorRegistry(),
    )
    children = {reason: counter.labels(reason) for reason in ("queue_full", "export_failed")}
    return children.__getitem__


@implementer(IHook)
class TracingHook:
    """Ends each request's spans at its finalize (exactly once, every path)."""

    name = "tracing"

    def pre_call(self, ctx: RequestContext) -> None:
        return None

    def post_call(self, ctx: RequestContext) -> None:
        pass

    def finalize(self, ctx: RequestContext) -> None:
        trace = ctx.trace
        if trace is not None:
            trace.end()
