"""Every provider family through the running gateway (CONTRACT 2, 4.1-4.4),
black-box: anthropic (native Messages API, translated both ways, streams
included), gemini, deepseek and any OpenAI-compatible server by ``api_base``,
each against the real mock upstream, with the test-only finalize counter
proving finalize ran exactly once on every path. Last, the official ``openai``
SDK runs the same client code against models of all four families and must
get equivalent answers, streams and tool calls.
"""

from __future__ import annotations

import json

import openai
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from tests.conftest import secret
from tests.streamcheck import counted_gateway, no_unhandled_errors, wait_finalized
from tests.support import anthropic_events as ae
from tests.support.gateway import treq_json, treq_stream
from tests.support.mock_upstream import DEFAULT_CONTENT, chat_chunk, sse_event

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
GEMINI_CHAT = "/v1beta/openai/chat/completions"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "providers", upstream_timeout=2)


@pytest.fixture(scope="module")
def setup(gw, upstream):
    state = {"provider_key": secret("sk-ant-provider")}

    async def build():
        base = upstream.base_url  # http://127.0.0.1:<port>/v1
        pc = {"api_key": state["provider_key"], "api_base": base + "/"}  # trailing / ignored
        await gw.add_model("claude", "anthropic/claude-test-20250101", pc)
        await gw.add_model("claude-fast", "anthropic/claude-test-20250101", pc, timeout=300)
        gem = {"api_key": state["provider_key"], "api_base": base + "beta/openai"}
        await gw.add_model("gem", "gemini/gemini-2.0-flash", gem)
        await gw.add_model("deep", "deepseek/deepseek-reasoner", pc)
        await gw.add_model("gpt", "openai/gpt-4o-mini", pc)
        await gw.add_model("gpt-fast", "openai/gpt-4o-mini", pc, timeout=300)
        local = {"api_key": "unused", "api_base": base.removesuffix("/v1") + "/local/v1"}
        await gw.add_model("local", "openai/org/some-model:q4", local)
        names = ["claude", "claude-fast", "gem", "deep", "gpt", "local", "gpt-fast"]
        state["key"] = await gw.add_key(names)

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    state["sdk"] = openai.OpenAI(
        api_key=state["key"], base_url=gw.proxy + "/v1", max_retries=0, timeout=10
    )
    return state


def user(text="hi"):
    return [{"role": "user", "content": text}]


async def chat(gw, setup, model="claude", **body):
    doc = {"model": model, "messages": user(), **body}
    status, headers, raw = await gw.chat(setup["key"], doc)
    return status, headers, json.loads(raw)


async def stream(gw, setup, model="claude", **kw):
    body = {"model": model, "stream": True, "messages": user(), **kw.pop("body", {})}
    headers = {"Authorization": f"Bearer {setup['key']}", "Content-Type": "application/json"}
    return await treq_stream("POST", gw.proxy + CHAT, headers=headers, json_body=body, **kw)


async def finalized(gw, headers):
    return await wait_finalized(gw.process, headers["x-request-id"])


def anthropic_error(kind, message):
    return {"type": "error", "error": {"type": kind, "message": message}}


# -- anthropic, non-stream ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_anthropic_chat_is_a_messages_call_answered_as_a_chat_completion(
    gw, setup, fresh_upstream
):
    status, headers, doc = await chat(
        gw,
        setup,
        messages=[{"role": "system", "content": "Be brief."}, *user("Hello")],
        temperature=0.3,
        stop=["\n\n"],
        user="end-user-1",
    )
    assert status == 200 and headers["content-type"] == "application/json"
    assert doc["object"] == "chat.completion"
    assert doc["id"] == "msg_mock" and doc["model"] == "claude-test-20250101"  # the upstream's
    assert doc["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": DEFAULT_CONTENT, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert doc["usage"]["total_tokens"] == 7
    (seen,) = fresh_upstream.requests
    assert seen.path == MESSAGES
    assert seen.headers["x-api-key"] == setup["provider_key"]
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    assert seen.json == {
        "model": "claude-test-20250101",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "system": [{"type": "text", "text": "Be brief."}],
        "max_tokens": 4096,
        "temperature": 0.3,
        "stop_sequences": ["\n\n"],
        "metadata": {"user_id": "end-user-1"},
    }
    assert await finalized(gw, headers) == ("ok", "200", 7)


@pytest_twisted.ensureDeferred
async def test_anthropic_tool_use_answer_becomes_tool_calls(gw, setup, fresh_upstream):
    fresh_upstream.set_json(
        MESSAGES,
        {
            "id": "msg_tools",
            "type": "message",
            "role": "assistant",
            "model": "claude-test-20250101",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "x"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 3},
        },
    )
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    status, headers, doc = await chat(gw, setup, tools=tools, tool_choice="required")
    choice = doc["choices"][0]
    assert status == 200 and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_9",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        }
    ]
    assert doc["usage"]["prompt_tokens"] == 15 and doc["usage"]["total_tokens"] == 18
    sent = fresh_upstream.requests[0].json
    assert sent["tools"] == [{"name": "lookup", "input_schema": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "any"}
    assert await finalized(gw, headers) == ("ok", "200", 18)


@pytest.mark.parametrize(
    "status, body, expected_status, expected_code, expected_message",
    [
        (
            400,
            anthropic_error("invalid_request_error", "messages: roles must alternate"),
            400,
            "provider_error",
            "messages: roles must alternate",
        ),
        (404, anthropic_error("not_found_error", "model: x"), 404, "provider_error", "model: x"),
        (429, anthropic_error("rate_limit_error", "Too many"), 429, "provider_error", "Too many"),
        (
            401,
            anthropic_error("authentication_error", "invalid x-api-key"),
            502,
            "provider_error",
            "Provider error: upstream rejected the provider credentials (401)",
        ),
        (
            529,
            anthropic_error("overloaded_error", "Overloaded"),
            502,
            "provider_error",
            "Provider error: upstream returned status 529: Overloaded",
        ),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
@pytest_twisted.ensureDeferred
async def test_anthropic_error_bodies_map_to_the_contract_errors(
    gw,
    setup,
    fresh_upstream,
    streaming,
    status,
    body,
    expected_status,
    expected_code,
    expected_message,
):
    fresh_upstream.set_json(MESSAGES, body, status=status)
    if streaming:
        result = await stream(gw, setup)
        got_status, headers, raw = result.status, result.headers, result.body
    else:
        got_status, headers, raw = await gw.chat(
            setup["key"], {"model": "claude", "messages": user()}
        )
    error = json.loads(raw)["error"]
    assert got_status == expected_status and headers["content-type"] == "application/json"
    assert (error["code"], error["message"]) == (expected_code, expected_message)
    types = {429: "rate_limit_error", 502: "server_error"}
    assert error["type"] == types.get(expected_status, "invalid_request_error")
    assert (await finalized(gw, headers))[:2] == ("upstream_error", str(expected_status))


@pytest_twisted.ensureDeferred
async def test_anthropic_secret_echoed_in_an_error_is_redacted(gw, setup, fresh_upstream):
    key = setup["provider_key"]
    fresh_upstream.set_json(MESSAGES, anthropic_error("invalid_request_error", f"bad {key}"), 400)
    status, _, doc = await chat(gw, setup)
    assert status == 400 and key not in json.dumps(doc) and "[redacted]" in doc["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_anthropic_untranslatable_request_is_400_without_an_upstream_call(
    gw, setup, fresh_upstream
):
    status, headers, doc = await chat(gw, setup, n=3)
    assert status == 400 and doc["error"]["code"] == "unsupported_parameter"
    assert doc["error"]["type"] == "invalid_request_error"
    result = await stream(gw, setup, body={"logprobs": True})
    assert (
        result.status == 400 and json.loads(result.body)["error"]["code"] == "unsupported_parameter"
    )
    assert fresh_upstream.requests == []
    assert (await finalized(gw, headers))[:2] == ("rejected", "400")
    assert (await finalized(gw, result.headers))[:2] == ("rejected", "400")


@pytest_twisted.ensureDeferred
async def test_anthropic_has_no_embeddings(gw, setup):
    status, _, raw = await gw.chat(
        setup["key"], {"model": "claude", "input": "x"}, path="/v1/embeddings"
    )
    error = json.loads(raw)["error"]
    assert status == 400 and error["code"] == "unsupported_endpoint"
    assert error["message"] == "Model 'claude' does not support embeddings"


@pytest.mark.parametrize("model, path", [("claude-fast", MESSAGES), ("gpt-fast", CHAT)])
@pytest_twisted.ensureDeferred
async def test_non_stream_timeout_is_504_also_on_a_reused_upstream_connection(
    gw, setup, fresh_upstream, model, path
):
    status, _, _ = await chat(gw, setup, model=model)  # leaves a pooled connection
    assert status == 200
    fresh_upstream.set_delay(path, 3)
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    started = reactor.seconds()
    status, headers, doc = await chat(gw, setup, model=model)
    assert status == 504 and doc["error"]["code"] == "request_timeout"
    assert reactor.seconds() - started < 1.5
    await gone
    assert (await finalized(gw, headers))[:2] == ("timeout", "504")


# -- anthropic, streams ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_anthropic_stream_becomes_openai_chunks_then_done(gw, setup, fresh_upstream):
    result = await stream(gw, setup)
    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.headers["cache-control"] == "no-cache"
    assert result.data[-1] == "[DONE]" and result.data.count("[DONE]") == 1
    chunks = result.json_chunks
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_mock" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": DEFAULT_CONTENT}
    assert chunks[2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 7
    (seen,) = fresh_upstream.requests
    assert seen.json["stream"] is True and "stream_options" not in seen.json
    assert seen.headers["accept"] == "text/event-stream"
    assert await finalized(gw, result.headers) == ("done", "200", 7)


@pytest_twisted.ensureDeferred
async def test_anthropic_stream_ends_at_message_stop_though_the_upstream_keeps_its_body_open(
    gw, setup, fresh_upstream
):
    """One end-of-stream rule for every dialect (issue 12): [DONE] follows
    message_stop at once, as it follows an OpenAI upstream's [DONE]; before,
    the stream waited for the body and the 2 s idle timeout cut it."""
    fresh_upstream.set_sse(MESSAGES, ae.frames(ae.text_stream("hi")), end="hang")
    result = await stream(gw, setup)
    assert result.data[-1] == "[DONE]"
    assert result.ended_at - result.started_at < 1.0
    assert (await finalized(gw, result.headers))[:2] == ("done", "200")


@pytest_twisted.ensureDeferred
async def test_anthropic_stream_with_tool_calls(gw, setup, fresh_upstream):
    fresh_upstream.set_sse(MESSAGES, ae.frames(ae.tool_stream()), gap=0.005)
    result = await stream(gw, setup)
    chunks = result.json_chunks
    assert result.data[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    calls: dict[int, dict] = {}
    for d in deltas:
        for tc in d.get("tool_calls", []):
            call = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
            call["id"] = tc.get("id") or call["id"]
            call["name"] = tc.get("function", {}).get("name") or call["name"]
            call["arguments"] += tc.get("function", {}).get("arguments") or ""
    assert text == "Let me check."
    assert calls == {
        0: {"id": "toolu_01A", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        1: {"id": "toolu_01B", "name": "get_time", "arguments": '{"tz": "CET"}'},
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 123,
        "completion_tokens": 42,
        "total_tokens": 165,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert await finalized(gw, result.headers) == ("done", "200", 165)


@pytest_twisted.ensureDeferred
async def test_anthropic_error_event_mid_stream_ends_without_done_and_drops_upstream(
    gw, setup, fresh_upstream
):
    events = [ae.message_start(), *ae.text_block(0, "par"), ae.error_event()]
    fresh_upstream.set_sse(MESSAGES, ae.frames(events), gap=0.02, end="hang")
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    result = await stream(gw, setup)
    assert result.status == 200 and "[DONE]" not in result.data
    assert [c["choices"][0]["delta"] for c in result.json_chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "par"},
    ]
    await gone  # the gateway closed the upstream connection itself
    assert (await finalized(gw, result.headers))[0] == "upstream_cut"


@pytest_twisted.ensureDeferred
async def test_anthropic_error_event_before_any_chunk_is_502_json(gw, setup, fresh_upstream):
    fresh_upstream.set_sse(MESSAGES, [ae.frame(ae.error_event())], end="hang")
    result = await stream(gw, setup)
    error = json.loads(result.body)["error"]
    assert result.status == 502 and result.headers["content-type"] == "application/json"
    assert error["code"] == "provider_error"
    assert "overloaded_error" in error["message"] and "Overloaded" in error["message"]
    assert (await finalized(gw, result.headers))[:2] == ("upstream_error", "502")


@pytest.mark.parametrize("end", ["cut", "reset", "close"])
@pytest_twisted.ensureDeferred
async def test_anthropic_stream_ending_before_message_stop_has_no_done(
    gw, setup, fresh_upstream, end
):
    events = [ae.message_start(), *ae.text_block(0, "half")]
    fresh_upstream.set_sse(MESSAGES, ae.frames(events), end=end, end_delay=0.1)
    result = await stream(gw, setup)
    assert result.status == 200 and "[DONE]" not in result.data
    assert len(result.json_chunks) == 2
    assert (await finalized(gw, result.headers))[0] == "upstream_cut"


@pytest_twisted.ensureDeferred
async def test_anthropic_empty_stream_is_200_without_events(gw, setup, fresh_upstream):
    fresh_upstream.set_sse(MESSAGES, [ae.frame(ae.PING)])
    result = await stream(gw, setup)
    assert result.status == 200 and result.headers["content-type"] == "text/event-stream"
    assert b"data:" not in result.body
    assert await finalized(gw, result.headers) == ("empty", "200", 0)


@pytest_twisted.ensureDeferred
async def test_anthropic_stream_timeouts_first_chunk_and_idle(gw, setup, fresh_upstream):
    fresh_upstream.set_delay(MESSAGES, 3)
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    result = await stream(gw, setup, model="claude-fast")
    assert result.status == 504 and json.loads(result.body)["error"]["code"] == "request_timeout"
    await gone
    assert (await finalized(gw, result.headers))[:2] == ("timeout", "504")

    fresh_upstream.reset()
    events = [ae.message_start(), *ae.text_block(0, "a")]
    fresh_upstream.set_sse(MESSAGES, ae.frames(events), end="hang")
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    result = await stream(gw, setup, model="claude-fast")
    assert result.status == 200 and "[DONE]" not in result.data and len(result.json_chunks) == 2
    await gone
    assert (await finalized(gw, result.headers))[0] == "timeout"


@pytest_twisted.ensureDeferred
async def test_anthropic_client_gone_mid_stream_cancels_upstream(gw, setup, fresh_upstream):
    pieces = [f"w{i} " for i in range(20)]
    fresh_upstream.set_sse(MESSAGES, ae.frames(ae.text_stream(*pieces)), gap=0.05, end="hang")
    gone = fresh_upstream.wait_for_disconnect(timeout=5)
    result = await stream(gw, setup, stop_when=lambda body: body.count(b"data:") >= 3)
    assert result.ended == "stopped"
    await gone
    (seen,) = fresh_upstream.requests
    assert seen.client_gone and seen.ended_at - result.ended_at < 0.1
    assert (await finalized(gw, result.headers))[:2] == ("client_gone", "200")


@pytest_twisted.ensureDeferred
async def test_anthropic_slow_steady_stream_is_not_cut(gw, setup, fresh_upstream):
    events = ae.frames(ae.text_stream("a", "b", "c"))  # 8 events x 0.1 s > 300 ms in total
    fresh_upstream.set_sse(MESSAGES, events, gap=0.1)
    result = await stream(gw, setup, model="claude-fast")
    assert result.data[-1] == "[DONE]"


# -- gemini, deepseek, any OpenAI-compatible server ------------------------------------------------


def openai_events(*chunks):
    return [sse_event(c) for c in chunks] + [sse_event("[DONE]")]


@pytest_twisted.ensureDeferred
async def test_gemini_streams_through_its_openai_endpoint_with_bearer(gw, setup, fresh_upstream):
    chunks = [
        chat_chunk("", role="assistant", model="gemini-2.0-flash"),
        chat_chunk("Bonjour", model="gemini-2.0-flash"),
        chat_chunk(finish_reason="stop", model="gemini-2.0-flash"),
        chat_chunk(
            usage={"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
            model="gemini-2.0-flash",
        ),
    ]
    fresh_upstream.set_sse(GEMINI_CHAT, openai_events(*chunks))
    result = await stream(gw, setup, model="gem")
    assert result.data == [json.dumps(c, separators=(",", ":")) for c in chunks] + ["[DONE]"]
    (seen,) = fresh_upstream.requests
    assert seen.path == GEMINI_CHAT
    assert seen.headers["authorization"] == f"Bearer {setup['provider_key']}"
    assert seen.json["model"] == "gemini-2.0-flash"
    assert seen.json["stream_options"] == {"include_usage": True}
    assert await finalized(gw, result.headers) == ("done", "200", 3)


@pytest_twisted.ensureDeferred
async def test_gemini_embeddings_work_and_deepseek_has_none(gw, setup, fresh_upstream):
    status, _, raw = await gw.chat(
        setup["key"], {"model": "gem", "input": ["a"]}, path="/v1/embeddings"
    )
    assert status == 200 and json.loads(raw)["model"] == "gem"
    assert fresh_upstream.requests[0].path == "/v1beta/openai/embeddings"
    status, _, raw = await gw.chat(
        setup["key"], {"model": "deep", "input": "a"}, path="/v1/embeddings"
    )
    assert status == 400 and json.loads(raw)["error"]["code"] == "unsupported_endpoint"


@pytest_twisted.ensureDeferred
async def test_deepseek_reasoning_content_deltas_are_relayed_untouched(gw, setup, fresh_upstream):
    def reasoning(text):
        c = chat_chunk(model="deepseek-reasoner")
        c["choices"][0]["delta"] = {"content": None, "reasoning_content": text}
        return c

    chunks = [
        chat_chunk(role="assistant", content="", model="deepseek-reasoner"),
        reasoning("Let me think"),
        reasoning(" about 2+2…"),
        chat_chunk("4", model="deepseek-reasoner"),
        chat_chunk(finish_reason="stop", model="deepseek-reasoner"),
        chat_chunk(
            usage={
                "prompt_tokens": 5,
                "completion_tokens": 9,
                "total_tokens": 14,
                "completion_tokens_details": {"reasoning_tokens": 7},
            },
            model="deepseek-reasoner",
        ),
    ]
    raw = [json.dumps(c, ensure_ascii=False) for c in chunks]  # spaces, non-ASCII: as sent
    fresh_upstream.set_sse(CHAT, [sse_event(r) for r in raw] + [sse_event("[DONE]")])
    result = await stream(gw, setup, model="deep")
    assert result.data == raw + ["[DONE]"]  # byte-identical
    assert fresh_upstream.requests[0].headers["authorization"].startswith("Bearer ")
    assert await finalized(gw, result.headers) == ("done", "200", 14)


@pytest_twisted.ensureDeferred
async def test_any_openai_compatible_server_by_api_base(gw, setup, fresh_upstream):
    path = "/local/v1/chat/completions"
    fresh_upstream.set_sse(path, openai_events(chat_chunk("", role="assistant"), chat_chunk("ok")))
    result = await stream(gw, setup, model="local")
    assert [c["choices"][0]["delta"].get("content") for c in result.json_chunks] == ["", "ok"]
    assert result.data[-1] == "[DONE]"
    (seen,) = fresh_upstream.requests
    assert seen.path == path and seen.json["model"] == "org/some-model:q4"


# -- the official openai SDK, the same client code for every family ---------------------------


def sdk_stream(client, model, **kwargs):
    """Run one streaming call the way an SDK user writes it; collect the answer."""
    text, finish, usage, calls = "", None, None, {}
    for chunk in client.chat.completions.create(model=model, stream=True, **kwargs):
        if chunk.usage:
            usage = chunk.usage.total_tokens
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = tc.id or call["id"]
                if tc.function:
                    call["name"] += tc.function.name or ""
                    call["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    return {"text": text, "finish": finish, "usage": usage, "calls": calls}


def program_tool_stream(upstream, family):
    """The same answer (text, two tool calls, usage 165) in each family's wire format."""
    if family == "anthropic":
        upstream.set_sse(MESSAGES, ae.frames(ae.tool_stream()), gap=0.002)
        return
    path = GEMINI_CHAT if family == "gemini" else CHAT

    def call(index, call_id=None, name=None, arguments=""):
        c = chat_chunk()
        tc = {"index": index, "function": {"arguments": arguments}}
        if call_id:
            tc.update(id=call_id, type="function")
            tc["function"]["name"] = name
        c["choices"][0]["delta"] = {"tool_calls": [tc]}
        return c

    upstream.set_sse(
        path,
        openai_events(
            chat_chunk("", role="assistant"),
            chat_chunk("Let me "),
            chat_chunk("check."),
            call(0, "toolu_01A", "get_weather"),
            call(0, arguments='{"city": '),
            call(0, arguments='"Paris"}'),
            call(1, "toolu_01B", "get_time"),
            call(1, arguments='{"tz": "CET"}'),
            chat_chunk(finish_reason="tool_calls"),
            chat_chunk(usage={"prompt_tokens": 123, "completion_tokens": 42, "total_tokens": 165}),
        ),
        gap=0.002,
    )


TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("get_weather", "get_time")
]


@pytest.mark.parametrize(
    "family, model",
    [("anthropic", "claude"), ("openai", "gpt"), ("gemini", "gem"), ("deepseek", "deep")],
)
@pytest_twisted.ensureDeferred
async def test_sdk_gets_equivalent_streamed_tool_calls_from_every_family(
    setup, fresh_upstream, family, model
):
    program_tool_stream(fresh_upstream, family)
    answer = await threads.deferToThread(
        sdk_stream, setup["sdk"], model, messages=user("Weather?"), tools=TOOLS
    )
    assert answer == {
        "text": "Let me check.",
        "finish": "tool_calls",
        "usage": 165,
        "calls": {
            0: {"id": "toolu_01A", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            1: {"id": "toolu_01B", "name": "get_time", "arguments": '{"tz": "CET"}'},
        },
    }


@pytest.mark.parametrize("model", ["claude", "gpt", "gem", "deep"])
@pytest_twisted.ensureDeferred
async def test_sdk_gets_equivalent_plain_answers_from_every_family(setup, fresh_upstream, model):
    client = setup["sdk"]
    completion = await threads.deferToThread(
        client.chat.completions.create, model=model, messages=user("Say hi")
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 7
    answer = await threads.deferToThread(sdk_stream, client, model, messages=user("Say hi"))
    assert answer == {"text": DEFAULT_CONTENT, "finish": "stop", "usage": 7, "calls": {}}


@pytest_twisted.ensureDeferred
async def test_sdk_tool_result_round_trip_on_anthropic(setup, fresh_upstream):
    client = setup["sdk"]
    fresh_upstream.set_json(
        MESSAGES,
        {
            "id": "msg_r1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test-20250101",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_r1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                }
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 30, "output_tokens": 10},
        },
    )
    messages = [{"role": "system", "content": "Use tools."}, *user("Weather in Oslo?")]
    first = await threads.deferToThread(
        client.chat.completions.create, model="claude", messages=messages, tools=TOOLS
    )
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert (call.id, call.function.name) == ("toolu_r1", "get_weather")
    result = {"city": json.loads(call.function.arguments)["city"], "temp_c": -3}

    # the client runs the tool and sends the result back, as SDK users do
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    fresh_upstream.reset()
    events = [
        ae.message_start(msg_id="msg_r2"),
        *ae.text_block(0, "It is ", "-3°C."),
        *ae.message_end(),
    ]
    fresh_upstream.set_sse(MESSAGES, ae.frames(events))
    answer = await threads.deferToThread(
        sdk_stream, client, "claude", messages=messages, tools=TOOLS
    )
    assert answer["text"] == "It is -3°C." and answer["finish"] == "stop"

    sent = fresh_upstream.requests[0].json
    assert sent["system"] == [{"type": "text", "text": "Use tools."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_r1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_r1", "content": json.dumps(result)}
            ],
        },
    ]


@pytest_twisted.ensureDeferred
async def test_sdk_sees_anthropic_errors_as_typed_exceptions(setup, fresh_upstream):
    fresh_upstream.set_json(
        MESSAGES, anthropic_error("invalid_request_error", "prompt is too long"), status=400
    )
    with pytest.raises(openai.BadRequestError) as info:
        await threads.deferToThread(
            setup["sdk"].chat.completions.create, model="claude", messages=user()
        )
    assert info.value.status_code == 400 and "prompt is too long" in info.value.message


@pytest_twisted.ensureDeferred
async def test_no_unhandled_errors_after_all_paths(gw):
    await task.deferLater(reactor, 0.1, lambda: None)
    no_unhandled_errors(gw.process)
    status, _, _ = await treq_json("GET", gw.proxy + "/v1/models")
    assert status == 401
