"""Hostile and broken input, black-box (issue 11): each defect found by
trying the gateway as an attacker or an unlucky operator, pinned against the
real process and a real upstream on a socket. Every request must end in the
contract's JSON shape with exactly one finalize (the test-only
FinalizeCounter hook), and the log must hold no unhandled error."""

from __future__ import annotations

import json
import re
import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.conftest import secret, start_gateway
from tests.streamcheck import counted_gateway, wait_finalized, wait_new_finalized
from tests.support.gateway import http, treq_json, treq_stream
from tests.support.mock_upstream import chat_chunk, sse_event

CHAT = "/v1/chat/completions"
MAX_EVENT = 4096
MAX_RESPONSE = 65536


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "hostile", upstream_timeout=2)


@pytest.fixture(scope="module")
def bounded_gw(tmp_path_factory):
    """A gateway with small bounds on upstream events and bodies."""
    from tests.conftest import start_gateway as start

    extra = {
        "hooks": ["tests.support.finalize_counter.FinalizeCounter"],
        "server": {"proxy": {"max_event_bytes": MAX_EVENT, "max_response_bytes": MAX_RESPONSE}},
    }
    gateway = start(tmp_path_factory.mktemp("bounded"), extra=extra)
    yield gateway
    gateway.process.stop()
    assert "Unhandled" not in gateway.process.output
    assert "Traceback" not in gateway.process.output


def _setup(gateway, upstream):
    state = {}

    async def build():
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        state["provider_key"] = pc["api_key"]
        await gateway.add_model("h-gpt", "openai/gpt-h", pc)
        await gateway.add_model("h-claude", "anthropic/claude-h", pc)
        await gateway.add_model("h-mock", "mock/demo", {}, rate_limit={"concurrency": 1})
        state["key"] = await gateway.add_key(["h-gpt", "h-claude", "h-mock"])

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    return state


@pytest.fixture(scope="module")
def setup(gw, upstream):
    return _setup(gw, upstream)


@pytest.fixture(scope="module")
def bounded(bounded_gw, upstream):
    return _setup(bounded_gw, upstream)


def auth(state):
    return {"Authorization": f"Bearer {state['key']}", "Content-Type": "application/json"}


def chat_doc(model="h-gpt", **extra):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def metric(gateway, pattern: str) -> float:
    """The sum of the /metrics samples whose line matches ``pattern``."""
    status, _, body = await treq_json("GET", gateway.admin + "/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith("#") and re.search(pattern, line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_openai_error(status, body, expected_status, code):
    assert status == expected_status, body
    doc = json.loads(body)
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["code"] == code
    return doc["error"]


# -- defect 1: numbers out of bounds; any exception ends in JSON and one finalize --


@pytest.mark.parametrize(
    "doc, pointer, message",
    [
        (
            {"timeout": 10**30},
            "/timeout",
            "1000000000000000000000000000000 is greater than the maximum of 3600000",
        ),
        ({"timeout": 10**400}, "/timeout", "is greater than the maximum of 3600000"),
        ({"timeout": 3_600_001}, "/timeout", "3600001 is greater than the maximum of 3600000"),
        (
            {"rate_limit": {"rpm": 10**12 + 1}},
            "/rate_limit/rpm",
            "1000000000001 is greater than the maximum of 1000000000000",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_admin_refuses_numbers_out_of_bounds_and_stores_nothing(gw, doc, pointer, message):
    _, before = await gw.aadmin("GET", "/aisix/admin/models")
    model = {"name": "bounds", "model": "mock/x", "provider_config": {}, **doc}
    status, body = await gw.aadmin("POST", "/aisix/admin/models", model)
    assert status == 400, body
    assert body["error_msg"].startswith(
        f'JSON schema validation error: property "{pointer}" validation failed: '
    )
    assert message in body["error_msg"]
    _, after = await gw.aadmin("GET", "/aisix/admin/models")
    assert after == before


@pytest_twisted.ensureDeferred
async def test_admin_accepts_numbers_at_their_bounds(gw):
    doc = {
        "name": "at-bounds",
        "model": "mock/x",
        "provider_config": {},
        "timeout": 3_600_000,
        "rate_limit": {"rpm": 10**12, "concurrency": 10**12},
    }
    status, body = await gw.aadmin("PUT", "/aisix/admin/models/at-bounds", doc)
    assert status == 201, body
    status, body = await gw.aadmin(
        "POST",
        "/aisix/admin/apikeys",
        {"key": secret(), "allowed_models": [], "rate_limit": {"tpd": 10**12}},
    )
    assert status == 201, body


@pytest.fixture(scope="module")
def crash_gw(tmp_path_factory):
    """A gateway with a test hook that gives ``overflow-*`` models a timeout no
    float holds (the OverflowError the Admin API bounds now keep out)."""
    extra = {
        "hooks": [
            "tests.support.finalize_counter.FinalizeCounter",
            "tests.support.hostile_hooks.OverflowTimeout",
        ]
    }
    gateway = start_gateway(tmp_path_factory.mktemp("crash"), extra=extra)
    yield gateway
    gateway.process.stop()
    output = gateway.process.output
    assert "Unhandled" not in output  # logged with its traceback, but handled
    assert "unexpected error" in output


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_an_exception_in_the_request_path_is_a_json_500_that_finalizes_once(crash_gw, stream):
    name = f"overflow-{'s' if stream else 'n'}"
    await crash_gw.add_model(name, "mock/demo", {}, rate_limit={"concurrency": 1})
    key = await crash_gw.add_key([name])
    for _ in range(3):  # a leaked concurrency slot would make the 2nd one a 429
        status, headers, body = await crash_gw.chat(key, chat_doc(name, stream=stream))
        error = assert_openai_error(status, body, 500, "internal_error")
        assert error["type"] == "server_error"
        assert headers["content-type"] == "application/json"
        end, status_logged, _ = await wait_finalized(crash_gw.process, headers["x-request-id"])
        assert (end, status_logged) == ("upstream_error", "500")
    lines = [x for x in crash_gw.process.output.splitlines() if "access rid=" in x]
    assert any(f"rid={headers['x-request-id']} " in x and "status=500" in x for x in lines)


# -- defect 2: bodies that parse but cannot be re-encoded ---------------------------

DEEP = b'{"model": "h-gpt", "messages": ' + b"[" * 1000 + b"]" * 1000 + b"}"


# the other bodies (surrogates, huge numbers, each provider): tests/test_pipeline_errors.py
@pytest.mark.parametrize("raw, problem", [(DEEP, "recursion limit exceeded")])
@pytest_twisted.ensureDeferred
async def test_proxy_body_that_cannot_be_sent_on_is_400_and_nothing_goes_upstream(
    gw, setup, fresh_upstream, raw, problem
):
    status, _, body = await treq_json("POST", gw.proxy + CHAT, headers=auth(setup), body=raw)
    error = assert_openai_error(status, body, 400, "invalid_json")
    assert error["message"].startswith("Failed to parse JSON: ")
    assert problem in error["message"]
    assert fresh_upstream.requests == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "x", "model": "mock/x", "provider_config": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"name": "\\udc00", "model": "mock/x", "provider_config": {}}',
        b'{"name": "x", "model": "mock/x", "provider_config": {}, "timeout": 1e400}',
    ],
)
@pytest_twisted.ensureDeferred
async def test_admin_body_that_cannot_be_stored_is_400_invalid_json(gw, raw):
    _, before = await gw.aadmin("GET", "/aisix/admin/models")
    for method, path in (("POST", "/aisix/admin/models"), ("PUT", "/aisix/admin/models/x")):
        status, _, body = await treq_json(
            method, gw.admin + path, headers=gw.admin_headers(), body=raw
        )
        assert status == 400, body
        assert json.loads(body)["error_msg"].startswith("Invalid JSON: ")
    _, after = await gw.aadmin("GET", "/aisix/admin/models")
    assert after == before


# -- defect 3: a client that resets while the stream opens ----------------------------


def _reset_after_sending(port: int, raw_request: bytes) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(raw_request)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST at once: the request is in, the stream not yet open


@pytest_twisted.ensureDeferred
async def test_client_reset_while_stream_opens_is_499_client_gone_not_502(
    gw, setup, fresh_upstream
):
    fresh_upstream.set_json(CHAT, {"error": {"message": "late"}}, status=500)
    fresh_upstream.set_delay(CHAT, 0.2)
    body = json.dumps(chat_doc(stream=True)).encode()
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (setup["key"].encode(), len(body), body)
    )
    bad_before = await metric(
        gw, r"^aisix_request_count_total{.*endpoint=\"/v1/chat/completions\".*status_code=\"502\""
    )
    gone_before = await metric(
        gw, r"^aisix_request_count_total{.*endpoint=\"/v1/chat/completions\".*status_code=\"499\""
    )
    for _ in range(3):
        from tests.streamcheck import finalize_records

        seen = set(finalize_records(gw.process))
        _reset_after_sending(gw.proxy_port, raw)
        _, (end, status, _) = await wait_new_finalized(gw.process, seen)
        assert (end, status) == ("client_gone", "499")
    assert (
        await metric(
            gw,
            r"^aisix_request_count_total{.*endpoint=\"/v1/chat/completions\".*status_code=\"502\"",
        )
        == bad_before
    )
    gone = await metric(
        gw, r"^aisix_request_count_total{.*endpoint=\"/v1/chat/completions\".*status_code=\"499\""
    )
    assert gone == gone_before + 3
    assert "Request.finish called" not in gw.process.output


# -- defect 4: an upstream that answers a stream with one JSON document ---------------

COMPLETION = {
    "id": "chatcmpl-json",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-h",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


@pytest_twisted.ensureDeferred
async def test_200_json_answer_to_a_stream_is_relayed_as_a_stream_and_charged(
    gw, setup, fresh_upstream
):
    fresh_upstream.set_json(CHAT, COMPLETION)
    result = await treq_stream(
        "POST", gw.proxy + CHAT, headers=auth(setup), json_body=chat_doc(stream=True)
    )
    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.data[-1] == "[DONE]"
    first, usage = result.json_chunks
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "whole"}
    assert first["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"]["total_tokens"] == 7
    end, status, tokens = await wait_finalized(gw.process, result.headers["x-request-id"])
    assert (end, status, tokens) == ("done", "200", 7)


@pytest_twisted.ensureDeferred
async def test_200_json_anthropic_answer_to_a_stream_is_translated_into_a_stream(
    gw, setup, fresh_upstream
):
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-h",
        "content": [{"type": "text", "text": "whole"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 2, "output_tokens": 5},
    }
    fresh_upstream.set_json("/v1/messages", message)
    result = await treq_stream(
        "POST", gw.proxy + CHAT, headers=auth(setup), json_body=chat_doc("h-claude", stream=True)
    )
    assert result.status == 200, result.body
    assert result.data[-1] == "[DONE]"
    chunks = result.json_chunks
    assert chunks[0]["choices"][0]["delta"]["content"] == "whole"
    assert chunks[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 7
    end, _, tokens = await wait_finalized(gw.process, result.headers["x-request-id"])
    assert (end, tokens) == ("done", 7)


@pytest.mark.parametrize(
    "content_type, payload, text",
    [
        ("text/html", b"<html>oops</html>", "content type 'text/html'"),
        ("application/json", b'{"object": "list"}', "JSON that is not a chat completion"),
        ("application/json", b"not json", "invalid JSON in upstream response"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_200_answer_to_a_stream_that_is_not_a_stream_is_502_never_empty(
    gw, setup, fresh_upstream, content_type, payload, text
):
    fresh_upstream.set_raw(CHAT, payload, content_type=content_type)
    status, headers, body = await treq_json(
        "POST", gw.proxy + CHAT, headers=auth(setup), json_body=chat_doc(stream=True)
    )
    error = assert_openai_error(status, body, 502, "provider_error")
    assert text in error["message"]
    end, _, _ = await wait_finalized(gw.process, headers["x-request-id"])
    assert end == "upstream_error"


# -- defect 5: bounds on what an upstream can make the gateway hold -------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_upstream_body_over_the_bound_is_502_and_its_connection_closed(
    bounded_gw, bounded, fresh_upstream, stream
):
    """Non-stream answers are bounded by max_response_bytes; so is the error
    answer of a stream request, read whole to be mapped."""
    big = b'{"error": {"message": "' + b"x" * MAX_RESPONSE + b'"}}'
    fresh_upstream.set_raw(CHAT, big, status=200 if not stream else 500)
    closed = fresh_upstream.wait_for_disconnect(timeout=5)
    status, _, body = await treq_json(
        "POST", bounded_gw.proxy + CHAT, headers=auth(bounded), json_body=chat_doc(stream=stream)
    )
    error = assert_openai_error(status, body, 502, "provider_error")
    assert error["message"] == f"Provider error: upstream response exceeds {MAX_RESPONSE} bytes"
    await closed  # not kept in the pool: the rest of that body is never read
    assert "server.proxy.max_response_bytes" in bounded_gw.process.output


@pytest_twisted.ensureDeferred
async def test_upstream_body_at_the_bound_is_relayed(bounded_gw, bounded, fresh_upstream):
    doc = dict(COMPLETION, pad="")
    doc["pad"] = "p" * (MAX_RESPONSE - len(json.dumps(doc)))
    raw = json.dumps(doc).encode()
    assert len(raw) == MAX_RESPONSE
    fresh_upstream.set_raw(CHAT, raw)
    status, _, body = await treq_json(
        "POST", bounded_gw.proxy + CHAT, headers=auth(bounded), json_body=chat_doc()
    )
    assert status == 200 and body == raw


@pytest_twisted.ensureDeferred
async def test_stream_event_over_the_bound_before_the_first_chunk_is_502(
    bounded_gw, bounded, fresh_upstream
):
    fresh_upstream.set_sse(CHAT, [b"data: " + b"y" * (MAX_EVENT + 10)], end="hang")
    closed = fresh_upstream.wait_for_disconnect(timeout=5)
    status, headers, body = await treq_json(
        "POST", bounded_gw.proxy + CHAT, headers=auth(bounded), json_body=chat_doc(stream=True)
    )
    error = assert_openai_error(status, body, 502, "provider_error")
    assert f"exceeds {MAX_EVENT} bytes" in error["message"]
    end, _, _ = await wait_finalized(bounded_gw.process, headers["x-request-id"])
    assert end == "upstream_error"
    await closed


@pytest_twisted.ensureDeferred
async def test_stream_event_over_the_bound_after_a_chunk_cuts_the_stream(
    bounded_gw, bounded, fresh_upstream
):
    events = [sse_event(chat_chunk("a")), b"data: " + b"z" * (MAX_EVENT + 10)]
    fresh_upstream.set_sse(CHAT, events, end="hang")
    closed = fresh_upstream.wait_for_disconnect(timeout=5)
    result = await treq_stream(
        "POST", bounded_gw.proxy + CHAT, headers=auth(bounded), json_body=chat_doc(stream=True)
    )
    assert result.status == 200
    assert "[DONE]" not in result.data
    assert len(result.json_chunks) == 1
    end, _, _ = await wait_finalized(bounded_gw.process, result.headers["x-request-id"])
    assert end == "upstream_cut"
    await closed
    assert "max_event_bytes" in bounded_gw.process.output


# -- defect 6: no redirect, whatever the path -----------------------------------------


@pytest_twisted.ensureDeferred
async def test_double_slash_paths_are_never_redirected(gw, setup):
    evil = {"Host": "evil.example", "Content-Type": "application/json"}
    status, headers, body = await treq_json(
        "POST", gw.proxy + "/v1//chat/completions", headers=evil, json_body=chat_doc()
    )
    assert_openai_error(status, body, 401, None)  # auth first
    assert "location" not in headers
    status, headers, body = await treq_json(
        "POST",
        gw.proxy + "/v1//chat/completions",
        headers={**auth(setup), "Host": "evil.example"},
        json_body=chat_doc(),
    )
    assert_openai_error(status, body, 404, "not_found")
    assert "location" not in headers
    for path in ("/aisix/admin//models", "/aisix//admin/models/x", "/aisix/admin/models//x"):
        status, headers, body = await treq_json(
            "GET", gw.admin + path, headers={**gw.admin_headers(), "Host": "evil.example"}
        )
        assert (status, body) == (404, b""), path
        assert "location" not in headers
    # (blocking on purpose: treq would follow the redirect)
    status, headers, _ = http("GET", gw.admin + "/ui", headers={"Host": "evil.example"})
    assert (status, headers["location"]) == (303, "/ui/")  # relative, as before


# -- secrets an upstream echoes back -------------------------------------------------


# a 4xx too, in memory: tests/test_pipeline_errors.py
@pytest.mark.parametrize("upstream_status", [500])
@pytest_twisted.ensureDeferred
async def test_configured_keys_echoed_by_the_upstream_are_redacted(
    gw, setup, fresh_upstream, upstream_status
):
    other = await gw.add_key([])  # any configured key, not only the caller's
    text = f"user {setup['key']} and {other} are blocked; provider {setup['provider_key']}"
    fresh_upstream.set_json(CHAT, {"error": {"message": text}}, status=upstream_status)
    status, headers, body = await treq_json(
        "POST", gw.proxy + CHAT, headers=auth(setup), json_body=chat_doc(user=setup["key"])
    )
    assert status == (400 if upstream_status == 400 else 502)
    for value in (setup["key"], other, setup["provider_key"]):
        assert value.encode() not in body
    assert json.loads(body)["error"]["message"].count("[redacted]") == 3
    await wait_finalized(gw.process, headers["x-request-id"])
    assert setup["key"] not in gw.process.output


@pytest_twisted.ensureDeferred
async def test_gateway_still_serves_after_all_of_it(gw, setup):
    await task.deferLater(reactor, 0, lambda: None)
    status, _, body = await treq_json(
        "POST", gw.proxy + CHAT, headers=auth(setup), json_body=chat_doc("h-mock")
    )
    assert status == 200, body


@pytest_twisted.ensureDeferred
async def test_in_flight_and_slots_held_gauges_return_to_zero(gw, setup, fresh_upstream):
    async def gauges():
        return (
            await metric(gw, r"^twisted_gw_requests_in_flight "),
            await metric(gw, r"^twisted_gw_concurrency_slots_held "),
        )

    await gw.add_model("h-slow", "mock/demo", {}, rate_limit={"concurrency": 2})
    key = await gw.add_key(["h-slow", "h-gpt"])
    fresh_upstream.set_delay(CHAT, 0.5)
    pending = defer.ensureDeferred(gw.chat(key, chat_doc("h-gpt")))
    seen = (0.0, 0.0)
    for _ in range(100):  # polled: the request is in another process
        seen = await gauges()
        if seen[0] == 1:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert seen == (1.0, 0.0)  # h-gpt has no concurrency limit: no slot
    status, _, _ = await pending
    assert status == 200
    for stream in (False, True):
        status, _, _ = await gw.chat(key, chat_doc("h-slow", stream=stream))
        assert status == 200
    assert await gauges() == (0.0, 0.0)
