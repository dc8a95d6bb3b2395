"""``POST /v1/messages`` and ``POST /v1/responses`` black-box (CONTRACT-NEXT 0,
2 and 3, issue 14 parts 2-4): the real gateway process, real mock upstreams on
127.0.0.1, and the official ``anthropic`` and ``openai`` SDKs as the clients
people run. Via chat, the upstream must receive the translated chat completion
and the client get its own API's shape; natively (anthropic models), the
client's body and the upstream's answer pass through as they came. Limits,
routing, metrics, the access log and the single finalize apply to both APIs as
to chat.

The SDKs are synchronous: they run in a thread while this reactor serves the
mock upstream the gateway calls.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import anthropic
import openai
import pytest
import pytest_twisted
from twisted.internet import defer, threads

from tests.conftest import secret
from tests.streamcheck import counted_gateway, wait_finalized
from tests.support import anthropic_events as ae
from tests.support.gateway import treq_stream
from tests.support.mock_upstream import DEFAULT_CONTENT, chat_chunk, sse_event
from tests.test_metrics_and_access_log import delta, logfmt_lines, scrape

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"
#: a weight that makes a deployment the first choice of its priority all but surely
HEAVY = 1_000_000
#: the upstream id of the native (anthropic) model
CLAUDE = "claude-x"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """The gateway with the test-only finalize counter."""
    yield from counted_gateway(tmp_path_factory, "formats", upstream_timeout=5)


@pytest.fixture(scope="module")
def refused():
    """An ``api_base`` whose every connection is refused: a port bound, never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


@pytest.fixture(scope="module")
def env(gw, upstream, refused):
    """The models (openai-compatible, mock, anthropic, down, limited) and two keys."""
    state: dict[str, Any] = {"provider_key": secret("sk-provider")}

    async def build():
        pc = {"api_key": state["provider_key"], "api_base": upstream.base_url}
        await gw.add_model("fx-gpt", "openai/gpt-4o-mini", pc)
        await gw.add_model("fx-echo", "mock/echo", {})
        await gw.add_model("fx-claude", f"anthropic/{CLAUDE}", pc)
        await gw.add_model("fx-down", "openai/gpt-down", {**pc, "api_base": refused})
        names = ["fx-gpt", "fx-echo", "fx-claude", "fx-down"]
        state["key"] = await gw.add_key(names)
        state["other_key"] = await gw.add_key(names)

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    state["anthropic"] = anthropic_client(gw, state["key"])
    state["openai"] = openai_client(gw, state["key"])
    return state


def anthropic_client(gw, key: str) -> anthropic.Anthropic:
    """The Anthropic SDK pointed at the gateway; the key goes as ``x-api-key``."""
    return anthropic.Anthropic(api_key=key, base_url=gw.proxy, max_retries=0, timeout=10)


def openai_client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gw.proxy + "/v1", max_retries=0, timeout=10)


def in_thread(f, *args, **kwargs):
    return threads.deferToThread(f, *args, **kwargs)


async def fresh_model(gw, base: str, model: str = "openai/gpt-zero", **extra: Any) -> str:
    """A model of this test alone (its limits and cooldowns start from nothing)."""
    name = f"fx-{uuid.uuid4().hex[:8]}"
    await gw.add_model(name, model, {"api_key": secret("sk-provider"), "api_base": base}, **extra)
    return name


def user(text: str = "Hello") -> list[dict]:
    return [{"role": "user", "content": text}]


async def create(client: anthropic.Anthropic, **params: Any) -> tuple[Any, dict[str, str]]:
    """``messages.create`` through the SDK: (the parsed Message, the response headers)."""
    params.setdefault("max_tokens", 64)
    params.setdefault("messages", user())
    raw = await in_thread(client.messages.with_raw_response.create, **params)
    return raw.parse(), dict(raw.headers)


async def streamed(client: anthropic.Anthropic, **params: Any) -> tuple[Any, dict[str, str]]:
    """``messages.stream`` through the SDK: (``get_final_message()``, the headers)."""
    params.setdefault("max_tokens", 64)
    params.setdefault("messages", user())

    def run():
        with client.messages.stream(**params) as stream:
            return stream.get_final_message(), dict(stream.response.headers)

    return await in_thread(run)


async def respond(client: openai.OpenAI, **params: Any) -> tuple[Any, dict[str, str]]:
    """``responses.create`` through the SDK: (the parsed Response, the headers)."""
    raw = await in_thread(client.responses.with_raw_response.create, **params)
    return raw.parse(), dict(raw.headers)


async def failing(exc_type: type[Exception], f, *args, **kwargs) -> Any:
    """The SDK exception ``f`` raised (it must raise ``exc_type``)."""
    with pytest.raises(exc_type) as info:
        await in_thread(f, *args, **kwargs)
    return info.value


async def finalized(gw, headers: dict[str, str]) -> tuple[str, str, int]:
    return await wait_finalized(gw.process, headers["x-request-id"])


def only_request(upstream, path: str) -> Any:
    (seen,) = upstream.requests
    assert seen.path == path
    return seen


def tool_call_answer(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A whole chat answer that calls one function."""
    return {
        "id": "chatcmpl-tools",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17},
    }


def tool_call_chunks() -> list[bytes]:
    """A chat stream that calls get_weather with its arguments in two pieces."""

    def call(**fields: Any) -> dict[str, Any]:
        chunk = chat_chunk(model="gpt-4o-mini", chunk_id="chatcmpl-tool-stream")
        chunk["choices"][0]["delta"] = {"tool_calls": [{"index": 0, **fields}]}
        return chunk

    first = call(id="call_w1", type="function", function={"name": "get_weather", "arguments": ""})
    first["choices"][0]["delta"]["role"] = "assistant"
    chunks = [
        first,
        call(function={"arguments": '{"city": '}),
        call(function={"arguments": '"Paris"}'}),
        chat_chunk(finish_reason="tool_calls", model="gpt-4o-mini"),
        chat_chunk(usage={"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17}),
    ]
    return [sse_event(c) for c in chunks] + [sse_event("[DONE]")]


def sse_events(body: bytes) -> list[tuple[str | None, Any]]:
    """(event type, parsed data) of each SSE event of a body, whatever its framing."""
    found = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        kind, data = None, []
        for line in block.decode().split("\n"):
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            found.append((kind, json.loads("\n".join(data))))
    return found


# -- 1. messages.create via chat -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sdk_message_on_an_openai_model_is_a_translated_chat_completion(
    gw, env, fresh_upstream
):
    message, headers = await create(
        env["anthropic"],
        model="fx-gpt",
        system="Be brief.",
        messages=user("Hello"),
        max_tokens=100,
        extra_body={"temperature": 0.2},  # this SDK has no temperature argument
        stop_sequences=["END"],
        metadata={"user_id": "end-user-7"},
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
    )
    assert message.type == "message" and message.role == "assistant"
    assert [(b.type, b.text) for b in message.content] == [("text", DEFAULT_CONTENT)]
    assert message.stop_reason == "end_turn" and message.model == "gpt-4o-mini"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 4)
    seen = only_request(fresh_upstream, CHAT)
    assert seen.headers["authorization"] == f"Bearer {env['provider_key']}"
    assert "x-api-key" not in seen.headers  # the client's key stays at the gateway
    assert seen.json["model"] == "gpt-4o-mini"
    assert seen.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert seen.json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather of a city",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    assert seen.json["tool_choice"] == "auto"
    assert (seen.json["max_tokens"], seen.json["temperature"]) == (100, 0.2)
    assert (seen.json["stop"], seen.json["user"]) == ("END", "end-user-7")
    assert await finalized(gw, headers) == ("ok", "200", 7)


@pytest_twisted.ensureDeferred
async def test_sdk_message_tool_call_answer_is_a_tool_use_block(gw, env, fresh_upstream):
    answer = tool_call_answer("call_7", "get_weather", '{"city": "Oslo"}')
    fresh_upstream.set_json(CHAT, answer)
    message, headers = await create(
        env["anthropic"], model="fx-gpt", tools=[WEATHER_TOOL], tool_choice={"type": "any"}
    )
    (block,) = message.content
    assert (block.type, block.id, block.name, block.input) == (
        "tool_use",
        "call_7",
        "get_weather",
        {"city": "Oslo"},
    )
    assert message.stop_reason == "tool_use"
    assert only_request(fresh_upstream, CHAT).json["tool_choice"] == "required"
    assert await finalized(gw, headers) == ("ok", "200", 17)


@pytest_twisted.ensureDeferred
async def test_sdk_message_on_the_mock_model_echoes(gw, env):
    message, headers = await create(env["anthropic"], model="fx-echo", messages=user("ping pong"))
    assert [(b.type, b.text) for b in message.content] == [("text", "ping pong")]
    assert message.stop_reason == "end_turn" and message.model == "echo"
    # the mock's estimate of the chat it ran (twisted_gw.tokens): the messages' JSON,
    # '[{"role":"user","content":"ping pong"}]', is 39 characters, ceil(39 / 4) + 4
    # = 14; "ping pong" answered, 3
    assert (message.usage.input_tokens, message.usage.output_tokens) == (14, 3)
    assert await finalized(gw, headers) == ("ok", "200", 17)


# -- 2. messages.stream via chat -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sdk_message_stream_accumulates_text_and_usage(gw, env, fresh_upstream):
    final, headers = await streamed(env["anthropic"], model="fx-gpt")
    assert headers["content-type"].startswith("text/event-stream")
    assert [(b.type, b.text) for b in final.content] == [("text", DEFAULT_CONTENT)]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)
    sent = only_request(fresh_upstream, CHAT).json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert await finalized(gw, headers) == ("done", "200", 7)


@pytest_twisted.ensureDeferred
async def test_sdk_message_stream_of_tool_call_deltas_is_a_tool_use_block(gw, env, fresh_upstream):
    fresh_upstream.set_sse(CHAT, tool_call_chunks())
    final, headers = await streamed(env["anthropic"], model="fx-gpt", tools=[WEATHER_TOOL])
    (block,) = final.content
    assert (block.type, block.id, block.name) == ("tool_use", "call_w1", "get_weather")
    assert block.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 8
    assert await finalized(gw, headers) == ("done", "200", 17)


@pytest_twisted.ensureDeferred
async def test_message_stream_via_chat_is_anthropic_s_event_sequence_on_the_wire(
    gw, env, fresh_upstream
):
    body = {"model": "fx-gpt", "max_tokens": 32, "stream": True, "messages": user()}
    headers = {"x-api-key": env["key"], "content-type": "application/json"}
    result = await treq_stream("POST", gw.proxy + MESSAGES, headers=headers, json_body=body)
    assert result.status == 200 and result.ended == "done"
    assert result.headers["cache-control"] == "no-cache"
    events = sse_events(result.body)
    kinds = [kind for kind, _ in events]
    assert all(kind == data["type"] for kind, data in events)  # event: names its data
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    text = "".join(d["delta"]["text"] for k, d in events if k == "content_block_delta")
    assert text == DEFAULT_CONTENT and b"[DONE]" not in result.body
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == 4
    assert await finalized(gw, result.headers) == ("done", "200", 7)


@pytest_twisted.ensureDeferred
async def test_sdk_message_stream_on_the_mock_model(gw, env):
    final, headers = await streamed(env["anthropic"], model="fx-echo", messages=user("a b c"))
    assert final.content[0].text == "a b c" and final.stop_reason == "end_turn"
    # the estimate as above: 35 characters of messages, 9 + 4; "a b c", 2
    assert await finalized(gw, headers) == ("done", "200", 15)


# -- 3. errors through the SDK -------------------------------------------------------------


def anthropic_error_of(error: anthropic.APIStatusError) -> dict[str, Any]:
    """The body of an Anthropic-shaped error, checked for its request_id."""
    body = error.response.json()
    assert body["type"] == "error" and set(body) == {"type", "error", "request_id"}
    assert body["request_id"].startswith("req_") and len(body["request_id"]) == 36
    return body["error"]


@pytest_twisted.ensureDeferred
async def test_sdk_unknown_model_is_not_found_error(gw, env, fresh_upstream):
    client = env["anthropic"]
    error = await failing(
        anthropic.NotFoundError,
        client.messages.create,
        model="fx-nope",
        max_tokens=8,
        messages=user(),
    )
    assert error.status_code == 404
    assert anthropic_error_of(error) == {
        "type": "not_found_error",
        "message": "Model 'fx-nope' not found",
    }
    assert fresh_upstream.requests == []
    assert await finalized(gw, dict(error.response.headers)) == ("rejected", "404", 0)


@pytest_twisted.ensureDeferred
async def test_sdk_wrong_key_is_authentication_error_in_openai_s_shape(gw, env):
    stranger = anthropic_client(gw, "sk-not-a-gateway-key")
    error = await failing(
        anthropic.AuthenticationError,
        stranger.messages.create,
        model="fx-gpt",
        max_tokens=8,
        messages=user(),
    )
    # CONTRACT-NEXT 0: the proxy's auth answers in OpenAI's shape on every path
    assert error.status_code == 401
    assert error.response.json()["error"]["message"] == "Invalid API key"


@pytest_twisted.ensureDeferred
async def test_sdk_upstream_429_is_rate_limit_error_without_the_upstream_body(
    gw, env, fresh_upstream
):
    body = {"error": {"message": "slow down, sk-upstream-secret", "type": "rate_limit"}}
    fresh_upstream.set_json(CHAT, body, status=429)
    error = await failing(
        anthropic.RateLimitError,
        env["anthropic"].messages.create,
        model="fx-gpt",
        max_tokens=8,
        messages=user(),
    )
    assert error.status_code == 429
    assert anthropic_error_of(error) == {
        "type": "rate_limit_error",
        "message": "Rate limit exceeded",
    }
    assert b"sk-upstream-secret" not in error.response.content
    _, status, _ = await finalized(gw, dict(error.response.headers))
    assert status == "429"


@pytest_twisted.ensureDeferred
async def test_sdk_upstream_down_is_502_overloaded_error(gw, env):
    error = await failing(
        anthropic.InternalServerError,
        env["anthropic"].messages.create,
        model="fx-down",
        max_tokens=8,
        messages=user(),
    )
    assert error.status_code == 502
    assert anthropic_error_of(error) == {
        "type": "overloaded_error",
        "message": "Upstream service unavailable",
    }
    _, status, _ = await finalized(gw, dict(error.response.headers))
    assert status == "502"


@pytest_twisted.ensureDeferred
async def test_sdk_stream_on_a_down_upstream_is_a_json_error_before_any_event(gw, env):
    def run():
        with env["anthropic"].messages.stream(model="fx-down", max_tokens=8, messages=user()):
            pass

    error = await failing(anthropic.InternalServerError, run)
    assert error.status_code == 502
    assert error.response.headers["content-type"].startswith("application/json")
    assert anthropic_error_of(error)["type"] == "overloaded_error"


# -- 4. native: anthropic models -----------------------------------------------------------


NATIVE_SYSTEM = [
    {"type": "text", "text": "You are terse."},
    {"type": "text", "text": "A long cached preamble.", "cache_control": {"type": "ephemeral"}},
]
NATIVE_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Question?", "cache_control": {"type": "ephemeral"}},
        ],
    }
]
NATIVE_EXTRA = {"future_field": {"kept": [1, 2]}, "context_management": {"edits": []}}
BETA = "prompt-caching-2024-07-31,fine-grained-tool-streaming-2025-05-14"


def native_expected(**more: Any) -> dict[str, Any]:
    """The body the upstream must receive: the client's, ``model`` replaced."""
    return {
        "model": CLAUDE,
        "max_tokens": 128,
        "system": NATIVE_SYSTEM,
        "messages": NATIVE_MESSAGES,
        "metadata": {"user_id": "u-42"},
        **NATIVE_EXTRA,
        **more,
    }


@pytest_twisted.ensureDeferred
async def test_native_message_passes_the_client_s_body_and_beta_header_through(
    gw, env, fresh_upstream
):
    answer = {
        "id": "msg_native1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x-20250101",
        "content": [{"type": "text", "text": "Terse."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 30,
            "output_tokens": 5,
        },
        "upstream_novelty": {"x": True},
    }
    fresh_upstream.set_json(MESSAGES, answer)
    raw = await in_thread(
        env["anthropic"].messages.with_raw_response.create,
        model="fx-claude",
        max_tokens=128,
        system=NATIVE_SYSTEM,
        messages=NATIVE_MESSAGES,
        metadata={"user_id": "u-42"},
        extra_body=NATIVE_EXTRA,
        extra_headers={"anthropic-beta": BETA},
    )
    assert raw.status_code == 200
    assert json.loads(raw.http_response.content) == answer  # the upstream's, unknown key too
    assert raw.parse().usage.cache_read_input_tokens == 30
    seen = only_request(fresh_upstream, MESSAGES)
    assert seen.json == native_expected()
    assert seen.headers["anthropic-beta"] == BETA
    assert seen.headers["x-api-key"] == env["provider_key"]
    assert (
        seen.headers["anthropic-version"] == env["anthropic"].default_headers["anthropic-version"]
    )
    assert env["key"] not in json.dumps(seen.headers)
    headers = dict(raw.headers)
    assert await finalized(gw, headers) == ("ok", "200", 47)
    (line,) = logfmt_lines(gw.process, headers["x-request-id"])
    assert (line["path"], line["model"], line["status"]) == (MESSAGES, "fx-claude", "200")
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (
        "42",
        "5",
        "47",
    )


@pytest_twisted.ensureDeferred
async def test_native_stream_relays_the_upstream_s_events_one_for_one(gw, env, fresh_upstream):
    upstream_events = ae.tool_stream()  # text, a ping, two tool calls, cache usage
    fresh_upstream.set_sse(MESSAGES, ae.frames(upstream_events))
    body = {**native_expected(), "model": "fx-claude", "stream": True}
    headers = {
        "x-api-key": env["key"],
        "anthropic-version": "2023-06-01",
        "anthropic-beta": BETA,
        "content-type": "application/json",
    }
    result = await treq_stream("POST", gw.proxy + MESSAGES, headers=headers, json_body=body)
    assert result.status == 200 and result.ended == "done"
    assert result.headers["content-type"].startswith("text/event-stream")
    assert sse_events(result.body) == [(e["type"], e) for e in upstream_events]
    seen = only_request(fresh_upstream, MESSAGES)
    assert seen.json == native_expected(stream=True)
    assert (seen.headers["anthropic-beta"], seen.headers["anthropic-version"]) == (
        BETA,
        "2023-06-01",
    )
    # usage: input 20 + cache_creation 3 + cache_read 100, output 42
    assert await finalized(gw, result.headers) == ("done", "200", 165)
    (line,) = logfmt_lines(gw.process, result.headers["x-request-id"])
    assert (line["path"], line["status"], line["end"]) == (MESSAGES, "200", "done")
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (
        "123",
        "42",
        "165",
    )


@pytest_twisted.ensureDeferred
async def test_native_stream_through_the_sdk_accumulates_tool_use(gw, env, fresh_upstream):
    fresh_upstream.set_sse(MESSAGES, ae.frames(ae.tool_stream()))
    final, headers = await streamed(
        env["anthropic"], model="fx-claude", tools=[WEATHER_TOOL], messages=user("weather?")
    )
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Let me check."
    assert final.content[1].input == {"city": "Paris"} and final.content[2].input == {"tz": "CET"}
    assert final.stop_reason == "tool_use" and final.usage.cache_read_input_tokens == 100
    sent = only_request(fresh_upstream, MESSAGES).json
    assert sent["model"] == CLAUDE and sent["tools"] == [WEATHER_TOOL]
    assert await finalized(gw, headers) == ("done", "200", 165)


@pytest_twisted.ensureDeferred
async def test_cache_control_on_a_message_block_is_refused_only_when_translating(
    gw, env, fresh_upstream
):
    error = await failing(
        anthropic.BadRequestError,
        env["anthropic"].messages.create,
        model="fx-gpt",
        max_tokens=8,
        messages=NATIVE_MESSAGES,
    )
    assert anthropic_error_of(error) == {
        "type": "invalid_request_error",
        "message": "Invalid request",
    }
    assert fresh_upstream.requests == []
    message, _ = await create(env["anthropic"], model="fx-claude", messages=NATIVE_MESSAGES)
    assert message.content[0].text == DEFAULT_CONTENT  # the mock's default Messages answer
    assert only_request(fresh_upstream, MESSAGES).json["messages"] == NATIVE_MESSAGES


# -- 5. the Responses API through the openai SDK ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sdk_response_and_its_continuation_carry_the_first_turn(gw, env, fresh_upstream):
    client = env["openai"]
    first, headers = await respond(client, model="fx-gpt", input="hi", instructions="Be kind.")
    assert first.id.startswith("aresp_") and first.status == "completed"
    assert first.output_text == DEFAULT_CONTENT and first.model == "gpt-4o-mini"
    assert (first.usage.input_tokens, first.usage.output_tokens) == (3, 4)
    assert only_request(fresh_upstream, CHAT).json["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hi"},
    ]
    assert await finalized(gw, headers) == ("ok", "200", 7)
    fresh_upstream.reset()
    second, headers = await respond(
        client, model="fx-gpt", input="and then?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.id != first.id
    assert only_request(fresh_upstream, CHAT).json["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": DEFAULT_CONTENT},
        {"role": "user", "content": "and then?"},
    ]
    assert await finalized(gw, headers) == ("ok", "200", 7)


@pytest_twisted.ensureDeferred
async def test_sdk_response_stream_final_response_and_continuation(gw, env, fresh_upstream):
    client = env["openai"]

    def run():
        with client.responses.stream(model="fx-gpt", input="stream it") as stream:
            kinds = [event.type for event in stream]
            return kinds, stream.get_final_response(), dict(stream._response.headers)

    kinds, final, headers = await in_thread(run)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert final.output_text == DEFAULT_CONTENT and final.id.startswith("aresp_")
    assert final.usage.total_tokens == 7
    assert only_request(fresh_upstream, CHAT).json["stream_options"] == {"include_usage": True}
    assert await finalized(gw, headers) == ("done", "200", 7)
    fresh_upstream.reset()
    await respond(client, model="fx-gpt", input="more", previous_response_id=final.id)
    assert only_request(fresh_upstream, CHAT).json["messages"][:2] == [
        {"role": "user", "content": "stream it"},
        {"role": "assistant", "content": DEFAULT_CONTENT},
    ]


@pytest_twisted.ensureDeferred
async def test_sdk_response_function_call_round_trip(gw, env, fresh_upstream):
    client = env["openai"]
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather of a city",
            "parameters": WEATHER_TOOL["input_schema"],
        }
    ]
    fresh_upstream.set_json(CHAT, tool_call_answer("call_r1", "get_weather", '{"city":"Rome"}'))
    first, _ = await respond(client, model="fx-gpt", input="weather in Rome?", tools=tools)
    (call,) = first.output
    assert (call.type, call.call_id, call.name) == ("function_call", "call_r1", "get_weather")
    assert json.loads(call.arguments) == {"city": "Rome"}
    sent = only_request(fresh_upstream, CHAT).json
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather of a city",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    fresh_upstream.reset()
    output = {"type": "function_call_output", "call_id": "call_r1", "output": "sunny, 24C"}
    second, headers = await respond(
        client, model="fx-gpt", input=[output], tools=tools, previous_response_id=first.id
    )
    assert second.output_text == DEFAULT_CONTENT
    messages = only_request(fresh_upstream, CHAT).json["messages"]
    assert messages[0] == {"role": "user", "content": "weather in Rome?"}
    assert messages[1]["role"] == "assistant"
    assert [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in messages[1]["tool_calls"]
    ] == [("call_r1", "get_weather", {"city": "Rome"})]
    assert messages[2:] == [{"role": "tool", "tool_call_id": "call_r1", "content": "sunny, 24C"}]
    assert await finalized(gw, headers) == ("ok", "200", 7)


@pytest_twisted.ensureDeferred
async def test_sdk_response_of_another_key_does_not_exist(gw, env, fresh_upstream):
    first, _ = await respond(env["openai"], model="fx-gpt", input="mine")
    fresh_upstream.reset()
    error = await failing(
        openai.BadRequestError,
        openai_client(gw, env["other_key"]).responses.create,
        model="fx-gpt",
        input="theirs",
        previous_response_id=first.id,
    )
    assert error.status_code == 400 and error.code == "gateway_error"
    assert error.response.json()["error"]["message"] == (
        f"validation: previous_response_not_found: {first.id}"
    )
    assert fresh_upstream.requests == []
    _, status, _ = await finalized(gw, dict(error.response.headers))
    assert status == "400"


@pytest_twisted.ensureDeferred
async def test_sdk_response_with_store_false_cannot_be_continued(gw, env, fresh_upstream):
    client = env["openai"]
    first, _ = await respond(client, model="fx-gpt", input="forget me", store=False)
    assert first.output_text == DEFAULT_CONTENT
    error = await failing(
        openai.BadRequestError,
        client.responses.create,
        model="fx-gpt",
        input="again",
        previous_response_id=first.id,
    )
    assert error.status_code == 400
    assert error.response.json()["error"]["message"] == (
        f"validation: previous_response_not_found: {first.id}"
    )
    assert len(fresh_upstream.requests) == 1


# -- 6. limits and routing apply -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_model_over_its_rpm_refuses_the_next_message_with_retry_after(
    gw, upstream, fresh_upstream
):
    name = await fresh_model(gw, upstream.base_url, rate_limit={"rpm": 1})
    key = await gw.add_key([name])
    client = anthropic_client(gw, key)
    await create(client, model=name)
    error = await failing(
        anthropic.RateLimitError, client.messages.create, model=name, max_tokens=8, messages=user()
    )
    assert error.status_code == 429
    assert anthropic_error_of(error) == {
        "type": "rate_limit_error",
        "message": "Rate limit exceeded",
    }
    assert int(error.response.headers["retry-after"]) >= 1
    assert len(fresh_upstream.requests) == 1  # the second never left the gateway
    end, status, _ = await finalized(gw, dict(error.response.headers))
    assert (end, status) == ("rejected", "429")


@pytest_twisted.ensureDeferred
async def test_a_refused_deployment_is_retried_on_the_next_for_both_apis(
    gw, upstream, refused, fresh_upstream
):
    target = {
        "model": "openai/gpt-one",
        "provider_config": {"api_key": secret("sk-provider"), "api_base": upstream.base_url},
    }
    # one model per API, so the first's failure counts toward no cooldown of the second
    names = [await fresh_model(gw, refused, weight=HEAVY, targets=[target]) for _ in range(2)]
    key = await gw.add_key(names)
    message, headers = await create(anthropic_client(gw, key), model=names[0])
    assert message.content[0].text == DEFAULT_CONTENT and message.model == "gpt-one"
    assert headers["x-gateway-attempts"] == "2"
    (line,) = logfmt_lines(gw.process, headers["x-request-id"])
    assert (line["path"], line["attempts"], line["target"]) == (MESSAGES, "2", f"{names[0]}#1")
    response, headers = await respond(openai_client(gw, key), model=names[1], input="hi")
    assert response.output_text == DEFAULT_CONTENT and headers["x-gateway-attempts"] == "2"
    (line,) = logfmt_lines(gw.process, headers["x-request-id"])
    assert (line["path"], line["attempts"], line["target"]) == (RESPONSES, "2", f"{names[1]}#1")
    assert [r.json["model"] for r in fresh_upstream.requests] == ["gpt-one", "gpt-one"]


# -- 7. metrics, the access log, one finalize ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_each_api_counts_under_its_endpoint_with_one_access_line(gw, env, fresh_upstream):
    count = "aisix_request_count_total"
    before = await scrape(gw)
    _, m_headers = await create(env["anthropic"], model="fx-gpt")
    _, s_headers = await streamed(env["anthropic"], model="fx-gpt")
    _, r_headers = await respond(env["openai"], model="fx-gpt", input="hi")
    error = await failing(
        anthropic.NotFoundError,
        env["anthropic"].messages.create,
        model="fx-nope",
        max_tokens=8,
        messages=user(),
    )
    assert await finalized(gw, m_headers) == ("ok", "200", 7)
    assert await finalized(gw, s_headers) == ("done", "200", 7)
    assert await finalized(gw, r_headers) == ("ok", "200", 7)
    after = await scrape(gw)
    ok = {"method": "POST", "status_code": "200"}
    assert delta(before, after, count, endpoint=MESSAGES, **ok) == 2
    assert delta(before, after, count, endpoint=RESPONSES, **ok) == 1
    assert delta(before, after, count, endpoint=MESSAGES, method="POST", status_code="404") == 1
    assert delta(before, after, count, endpoint=CHAT, **ok) == 0
    for headers, path, end in [
        (m_headers, MESSAGES, "ok"),
        (s_headers, MESSAGES, "done"),
        (r_headers, RESPONSES, "ok"),
    ]:
        (line,) = logfmt_lines(gw.process, headers["x-request-id"])
        assert (line["path"], line["model"], line["status"], line["end"]) == (
            path,
            "fx-gpt",
            "200",
            end,
        )
        assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (
            "3",
            "4",
            "7",
        )
    (line,) = logfmt_lines(gw.process, error.response.headers["x-request-id"])
    # CONTRACT 5.4: an unknown model is logged as sent (a key in its place would be
    # [redacted]: tests/test_logs_explain_blackbox.py), with the 4.1 code of the answer
    assert (line["path"], line["status"], line["model"]) == (MESSAGES, "404", "fx-nope")
    assert line["error"] == "model_not_found"
