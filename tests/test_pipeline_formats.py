"""``POST /v1/messages`` and ``POST /v1/responses`` in memory (twisted_gw.testing):
the real ProxyApp and Exchange run them as chat completions against an
upstream the test answers by hand; what the client gets is each API's own
shape (CONTRACT-NEXT 2 and 3). The translators' rules are unit-tested in
tests/test_formats_*.py; the wire of the real process in the black-box tests."""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock

from twisted_gw.errors import provider_error
from twisted_gw.proxy.history import ResponseHistory
from twisted_gw.testing import MemoryGateway

MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "up-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
}


def chunk(**delta: object) -> dict:
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "model": "up-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


@pytest.fixture
def gw() -> MemoryGateway:
    gateway = MemoryGateway()
    gateway.add_model(
        "gpt",
        "openai/up-model",
        targets=[{"model": "openai/b", "provider_config": {"api_key": "k"}, "priority": 1}],
    )
    gateway.add_model("limited", "openai/l", rate_limit={"rpm": 1})
    gateway.key = gateway.add_key(["gpt", "limited"])
    return gateway


def ask(gw: MemoryGateway, model: str = "gpt", **body: object):
    doc = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        **body,
    }
    return gw.post(MESSAGES, doc, headers={"x-api-key": gw.key})


def events(body: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in body.decode().split("\n\n"):
        if block:
            kind, data = block.split("\n", 1)
            out.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


# -- /v1/messages ---------------------------------------------------------------------------


def test_a_message_runs_as_a_chat_completion_and_answers_in_anthropic_s_shape(gw):
    pending = ask(gw, system="be brief")
    call = gw.provider.calls[-1]
    assert call.kind == "chat"
    assert call.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert call.body["max_tokens"] == 64
    call.answer(COMPLETION)
    response = gw.result(pending)
    assert response.code == 200
    assert response.json() == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "hello"}],
        "model": "up-model",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 7,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    ctx = gw.recorder.finalized[0]
    assert (ctx.endpoint, ctx.model_name, ctx.usage["total_tokens"]) == ("/v1/messages", "gpt", 9)
    assert gw.sample(
        "aisix_request_count_total", method="POST", endpoint="/v1/messages", status_code="200"
    )


def test_a_streamed_message_is_anthropic_s_event_sequence(gw):
    pending = ask(gw, stream=True)
    source = gw.provider.calls[-1].stream()
    source.push(chunk(role="assistant", content="hel"), chunk(content="lo"))
    source.push({**chunk(), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    source.push({"id": "chatcmpl-2", "choices": [], "usage": COMPLETION["usage"]})
    source.end()
    response = gw.result(pending)
    assert response.code == 200 and response.headers["content-type"] == "text/event-stream"
    kinds = [kind for kind, _ in events(response.body)]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = events(response.body)[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 2
    assert "[DONE]" not in response.body.decode() and gw.ends == ["done"]


def test_a_message_stream_cut_after_its_first_chunk_ends_with_an_error_event(gw):
    pending = ask(gw, stream=True)
    source = gw.provider.calls[-1].stream()
    source.push(chunk(role="assistant", content="hel"))
    source.end(clean=False, detail="connection lost")
    got = events(gw.result(pending).body)
    assert got[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "stream: connection lost"}},
    )
    assert "message_stop" not in [kind for kind, _ in got] and gw.ends == ["upstream_cut"]


def test_a_message_is_retried_on_another_deployment_like_a_chat(gw):
    pending = ask(gw)
    gw.provider.calls[-1].fail(provider_error("connection refused", "connect"))
    gw.provider.calls[-1].answer(COMPLETION)
    response = gw.result(pending)
    assert response.code == 200 and response.headers["x-gateway-attempts"] == "2"


@pytest.mark.parametrize(
    "model, setup, status, kind, message",
    [
        ("nope", None, 404, "not_found_error", "Model 'nope' not found"),
        ("gpt", "timeout", 504, "timeout_error", "Provider request timed out"),
        ("gpt", 401, 401, "authentication_error", "Authentication failed"),
        ("gpt", 503, 503, "overloaded_error", "Upstream service unavailable"),
        ("gpt", 400, 400, "invalid_request_error", "Provider error"),
        ("gpt", "refused", 502, "overloaded_error", "Upstream service unavailable"),
    ],
)
def test_message_errors_are_anthropic_s_with_a_request_id(gw, model, setup, status, kind, message):
    pending = ask(gw, model)
    for _ in range(2 if setup not in (None, 400) else 1 if setup == 400 else 0):
        call = gw.provider.calls[-1]
        if setup == "timeout":
            gw.clock.advance(600)
        elif setup == "refused":
            call.fail(provider_error("connection refused", "connect"))
        else:
            call.refuse(setup, {"error": {"message": "upstream says sk-secret-1234"}})
    response = gw.result(pending)
    doc = response.json()
    assert response.code == status
    assert doc["type"] == "error" and doc["error"] == {"type": kind, "message": message}
    assert doc["request_id"].startswith("req_") and len(doc["request_id"]) == 36


def test_a_message_over_its_limit_is_anthropic_s_429_and_keeps_the_limit_headers(gw):
    pending = ask(gw, "limited")
    gw.provider.calls[-1].answer(COMPLETION)
    assert gw.result(pending).code == 200
    response = gw.result(ask(gw, "limited"))
    assert response.code == 429
    assert response.json()["error"] == {
        "type": "rate_limit_error",
        "message": "Rate limit exceeded",
    }
    assert "retry-after" in response.headers


def test_a_malformed_message_is_refused_before_anything_else(gw):
    response = gw.result(gw.post(MESSAGES, {"model": "gpt"}, headers={"x-api-key": gw.key}))
    assert response.code == 422 and response.json()["error"]["type"] == "invalid_request_error"
    assert gw.provider.calls == [] and gw.ends == ["rejected"]


def test_a_missing_key_on_messages_is_the_proxy_s_401(gw):
    response = gw.result(gw.post(MESSAGES, {"model": "gpt"}))
    assert response.code == 401
    assert response.json()["error"]["message"] == "Missing API key in request"


# -- /v1/responses -------------------------------------------------------------------------


def respond(gw: MemoryGateway, key: str | None = None, **body: object):
    return gw.post(RESPONSES, {"model": "gpt", "input": "hi", **body}, key or gw.key)


def test_a_response_is_continued_by_its_id_with_the_earlier_turns(gw):
    pending = respond(gw, instructions="be brief")
    gw.provider.calls[-1].answer(COMPLETION)
    first = gw.result(pending).json()
    assert first["id"].startswith("aresp_") and first["output"][0]["content"][0]["text"] == "hello"
    pending = respond(gw, input="and then?", previous_response_id=first["id"])
    sent = gw.provider.calls[-1].body["messages"]
    assert sent == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and then?"},
    ]
    gw.provider.calls[-1].answer(COMPLETION)
    second = gw.result(pending).json()
    assert second["previous_response_id"] == first["id"]


def test_only_the_key_that_created_a_response_may_continue_it(gw):
    pending = respond(gw)
    gw.provider.calls[-1].answer(COMPLETION)
    first = gw.result(pending).json()
    other = gw.add_key(["gpt"])
    response = gw.result(respond(gw, other, previous_response_id=first["id"]))
    assert response.code == 400
    assert response.json()["error"] == {
        "message": f"validation: previous_response_not_found: {first['id']}",
        "type": "invalid_request_error",
        "param": None,
        "code": "gateway_error",
    }
    assert len(gw.provider.calls) == 1  # nothing reached the upstream


def test_store_false_keeps_nothing(gw):
    pending = respond(gw, store=False)
    gw.provider.calls[-1].answer(COMPLETION)
    first = gw.result(pending).json()
    assert gw.result(respond(gw, previous_response_id=first["id"])).code == 400


def test_a_streamed_response_is_stored_when_it_completes(gw):
    pending = respond(gw, stream=True)
    source = gw.provider.calls[-1].stream()
    source.push(chunk(role="assistant", content="hel"), chunk(content="lo"))
    source.push({"id": "chatcmpl-2", "choices": [], "usage": COMPLETION["usage"]})
    source.end()
    got = events(gw.result(pending).body)
    kinds = [kind for kind, _ in got]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in got] == list(range(len(got)))
    response_id = got[-1][1]["response"]["id"]
    pending = respond(gw, previous_response_id=response_id)
    assert gw.provider.calls[-1].body["messages"][1] == {"role": "assistant", "content": "hello"}


def test_a_cut_response_stream_ends_with_an_error_event_and_is_not_stored(gw):
    pending = respond(gw, stream=True)
    source = gw.provider.calls[-1].stream()
    source.push(chunk(role="assistant", content="hel"))
    source.end(clean=False, detail="connection lost")
    got = events(gw.result(pending).body)
    assert got[-1][0] == "error" and got[-1][1]["message"] == "stream: connection lost"
    assert len(gw.proxy.history) == 0


def test_a_malformed_response_request_is_refused_before_the_model_is_looked_up(gw):
    response = gw.result(
        gw.post(RESPONSES, {"model": "nope", "input": [{"type": "output_text"}]}, gw.key)
    )
    assert response.code == 422 and gw.ends == ["rejected"]


# -- the history store's bounds (on a Clock) ---------------------------------------------------


def test_the_history_forgets_the_oldest_past_its_count_and_everything_past_its_age():
    clock = Clock()
    history = ResponseHistory(clock, max_entries=2, max_age=60)
    for n in range(3):
        history.put(f"r{n}", "key-a", [{"n": n}])
        clock.advance(1)
    assert history.get("r0", "key-a") is None and history.get("r2", "key-a") == [{"n": 2}]
    assert history.get("r2", "key-b") is None  # another key's: it does not exist
    clock.advance(58)  # r1 is 60 s old now
    assert history.get("r1", "key-a") is None and history.get("r2", "key-a") is not None
    clock.advance(1)
    assert history.get("r2", "key-a") is None and len(history) == 0


# -- native: an anthropic deployment gets the Messages request as it came ---------------------

NATIVE_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": "hi"}],
    "model": "claude-x",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
    "something_new": {"kept": True},
}


@pytest.fixture
def native() -> MemoryGateway:
    gateway = MemoryGateway()
    gateway.add_model("claude", "anthropic/claude-x")
    gateway.key = gateway.add_key(["claude"])
    return gateway


def native_ask(gw: MemoryGateway, **body: object):
    doc = {
        "model": "claude",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "future_field": 1,
        **body,
    }
    headers = {"x-api-key": gw.key, "anthropic-beta": "prompt-caching-2024-07-31"}
    return gw.post(MESSAGES, doc, headers=headers), doc


def test_a_native_message_passes_the_request_and_the_answer_as_they_came(native):
    pending, doc = native_ask(native)
    call = native.providers["anthropic"].calls[-1]
    assert call.kind == "native" and call.body == doc  # cache_control and future_field kept
    assert call.headers == {b"anthropic-beta": [b"prompt-caching-2024-07-31"]}
    call.answer(NATIVE_ANSWER)
    response = native.result(pending)
    assert response.code == 200 and response.json() == NATIVE_ANSWER


def test_a_native_stream_relays_the_upstream_s_events_one_for_one(native):
    pending, _ = native_ask(native, stream=True)
    source = native.providers["anthropic"].calls[-1].stream()
    upstream = [
        {
            "type": "message_start",
            "message": {
                **NATIVE_ANSWER,
                "content": [],
                "usage": {"input_tokens": 3, "cache_read_input_tokens": 5, "output_tokens": 0},
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    source.push(*upstream)
    source.end()
    got = events(native.result(pending).body)
    assert got == [(e["type"], e) for e in upstream]
    usage = native.recorder.finalized[0].usage
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (8, 2, 10)


def test_a_native_stream_cut_ends_with_one_error_event(native):
    pending, _ = native_ask(native, stream=True)
    source = native.providers["anthropic"].calls[-1].stream()
    source.push({"type": "message_start", "message": {**NATIVE_ANSWER, "content": []}})
    source.end(clean=False, detail="connection lost")
    got = events(native.result(pending).body)
    assert got[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "stream: connection lost"}},
    )


def test_the_chat_bridge_s_refusals_do_not_apply_to_a_native_deployment(native):
    # a top-level cache_control is refused by the bridge (CONTRACT-NEXT 2.1), not by Anthropic
    pending, _ = native_ask(native, cache_control={"type": "ephemeral"})
    native.providers["anthropic"].calls[-1].answer(NATIVE_ANSWER)
    assert native.result(pending).code == 200


def test_the_chat_bridge_s_refusal_is_a_400_for_a_deployment_reached_through_chat(gw):
    response = gw.result(ask(gw, cache_control={"type": "ephemeral"}))
    assert response.code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Invalid request",
    }
    assert gw.provider.calls == []


def test_count_tokens_asks_anthropic_or_estimates(native, gw):
    doc = {"model": "claude", "messages": [{"role": "user", "content": "hello there"}]}
    pending = native.post(MESSAGES + "/count_tokens", doc, native.key)
    call = native.providers["anthropic"].calls[-1]
    assert call.kind == "count" and call.body == doc
    call.answer({"input_tokens": 11})
    assert native.result(pending).json() == {"input_tokens": 11}
    doc = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 400}]}
    estimated = gw.result(gw.post(MESSAGES + "/count_tokens", doc, gw.key)).json()
    assert estimated["estimated"] is True and 100 <= estimated["input_tokens"] <= 120
    assert gw.provider.calls == []  # an estimate calls no upstream
