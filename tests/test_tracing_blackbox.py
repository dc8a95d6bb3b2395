"""CONTRACT 5.3, black-box: OpenTelemetry traces of the real gateway process,
exported over OTLP/HTTP protobuf to a real receiver in this test's reactor
(tests/support/otlp_receiver.py), for requests to real mock upstreams.

The gateway's batch processor is told (``OTEL_BSP_SCHEDULE_DELAY``) to export
every 50 ms, so a test waits for its spans by awaiting the receiver, with a
deadline, never by sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.conftest import SESSION_LOGS, Gateway, secret
from tests.streamcheck import no_unhandled_errors
from tests.support.gateway import GatewayProcess, free_port, treq_json, write_config
from tests.support.mock_upstream import (
    DEFAULT_CONTENT,
    DEFAULT_USAGE,
    MockUpstream,
    chat_chunk,
    sse_event,
)
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.test_metrics_and_access_log import chat_doc, scrape, stream

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
DROPPED = "twisted_gw_trace_spans_dropped_total"
#: export at once: the tests wait for spans, not for the SDK's 5 s default
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


def start_traced_gateway(
    directory: Any,
    tracing: dict[str, Any] | None,
    env: dict[str, str] | None = None,
    fast: bool = True,
) -> Gateway:
    """A real gateway whose ``observability.tracing`` is ``tracing``."""
    proxy_port, admin_port = free_port(), free_port()
    extra = {"observability": {"tracing": tracing}} if tracing is not None else None
    config = write_config(directory, proxy_port, admin_port, extra=extra)
    process = GatewayProcess(config, env={**(FAST_EXPORT if fast else {}), **(env or {})})
    process.start()
    SESSION_LOGS.append(process)
    process.wait_ready([proxy_port, admin_port])
    return Gateway(process, proxy_port, admin_port, config)


@pytest.fixture(scope="module")
def receiver():
    collector = OTLPReceiver()
    collector.start()
    yield collector
    pytest_twisted.blockon(collector.stop())


@pytest.fixture(scope="module")
def gw(tmp_path_factory, receiver):
    gateway = start_traced_gateway(
        tmp_path_factory.mktemp("tracing"), {"endpoint": receiver.endpoint}
    )
    yield gateway
    stop(gateway)
    no_unhandled_errors(gateway.process)


@pytest.fixture(scope="module")
def upstream():
    mock = MockUpstream()
    mock.start()
    yield mock
    pytest_twisted.blockon(mock.stop())


@pytest.fixture
def up(upstream):
    upstream.reset()
    return upstream


@pytest.fixture(scope="module")
def refused():
    """An ``api_base`` whose every connection is refused (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


def stop(gw: Gateway, within: float = 10.0) -> float:
    """Stop the gateway with SIGTERM; it must exit by itself (twistd ends
    with the signal's own status, the console script with 0), never need the
    kill; how long it took."""
    started = time.monotonic()
    code = gw.process.stop(timeout=within)
    assert code in (0, -signal.SIGTERM), gw.process.output
    return time.monotonic() - started


async def astop(gw: Gateway, within: float = 10.0) -> float:
    """:func:`stop` for a reactor that must keep serving meanwhile (it hosts
    the collector the gateway flushes to); polls the other process's exit."""
    from twisted.internet import reactor, task

    started = time.monotonic()
    os.kill(gw.process.pid, signal.SIGTERM)
    while gw.process.returncode is None:
        assert time.monotonic() - started < within, gw.process.output
        await task.deferLater(reactor, 0.02, lambda: None)
    assert gw.process.returncode in (0, -signal.SIGTERM), gw.process.output
    return time.monotonic() - started


def pc(base: str) -> dict[str, str]:
    return {"api_key": secret("sk-provider"), "api_base": base}


async def new_model(gw: Gateway, base: str, model: str = "openai/gpt-up", **extra: Any) -> str:
    name = f"tr-{uuid.uuid4().hex[:8]}"
    await gw.add_model(name, model, pc(base), **extra)
    return name


def traceparent() -> tuple[str, str, str]:
    """A fresh sampled W3C traceparent: (header, trace id, parent span id)."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def upstream_traceparent(request: Any) -> tuple[str, str]:
    """(trace id, span id) of the traceparent an upstream request carried."""
    version, trace_id, span_id, flags = request.headers["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    return trace_id, span_id


def assert_child(child: ReceivedSpan, parent: ReceivedSpan) -> None:
    assert child.trace_id == parent.trace_id
    assert child.parent_span_id == parent.span_id


def no_content(span: ReceivedSpan, *texts: str) -> None:
    assert "gen_ai.input.messages" not in span.attributes
    assert "gen_ai.output.messages" not in span.attributes
    blob = json.dumps(span.attributes, default=str) + json.dumps(span.events, default=str)
    for text in texts:
        assert text not in blob


# -- a request's trace -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_chat_exports_a_server_span_continuing_the_client_trace_and_one_attempt_span(
    gw, receiver, up
):
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    header, trace_id, client_span = traceparent()
    doc = {**chat_doc(name, prompt="secret prompt text"), "max_tokens": 64}
    status, headers, body = await treq_json(
        "POST",
        gw.proxy + CHAT,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "traceparent": header,
        },
        json_body=doc,
    )
    assert status == 200, body
    server, attempts = await receiver.trace_of(headers["x-request-id"], 2)

    assert (server.name, server.kind) == (f"chat {name}", "server")
    assert (server.trace_id, server.parent_span_id) == (trace_id, client_span)
    assert server.resource["service.name"] == "twisted-gw"
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == name
    assert a["gen_ai.response.model"] == "gpt-up"  # the upstream answer's model
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.usage.input_tokens"] == DEFAULT_USAGE["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == DEFAULT_USAGE["completion_tokens"]
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["http.response.status_code"] == 200
    assert a["twisted_gw.end"] == "ok"
    assert a["twisted_gw.attempts"] == 1
    assert "error.type" not in a
    assert server.status == 0

    (attempt,) = attempts
    assert_child(attempt, server)
    assert (attempt.name, attempt.kind) == ("chat gpt-up", "client")
    b = attempt.attributes
    assert b["server.address"] == "127.0.0.1"
    assert b["server.port"] == up.port
    assert b["gen_ai.operation.name"] == "chat"
    assert b["gen_ai.provider.name"] == "openai"
    assert b["gen_ai.request.model"] == "gpt-up"  # what the attempt asked its upstream for
    assert b["gen_ai.response.model"] == "gpt-up"
    assert b["http.response.status_code"] == 200
    assert b["gen_ai.usage.input_tokens"] == DEFAULT_USAGE["prompt_tokens"]
    assert b["twisted_gw.target"] == "0"
    assert "error.type" not in b
    assert server.start_ns <= attempt.start_ns <= attempt.end_ns <= server.end_ns

    # the upstream got the attempt's own span id, in the client's trace
    (request,) = up.requests
    assert upstream_traceparent(request) == (trace_id, attempt.span_id)
    no_content(server, "secret prompt text", DEFAULT_CONTENT)
    no_content(attempt, "secret prompt text", DEFAULT_CONTENT)


@pytest_twisted.ensureDeferred
async def test_a_request_without_traceparent_starts_a_new_trace(gw, receiver, up):
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    status, headers, _ = await gw.chat(key, chat_doc(name))
    assert status == 200
    server, (attempt,) = await receiver.trace_of(headers["x-request-id"], 2)
    assert server.parent_span_id == ""
    assert_child(attempt, server)
    assert upstream_traceparent(up.requests[0]) == (server.trace_id, attempt.span_id)


@pytest_twisted.ensureDeferred
async def test_a_retried_request_has_one_attempt_span_per_attempt(gw, receiver, refused, up):
    name = await new_model(
        gw,
        refused,
        "openai/gpt-first",
        targets=[{"model": "openai/gpt-second", "provider_config": pc(up.base_url), "priority": 1}],
    )
    key = await gw.add_key([name])
    status, headers, _ = await gw.chat(key, chat_doc(name))
    assert (status, headers["x-gateway-attempts"]) == (200, "2")
    server, attempts = await receiver.trace_of(headers["x-request-id"], 3)
    first, second = attempts
    for attempt in attempts:
        assert_child(attempt, server)
        assert attempt.kind == "client"
    assert first.name == "chat gpt-first"
    assert first.attributes["error.type"] == "connect"
    assert first.attributes["server.address"] == "127.0.0.1"
    assert first.status == 2
    assert first.end_ns <= second.start_ns
    assert second.name == "chat gpt-second"
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["twisted_gw.target"] == "1"
    assert "error.type" not in second.attributes
    assert server.attributes["twisted_gw.attempts"] == 2
    assert server.attributes["twisted_gw.target"] == f"{name}#1"
    assert server.attributes["gen_ai.response.model"] == "gpt-second"
    assert upstream_traceparent(up.requests[0]) == (server.trace_id, second.span_id)


@pytest_twisted.ensureDeferred
async def test_an_upstream_status_retried_is_on_its_attempt_span(gw, receiver, upstream):
    failing, ok = MockUpstream(), upstream
    failing.start()
    try:
        ok.reset()
        failing.set_json(CHAT, {"error": {"message": "busy", "type": "server_error"}}, status=503)
        name = await new_model(
            gw,
            failing.base_url,
            targets=[{"model": "openai/gpt-ok", "provider_config": pc(ok.base_url), "priority": 1}],
        )
        key = await gw.add_key([name])
        status, headers, _ = await gw.chat(key, chat_doc(name))
        assert status == 200
        server, (first, second) = await receiver.trace_of(headers["x-request-id"], 3)
        assert first.attributes["http.response.status_code"] == 503
        assert first.attributes["error.type"] == "503"
        assert second.attributes["http.response.status_code"] == 200
        # each attempt told its own upstream its own span id
        assert upstream_traceparent(failing.requests[0]) == (server.trace_id, first.span_id)
        assert upstream_traceparent(ok.requests[0]) == (server.trace_id, second.span_id)
    finally:
        await failing.stop()


@pytest_twisted.ensureDeferred
async def test_a_failed_request_exports_error_type_on_both_spans(gw, receiver, refused):
    name = await new_model(gw, refused)
    key = await gw.add_key([name])
    status, headers, _ = await gw.chat(key, chat_doc(name))
    assert status == 502
    server, (attempt,) = await receiver.trace_of(headers["x-request-id"], 2)
    assert server.attributes["error.type"] == "provider_error"
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["twisted_gw.end"] == "upstream_error"
    assert server.status == 2
    assert attempt.attributes["error.type"] == "connect"


@pytest_twisted.ensureDeferred
async def test_embeddings_span_is_named_for_its_operation(gw, receiver, up):
    name = await new_model(gw, up.base_url, "openai/text-embed")
    key = await gw.add_key([name])
    status, headers, body = await gw.chat(key, {"model": name, "input": "hello"}, path=EMBEDDINGS)
    assert status == 200, body
    server, (attempt,) = await receiver.trace_of(headers["x-request-id"], 2)
    assert server.name == f"embeddings {name}"
    assert server.attributes["gen_ai.operation.name"] == "embeddings"
    assert attempt.name == "embeddings text-embed"
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"


@pytest_twisted.ensureDeferred
async def test_a_stream_span_ends_at_finalize_with_the_usage_chunk(gw, receiver, up):
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    result = await stream(gw, key, name)
    assert result.status == 200
    assert result.data[-1] == "[DONE]"
    server, (attempt,) = await receiver.trace_of(result.headers["x-request-id"], 2)
    for span in (server, attempt):
        a = span.attributes
        assert a["gen_ai.usage.input_tokens"] == DEFAULT_USAGE["prompt_tokens"]
        assert a["gen_ai.usage.output_tokens"] == DEFAULT_USAGE["completion_tokens"]
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        assert a["gen_ai.response.model"] == "gpt-up"
    assert server.attributes["twisted_gw.end"] == "done"
    assert server.name == f"chat {name}"
    # the attempt lasts as long as the upstream stream did
    assert attempt.end_ns <= server.end_ns
    no_content(server, DEFAULT_CONTENT.split(" ")[0] + " from")


@pytest_twisted.ensureDeferred
async def test_a_client_gone_mid_stream_ends_its_spans_as_client_gone(gw, receiver, up):
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    up.set_sse(CHAT, [sse_event(chat_chunk("one", role="assistant"))], end="hang")
    result = await stream(gw, key, name, stop_when=lambda body: b"one" in body)
    assert result.ended == "stopped"
    server, (attempt,) = await receiver.trace_of(result.headers["x-request-id"], 2)
    assert server.attributes["twisted_gw.end"] == "client_gone"
    assert server.attributes["error.type"] == "client_gone"
    assert attempt.attributes["error.type"] == "client_gone"


# -- refused before any upstream call ----------------------------------------------------


async def refused_span(receiver: OTLPReceiver, headers: dict[str, str]) -> ReceivedSpan:
    server, attempts = await receiver.trace_of(headers["x-request-id"], 1)
    assert attempts == []
    assert server.attributes["twisted_gw.attempts"] == 0
    assert server.attributes["twisted_gw.end"] == "rejected"
    return server


@pytest_twisted.ensureDeferred
async def test_401s_export_their_server_span_with_error_type(gw, receiver):
    status, headers, _ = await gw.chat(None, chat_doc("anything"))
    assert status == 401
    server = await refused_span(receiver, headers)
    assert server.name == "chat"  # the body is not read before the key
    assert server.attributes["error.type"] == "401"
    assert server.attributes["http.response.status_code"] == 401
    assert server.status == 0  # a client's error, not the server's

    status, headers, _ = await gw.chat(secret("sk-unknown"), chat_doc("anything"))
    assert status == 401
    assert (await refused_span(receiver, headers)).attributes["error.type"] == "401"


@pytest_twisted.ensureDeferred
async def test_429_400_403_and_404_export_their_server_span_with_error_type(gw, receiver, up):
    name = await new_model(gw, up.base_url)
    key, _ = await gw.add_key_with_id([name], rate_limit={"rpm": 1})
    status, _, _ = await gw.chat(key, chat_doc(name))
    assert status == 200
    status, headers, _ = await gw.chat(key, chat_doc(name))
    assert status == 429
    server = await refused_span(receiver, headers)
    assert server.name == f"chat {name}"
    assert server.attributes["error.type"] == "rate_limit_exceeded"
    assert server.attributes["gen_ai.request.model"] == name
    assert server.attributes["http.response.status_code"] == 429

    other = await gw.add_key([name])
    status, headers, _ = await gw.chat(other, chat_doc("no-such-model"))
    assert status == 400
    server = await refused_span(receiver, headers)
    assert server.attributes["error.type"] == "model_not_found"
    assert server.name == "chat no-such-model"

    forbidden = await new_model(gw, up.base_url)
    status, headers, _ = await gw.chat(other, chat_doc(forbidden))
    assert status == 403
    server = await refused_span(receiver, headers)
    assert server.attributes["error.type"] == "model_access_forbidden"

    status, headers, _ = await treq_json(
        "POST", gw.proxy + "/v1/nowhere", headers={"Authorization": f"Bearer {other}"}
    )
    assert status == 404
    server = await refused_span(receiver, headers)
    assert server.name == "POST"  # no route: the method alone, as HTTP spans are named
    assert server.attributes["error.type"] == "not_found"


# -- content -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def content_gw(tmp_path_factory, receiver):
    gateway = start_traced_gateway(
        tmp_path_factory.mktemp("tracing-content"),
        {"endpoint": receiver.endpoint, "capture_content": True, "service_name": "gw-content"},
    )
    yield gateway
    stop(gateway)


@pytest_twisted.ensureDeferred
async def test_capture_content_records_prompt_and_completion(content_gw, receiver, up):
    gw = content_gw
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    status, headers, _ = await gw.chat(key, chat_doc(name, prompt="tell me a story"))
    assert status == 200
    server, _ = await receiver.trace_of(headers["x-request-id"], 2)
    assert server.resource["service.name"] == "gw-content"
    inputs = json.loads(server.attributes["gen_ai.input.messages"])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "tell me a story"}]}]
    outputs = json.loads(server.attributes["gen_ai.output.messages"])
    assert outputs == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": DEFAULT_CONTENT}],
            "finish_reason": "stop",
        }
    ]

    result = await stream(gw, key, name, prompt="stream it")
    server, _ = await receiver.trace_of(result.headers["x-request-id"], 2)
    outputs = json.loads(server.attributes["gen_ai.output.messages"])
    assert outputs[0]["parts"][0]["content"] == DEFAULT_CONTENT


@pytest_twisted.ensureDeferred
async def test_captured_content_is_bounded(content_gw, receiver, up):
    gw = content_gw
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    status, headers, _ = await gw.chat(key, chat_doc(name, prompt="x" * 100_000))
    assert status == 200
    server, _ = await receiver.trace_of(headers["x-request-id"], 2)
    (message,) = json.loads(server.attributes["gen_ai.input.messages"])
    part = message["parts"][0]
    assert part["truncated"] is True
    assert len(part["content"]) == 16 * 1024


# -- a collector that is down or slow ----------------------------------------------------


async def answered_promptly(gw: Gateway, up: MockUpstream, n: int) -> None:
    """``n`` requests (half streams), all answered completely; the bound is a
    hang guard, not a timing claim."""
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    calls = []
    for i in range(n):
        if i % 2:
            calls.append(defer.ensureDeferred(stream(gw, key, name, timeout=5)))
        else:
            calls.append(defer.ensureDeferred(gw.chat(key, chat_doc(name), timeout=5)))
    for result in await defer.gatherResults(calls):
        if isinstance(result, tuple):
            assert result[0] == 200
        else:
            assert (result.status, result.ended, result.data[-1]) == (200, "done", "[DONE]")


async def dropped(gw: Gateway) -> float:
    samples = await scrape(gw)
    return sum(v for (name, _), v in samples.items() if name == DROPPED)


@pytest_twisted.ensureDeferred
async def test_a_collector_that_is_down_never_fails_a_request(tmp_path, refused, upstream):
    upstream.reset()
    down = refused.removesuffix("/v1") + "/v1/traces"
    gw = start_traced_gateway(tmp_path, {"endpoint": down})
    try:
        await answered_promptly(gw, upstream, 20)
        status, _, _ = await treq_json("GET", gw.admin + "/metrics")
        assert status == 200
    finally:
        assert stop(gw, within=8) < 5


@pytest_twisted.ensureDeferred
async def test_a_collector_that_never_answers_drops_and_counts_spans_past_the_queue(
    tmp_path, upstream
):
    upstream.reset()
    hanging = OTLPReceiver(hang=True)
    hanging.start()
    try:
        gw = start_traced_gateway(
            tmp_path,
            {"endpoint": hanging.endpoint, "max_queue_size": 2},
            env={"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "30"},
        )
        try:
            assert await dropped(gw) == 0
            await answered_promptly(gw, upstream, 20)  # 40 spans for a queue of 2
            # the export is stuck on the collector (its first batch leaves on
            # the exporter's own schedule, later on a loaded machine)
            await hanging.wait_for(lambda: hanging.posts >= 1)
            assert await dropped(gw) >= 30
            # and a stuck export does not hold the shutdown (bounded at ~1.5 s)
            assert stop(gw, within=8) < 5
        finally:
            gw.process.stop()
    finally:
        await hanging.stop()


@pytest_twisted.ensureDeferred
async def test_the_otel_endpoint_variable_turns_tracing_on(tmp_path, receiver, up):
    base = receiver.endpoint.removesuffix("/v1/traces")
    gw = start_traced_gateway(tmp_path, None, env={"OTEL_EXPORTER_OTLP_ENDPOINT": base})
    try:
        name = await new_model(gw, up.base_url)
        key = await gw.add_key([name])
        status, headers, _ = await gw.chat(key, chat_doc(name))
        assert status == 200
        server, (_,) = await receiver.trace_of(headers["x-request-id"], 2)
        assert server.name == f"chat {name}"
    finally:
        stop(gw)


@pytest_twisted.ensureDeferred
async def test_without_tracing_nothing_is_sent_upstream_or_counted(tmp_path, up):
    env = {k: "" for k in os.environ if k.startswith("OTEL_EXPORTER_OTLP")}
    gw = start_traced_gateway(tmp_path, None, env=env)
    try:
        name = await new_model(gw, up.base_url)
        key = await gw.add_key([name])
        status, _, _ = await gw.chat(key, chat_doc(name))
        assert status == 200
        assert "traceparent" not in up.requests[0].headers
        assert DROPPED not in {name for name, _ in await scrape(gw)}
    finally:
        stop(gw)


@pytest_twisted.ensureDeferred
async def test_an_attempt_that_timed_out_says_so(gw, receiver, up):
    up.set_delay(CHAT, 2.0)
    name = await new_model(gw, up.base_url, timeout=200)
    key = await gw.add_key([name])
    status, headers, _ = await gw.chat(key, chat_doc(name))
    assert status == 504
    server, (attempt,) = await receiver.trace_of(headers["x-request-id"], 2)
    assert attempt.attributes["error.type"] == "timeout"
    assert attempt.status == 2
    assert server.attributes["error.type"] == "request_timeout"
    assert server.attributes["twisted_gw.end"] == "timeout"


@pytest_twisted.ensureDeferred
async def test_a_messages_request_is_a_chat_span(gw, receiver, up):
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    doc = {"model": name, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
    status, headers, body = await gw.chat(key, doc, path="/v1/messages")
    assert status == 200, body
    server, (attempt,) = await receiver.trace_of(headers["x-request-id"], 2)
    assert server.name == f"chat {name}"
    assert server.attributes["http.route"] == "/v1/messages"
    assert server.attributes["gen_ai.request.max_tokens"] == 32
    assert server.attributes["gen_ai.usage.output_tokens"] == DEFAULT_USAGE["completion_tokens"]
    assert attempt.name == "chat gpt-up"


@pytest_twisted.ensureDeferred
async def test_spans_still_queued_are_flushed_when_the_gateway_stops(tmp_path, receiver, up):
    # the SDK's default 5 s between exports: only the shutdown can send these
    gw = start_traced_gateway(tmp_path, {"endpoint": receiver.endpoint}, fast=False)
    try:
        name = await new_model(gw, up.base_url)
        key = await gw.add_key([name])
        status, headers, _ = await gw.chat(key, chat_doc(name))
        assert status == 200
        assert receiver.request_spans(headers["x-request-id"]) == []
        # SIGTERM without blocking this reactor: the receiver must answer the flush
        took = await astop(gw)
    finally:
        stop(gw)
    server, (_,) = await receiver.trace_of(headers["x-request-id"], 2, timeout=1)
    assert server.name == f"chat {name}"
    assert took < 1.4  # the flush was answered, not given up at the 1.5 s bound


@pytest_twisted.ensureDeferred
async def test_a_fallback_is_an_attempt_span_of_the_same_server_span(gw, receiver, refused, up):
    backup = await new_model(gw, up.base_url, "openai/gpt-backup")
    name = await new_model(gw, refused, "openai/gpt-main", fallbacks=[backup])
    key = await gw.add_key([name, backup])
    status, headers, _ = await gw.chat(key, chat_doc(name))
    assert (status, headers["x-gateway-attempts"]) == (200, "2")
    server, (first, second) = await receiver.trace_of(headers["x-request-id"], 3)
    assert server.name == f"chat {name}"  # the client's model, whoever answered
    assert (first.name, first.attributes["twisted_gw.target"]) == ("chat gpt-main", "0")
    assert first.attributes["error.type"] == "connect"
    assert (second.name, second.attributes["twisted_gw.target"]) == (
        "chat gpt-backup",
        f"{backup}#0",
    )
    assert server.attributes["twisted_gw.target"] == f"{backup}#0"
    assert upstream_traceparent(up.requests[0]) == (server.trace_id, second.span_id)


@pytest_twisted.ensureDeferred
async def test_a_caller_that_did_not_sample_is_followed(gw, receiver, up):
    name = await new_model(gw, up.base_url)
    key = await gw.add_key([name])
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "traceparent": f"00-{trace_id}-{span_id}-00",
    }
    status, unsampled, _ = await treq_json(
        "POST", gw.proxy + CHAT, headers=headers, json_body=chat_doc(name)
    )
    assert status == 200
    # the trace goes on upstream, still unsampled, under a span id of ours
    upstream_trace, upstream_span, flags = up.requests[0].headers["traceparent"].split("-")[1:]
    assert (upstream_trace, int(flags, 16) & 1) == (trace_id, 0)
    assert upstream_span != span_id
    # a sampled request after it: once its spans came, the first would have too
    status, sampled, _ = await gw.chat(key, chat_doc(name))
    await receiver.trace_of(sampled["x-request-id"], 2)
    assert receiver.request_spans(unsampled["x-request-id"]) == []
    assert not [s for s in receiver.spans if s.trace_id == trace_id]
