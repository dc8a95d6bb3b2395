"""A real OTLP/HTTP traces receiver on a socket, for black-box tracing tests.

The gateway under test exports with the OpenTelemetry SDK's OTLP/HTTP
protobuf exporter; this receiver, hosted by the test process's reactor,
accepts ``POST /v1/traces``, decodes each body with opentelemetry-proto's
``ExportTraceServiceRequest`` and keeps every span as a plain
:class:`ReceivedSpan`. ``hang=True`` makes it a collector that accepts but
never answers. Waiting is on Deferreds fired by the export itself, with a
deadline, never a sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

KINDS = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    if kind is None:
        return None
    return getattr(any_value, kind)


@dataclass
class ReceivedSpan:
    """One span as the collector got it (ids as lowercase hex)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any]
    start_ns: int
    end_ns: int
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class _Traces(Resource):
    isLeaf = True

    def __init__(self, receiver: OTLPReceiver) -> None:
        super().__init__()
        self.receiver = receiver

    def render_POST(self, request: Request) -> bytes | int:
        receiver = self.receiver
        receiver.posts += 1
        if request.path != b"/v1/traces":
            request.setResponseCode(404)
            return b""
        if receiver.hang:
            receiver.held.append(request)  # accepted, never answered
            receiver.wake()  # a waiter may be waiting for the post itself
            return NOT_DONE_YET
        message = ExportTraceServiceRequest()
        message.ParseFromString(request.content.read())
        receiver.record(message)
        request.setHeader(b"content-type", b"application/x-protobuf")
        return ExportTraceServiceResponse().SerializeToString()


class OTLPReceiver:
    """``POST /v1/traces`` on 127.0.0.1, every span kept in :attr:`spans`."""

    def __init__(self, reactor: Any = None, hang: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.hang = hang
        self.spans: list[ReceivedSpan] = []
        self.posts = 0
        self.held: list[Request] = []
        self._port: Any = None
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred]] = []

    def start(self) -> int:
        self._port = self.reactor.listenTCP(0, Site(_Traces(self)), interface="127.0.0.1")
        return self.port

    @property
    def port(self) -> int:
        return self._port.getHost().port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def stop(self) -> defer.Deferred:
        for request in self.held:
            if request.channel is not None:
                request.channel.transport.abortConnection()
        self.held = []
        return defer.maybeDeferred(self._port.stopListening)

    def record(self, message: ExportTraceServiceRequest) -> None:
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status=span.status.code,
                            resource=resource,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            events=[
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in span.events
                            ],
                        )
                    )
        self.wake()

    def wake(self) -> None:
        """Fire the waiters whose condition now holds."""
        waiting, self._waiters = self._waiters, []
        for ready, d in waiting:
            if ready():
                d.callback(None)
            else:
                self._waiters.append((ready, d))

    def wait_for(self, ready: Callable[[], bool], timeout: float = 10.0) -> defer.Deferred:
        """Fires once ``ready()`` holds (checked at each post), or fails
        with a TimeoutError after ``timeout`` seconds."""
        if ready():
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((ready, d))
        return d.addTimeout(timeout, self.reactor)

    def request_spans(self, request_id: str) -> list[ReceivedSpan]:
        """The server span with ``twisted_gw.request_id`` and every span of its trace."""
        server = [s for s in self.spans if s.attributes.get("twisted_gw.request_id") == request_id]
        if not server:
            return []
        trace_id = server[0].trace_id
        return [s for s in self.spans if s.trace_id == trace_id]

    async def trace_of(
        self, request_id: str, spans: int, timeout: float = 10.0
    ) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
        """(the server span, its attempt spans) of ``request_id``, once
        ``spans`` spans of its trace came."""
        await self.wait_for(lambda: len(self.request_spans(request_id)) >= spans, timeout)
        found = self.request_spans(request_id)
        (server,) = [s for s in found if s.kind == "server"]
        attempts = sorted(
            (s for s in found if s.parent_span_id == server.span_id), key=lambda s: s.start_ns
        )
        return server, attempts
