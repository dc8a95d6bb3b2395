"""CONTRACT 5.3 in process: the ``observability.tracing`` config and its
OpenTelemetry variables, the export gate that counts what is dropped, the
bounded shutdown, and a request's spans on paths the black-box tests do not
reach (an in-memory exporter, no sockets)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from twisted_gw.config.file import ConfigError, TracingConfig, load_config
from twisted_gw.observability.tracing import (
    CONTENT_BUDGET,
    BoundedExport,
    Tracing,
    bounded_messages,
    provider_name,
)


def load(tmp_path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(str(path), environ=environ or {})


# -- config ------------------------------------------------------------------------------


def test_tracing_is_off_without_an_endpoint(tmp_path):
    assert load(tmp_path, "observability: {tracing: {capture_content: true}}\n").tracing is None
    assert load(tmp_path, "{}\n").tracing is None


def test_the_config_endpoint_turns_tracing_on_with_its_defaults(tmp_path):
    config = load(
        tmp_path, "observability: {tracing: {endpoint: 'http://127.0.0.1:4318/v1/traces'}}\n"
    )
    assert config.tracing == TracingConfig(
        endpoint="http://127.0.0.1:4318/v1/traces",
        capture_content=False,
        service_name=None,
        max_queue_size=2048,
    )
    assert config.warnings == ()


def test_every_tracing_key_is_read(tmp_path):
    config = load(
        tmp_path,
        "observability:\n  tracing:\n    endpoint: https://otel.example/v1/traces\n"
        "    capture_content: true\n    service_name: edge-gw\n    max_queue_size: 16\n",
    )
    assert config.tracing == TracingConfig("https://otel.example/v1/traces", True, "edge-gw", 16)


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
            "http://c:4318/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/custom"}, "http://c:9/custom"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/otlp"}, "https://c/otlp/v1/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
            },
            "http://traces:4318/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None),
    ],
)
def test_the_standard_variables_name_the_endpoint(tmp_path, environ, endpoint):
    tracing = load(tmp_path, "{}\n", environ).tracing
    assert (tracing.endpoint if tracing else None) == endpoint


def test_the_config_endpoint_wins_over_the_variables(tmp_path):
    config = load(
        tmp_path,
        "observability: {tracing: {endpoint: 'http://file:4318/v1/traces'}}\n",
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:4318/v1/traces"},
    )
    assert config.tracing.endpoint == "http://file:4318/v1/traces"


def test_otel_sdk_disabled_turns_tracing_off(tmp_path):
    config = load(
        tmp_path,
        "observability: {tracing: {endpoint: 'http://file:4318/v1/traces'}}\n",
        {"OTEL_SDK_DISABLED": "TRUE"},
    )
    assert config.tracing is None


def test_a_variable_that_is_not_a_url_fails_start_up_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="^OTEL_EXPORTER_OTLP_ENDPOINT must start with http"):
        load(tmp_path, "{}\n", {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "observability: {tracing: {endpoint: 'ftp://x'}}",
            "observability.tracing.endpoint must start with http:// or https://",
        ),
        (
            "observability: {tracing: {endpoint: 4318}}",
            "observability.tracing.endpoint must be a http:// or https:// URL, got an integer",
        ),
        (
            "observability: {tracing: {capture_content: 'yes'}}",
            "observability.tracing.capture_content must be true or false, got a string",
        ),
        (
            "observability: {tracing: {max_queue_size: 0}}",
            "observability.tracing.max_queue_size must be a positive integer, got 0",
        ),
        (
            "observability: {tracing: {service_name: [a]}}",
            "observability.tracing.service_name must be a string, got a list",
        ),
        ("observability: {tracing: on}", "observability.tracing must be a mapping, got a boolean"),
    ],
)
def test_wrong_tracing_values_fail_start_up_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text + "\n")
    assert str(e.value) == message


def test_an_unknown_tracing_key_is_a_warning_with_the_nearest_known_key(tmp_path):
    config = load(tmp_path, "observability: {tracing: {endpiont: 'http://x/v1/traces'}}\n")
    assert config.tracing is None
    assert config.warnings == (
        "unknown config key 'observability.tracing.endpiont' (did you mean 'endpoint'?)",
    )


# -- pure pieces --------------------------------------------------------------------------


def test_provider_names_follow_the_genai_conventions():
    assert provider_name("openai") == "openai"
    assert provider_name("gemini") == "gcp.gemini"
    assert provider_name("provider:bedrock") == "aws.bedrock"
    assert provider_name("provider:azure") == "azure.ai.openai"
    assert provider_name("anthropic") == "anthropic"


def test_captured_messages_are_bounded_in_all():
    text = bounded_messages([("user", "a" * CONTENT_BUDGET, None), ("user", "never", None)])
    assert "never" not in text
    assert text.count("a") >= CONTENT_BUDGET


# -- the export gate ---------------------------------------------------------------------


class Drops:
    """The gate's counter children, as plain numbers."""

    def __init__(self) -> None:
        self.counts = {"queue_full": 0, "export_failed": 0}

    def __call__(self, reason: str):
        drops = self

        class Child:
            def inc(self, n: int = 1) -> None:
                drops.counts[reason] += n

        return Child()


class BlockingExporter(SpanExporter):
    """Holds every export until released (a collector that never answers)."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.result = result
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.exported.extend(spans)
        return self.result

    def shutdown(self) -> None:
        self.release.set()


def make_spans(gate: BoundedExport, n: int) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(gate)
    tracer = provider.get_tracer("test")
    for _ in range(n):
        tracer.start_span("s").end()


def test_a_full_queue_drops_and_counts_instead_of_the_sdk_dropping_silently():
    exporter = BlockingExporter()
    drops = Drops()
    gate = BoundedExport(exporter, 3, drops, schedule_delay_millis=10)
    make_spans(gate, 1)
    assert exporter.entered.wait(5)  # the first span's export is stuck
    make_spans(gate, 10)
    assert gate.waiting == 3  # the queue is full, and never more than full
    assert drops.counts == {"queue_full": 7, "export_failed": 0}
    exporter.release.set()
    gate.shutdown()
    assert len(exporter.exported) == 4  # the one stuck, then the three queued
    assert drops.counts["queue_full"] == 7


def test_spans_of_a_failed_export_are_counted():
    exporter = BlockingExporter(SpanExportResult.FAILURE)
    exporter.release.set()
    drops = Drops()
    gate = BoundedExport(exporter, 100, drops, schedule_delay_millis=10)
    make_spans(gate, 5)
    gate.shutdown()
    assert drops.counts == {"queue_full": 0, "export_failed": 5}


def test_the_drop_counter_is_on_the_gateway_registry_from_the_start():
    registry = CollectorRegistry()
    config = TracingConfig("http://127.0.0.1:1/v1/traces", False, None, 8)
    Tracing(config, Clock(), registry, exporter=InMemorySpanExporter())
    for reason in ("queue_full", "export_failed"):
        value = registry.get_sample_value(
            "twisted_gw_trace_spans_dropped_total", {"reason": reason}
        )
        assert value == 0


# -- shutdown ------------------------------------------------------------------------------


def test_close_gives_up_on_a_stuck_export_after_its_bound():
    """The SDK would wait 30 s for a collector that never answers; close
    fires at its bound (a Clock here, so no real waiting)."""
    clock = Clock()
    clock.callFromThread = lambda f, *a: None  # the thread's late answer is not awaited
    exporter = BlockingExporter()
    config = TracingConfig("http://127.0.0.1:1/v1/traces", False, None, 8)
    tracing = Tracing(config, clock, CollectorRegistry(), exporter=exporter, shutdown_timeout=1.5)
    tracing.start()
    tracing.tracer.start_span("stuck").end()
    closed = tracing.close()
    assert not closed.called
    clock.advance(1.5)
    assert closed.called
    exporter.release.set()


def test_close_without_start_is_at_once():
    config = TracingConfig("http://127.0.0.1:1/v1/traces", False, None, 8)
    tracing = Tracing(config, Clock(), CollectorRegistry(), exporter=InMemorySpanExporter())
    assert tracing.close().called


# -- a request's spans, in memory ------------------------------------------------------


CHAT = "/v1/chat/completions"
CHUNK = {
    "id": "c1",
    "model": "x-up",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}],
}


@pytest.fixture
def traced():
    """A MemoryGateway with tracing on, its spans in memory (exported as they end)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from twisted_gw.observability.tracing import TracingHook
    from twisted_gw.testing import MemoryGateway

    gw = MemoryGateway(hooks=[TracingHook()])
    config = TracingConfig("http://127.0.0.1:1/v1/traces", True, None, 8)
    gw.tracing = Tracing(config, gw.clock, CollectorRegistry())
    gw.spans = InMemorySpanExporter()
    gw.tracing.provider.add_span_processor(SimpleSpanProcessor(gw.spans))
    gw.proxy.tracing = gw.tracing
    gw.add_model("gpt", timeout=30_000)
    gw.key = gw.add_key(["gpt", "claude"])
    gw.add_model("claude", "anthropic/claude-up")
    return gw


def finished(gw) -> tuple:
    """(the server span, its attempt spans) of the one request."""
    spans = gw.spans.get_finished_spans()
    (server,) = [s for s in spans if s.kind.name == "SERVER"]
    return server, [s for s in spans if s.kind.name == "CLIENT"]


def stream_chat(gw):
    doc = {"model": "gpt", "messages": [{"role": "user", "content": "a"}], "stream": True}
    pending = gw.post(CHAT, doc, gw.key)
    gw.flush()
    return pending, gw.provider.calls[-1].stream()


def test_a_stream_stalled_mid_way_ends_its_spans_as_timeout(traced):
    pending, source = stream_chat(traced)
    source.push(CHUNK)
    traced.flush()
    traced.clock.advance(30)
    response = traced.result(pending)
    assert response.code == 200 and traced.ends == ["timeout"]
    server, (attempt,) = finished(traced)
    assert server.attributes["twisted_gw.end"] == "timeout"
    assert server.attributes["error.type"] == "timeout"
    assert server.status.status_code.name == "ERROR"
    assert attempt.attributes["error.type"] == "timeout"
    assert attempt.attributes["gen_ai.response.model"] == "x-up"
    # capture_content: the text relayed before the cut
    assert "hel" in server.attributes["gen_ai.output.messages"]


def test_a_cut_stream_ends_its_spans_as_upstream_cut(traced):
    pending, source = stream_chat(traced)
    source.push(CHUNK)
    source.end(clean=False, detail="connection lost")
    traced.result(pending)
    server, (attempt,) = finished(traced)
    assert server.attributes["error.type"] == "upstream_cut"
    assert attempt.attributes["error.type"] == "upstream_cut"
    assert attempt.attributes["http.response.status_code"] == 200


def test_a_native_messages_stream_reads_anthropic_events(traced):
    doc = {
        "model": "claude",
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "a"}],
        "stream": True,
    }
    pending = traced.post("/v1/messages", doc, traced.key)
    traced.flush()
    source = traced.providers["anthropic"].calls[-1].stream()
    source.push(
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "claude-up-2", "usage": {"input_tokens": 5}},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "yo"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        },
    )
    source.end(clean=True)
    traced.result(pending)
    server, (attempt,) = finished(traced)
    assert server.name == "chat claude"
    assert attempt.name == "chat claude-up"
    assert attempt.attributes["gen_ai.provider.name"] == "anthropic"
    for span in (server, attempt):
        assert span.attributes["gen_ai.response.model"] == "claude-up-2"
        assert span.attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
        assert span.attributes["gen_ai.usage.input_tokens"] == 5
        assert span.attributes["gen_ai.usage.output_tokens"] == 2
    assert "yo" in server.attributes["gen_ai.output.messages"]


def test_a_tracing_failure_never_fails_the_request(traced):
    class Broken:
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer down")

    traced.tracing.tracer = Broken()
    doc = {"model": "gpt", "messages": [{"role": "user", "content": "a"}]}
    pending = traced.post(CHAT, doc, traced.key)
    traced.flush()
    traced.provider.calls[-1].answer({"id": "x", "choices": [], "usage": {}})
    assert traced.result(pending).code == 200
    assert traced.ends == ["ok"]
    assert traced.spans.get_finished_spans() == ()


def test_a_failing_trace_method_is_logged_and_the_request_goes_on(traced, monkeypatch):
    from twisted_gw.observability import tracing

    monkeypatch.setattr(tracing, "provider_name", lambda name: 1 / 0)
    doc = {"model": "gpt", "messages": [{"role": "user", "content": "a"}]}
    pending = traced.post(CHAT, doc, traced.key)
    traced.flush()
    traced.provider.calls[-1].answer({"id": "x", "choices": [], "usage": {}})
    assert traced.result(pending).code == 200 and traced.ends == ["ok"]


def test_without_tracing_a_request_has_no_trace():
    from twisted_gw.testing import MemoryGateway

    seen = []

    class Look:
        name = "look"

        def pre_call(self, ctx):
            seen.append(ctx.trace)

        def post_call(self, ctx):
            pass

        def finalize(self, ctx):
            seen.append(ctx.trace)

    gw = MemoryGateway(hooks=[Look()])
    gw.add_model("gpt")
    key = gw.add_key(["gpt"])
    pending = gw.post(CHAT, {"model": "gpt", "messages": [{"role": "user", "content": "a"}]}, key)
    gw.flush()
    gw.provider.calls[-1].answer({"id": "x", "choices": [], "usage": {}})
    assert gw.result(pending).code == 200
    assert seen == [None, None]
    assert gw.proxy.tracing is None
