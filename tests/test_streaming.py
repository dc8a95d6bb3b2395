"""CONTRACT 4.3 and 4.4, streaming, black-box: every way a stream can end,
against the real gateway process and a real mock upstream, each asserting
what the client saw, what happened to the upstream connection, and that the
finalize hooks ran exactly once with the right end reason (through the
test-only FinalizeCounter hook loaded by the config file).

One test per bullet of the contract here, against the real process; the
exchange's decisions that need no socket (malformed events, every upstream
error status, the first-chunk and gateway-wide timeouts, steady slow chunks,
the mock provider's stream) are pinned in memory, on a Clock, in
tests/test_pipeline_streams.py."""

from __future__ import annotations

import itertools
import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.conftest import secret
from tests.streamcheck import (
    counted_gateway,
    no_unhandled_errors,
    wait_finalized,
    wait_new_finalized,
)
from tests.support.gateway import treq_stream
from tests.support.mock_upstream import chat_chunk, chunks_json, sse_event

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "streaming", upstream_timeout=1)


@pytest.fixture(scope="module")
def setup(gw, upstream):
    state = {}

    async def build():
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        await gw.add_model("s-gpt", "openai/gpt-stream", pc)
        await gw.add_model("s-fast", "openai/gpt-stream", pc, timeout=300)
        state["key"] = await gw.add_key(["s-gpt", "s-fast"])

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    return state


async def stream(gw, setup, body=None, model="s-gpt", **kw):
    doc = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    doc.update(body or {})
    headers = {"Authorization": f"Bearer {setup['key']}", "Content-Type": "application/json"}
    return await treq_stream("POST", gw.proxy + CHAT, headers=headers, json_body=doc, **kw)


# -- clean ends ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stream_relays_chunks_unchanged_then_done(gw, setup, fresh_upstream):
    tool = chat_chunk()
    tool["choices"][0]["delta"] = {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": '{"a"'},
            }
        ]
    }
    tool["x_vendor"] = {"unknown": ["field", 1]}
    chunks = [chat_chunk(role="assistant", content=""), chat_chunk("héllo ✓ 你好"), tool]
    chunks += [
        chat_chunk(finish_reason="tool_calls"),
        chat_chunk(usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}),
    ]
    raw = [json.dumps(c, ensure_ascii=False) for c in chunks]
    fresh_upstream.set_sse(CHAT, [sse_event(r) for r in raw] + [sse_event("[DONE]")])
    result = await stream(
        gw, setup, {"stream_options": {"include_usage": False, "x_opt": 1}, "temperature": 0.5}
    )
    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.headers["cache-control"] == "no-cache"
    assert result.data == raw + ["[DONE]"]  # byte-identical chunk JSON, one [DONE]
    (seen,) = fresh_upstream.requests
    assert seen.json["stream"] is True and seen.json["model"] == "gpt-stream"
    assert seen.json["stream_options"] == {"include_usage": True, "x_opt": 1}
    assert seen.json["temperature"] == 0.5
    assert seen.headers["accept"] == "text/event-stream"
    assert await wait_finalized(gw.process, result.headers["x-request-id"]) == ("done", "200", 5)


@pytest_twisted.ensureDeferred
async def test_include_usage_is_added_when_the_client_sent_no_stream_options(
    gw, setup, fresh_upstream
):
    fresh_upstream.set_sse(CHAT, [sse_event(c) for c in chunks_json("x")] + [sse_event("[DONE]")])
    result = await stream(gw, setup)
    assert result.data[-1] == "[DONE]"
    assert fresh_upstream.requests[0].json["stream_options"] == {"include_usage": True}


@pytest_twisted.ensureDeferred
async def test_clean_end_without_upstream_done_still_gets_one_done(gw, setup, fresh_upstream):
    fresh_upstream.set_sse(CHAT, [sse_event(c) for c in chunks_json("a", "b")])
    result = await stream(gw, setup)
    assert result.data.count("[DONE]") == 1 and result.data[-1] == "[DONE]"
    assert len(result.json_chunks) == 5
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[0] == "done"


@pytest.mark.parametrize(
    "events",
    [[], [sse_event("[DONE]")], [b": keep-alive\n\n"]],
    ids=["nothing", "only-done", "only-comment"],
)
@pytest_twisted.ensureDeferred
async def test_empty_upstream_stream_is_200_with_no_events(gw, setup, fresh_upstream, events):
    fresh_upstream.set_sse(CHAT, events)
    result = await stream(gw, setup)
    assert result.status == 200 and result.headers["content-type"] == "text/event-stream"
    assert b"data:" not in result.body and result.ended == "done"
    assert await wait_finalized(gw.process, result.headers["x-request-id"]) == ("empty", "200", 0)


@pytest_twisted.ensureDeferred
async def test_awkward_upstream_framing_is_relayed_as_whole_events(gw, setup, fresh_upstream):
    first, second = (json.dumps(c) for c in chunks_json("x", usage=False)[:2])
    split = second.index(", ") + 1  # a JSON document may be split between lines there
    stream_bytes = (
        b": keep-alive\r\n\r\n"
        + b"data:"
        + first.encode()
        + b"\r\n\r\n"  # no space after the colon, CRLF
        + b"data: "
        + second[:split].encode()
        + b"\ndata: "
        + second[split:].encode()
        + b"\n\n"  # multi-line data
        + b"\n"  # stray blank line
        + sse_event("[DONE]")
    )
    # split at awkward points: inside "data:", between \r and \n, mid-JSON
    cuts = [
        3,
        20,
        stream_bytes.index(b"\r\n\r\n", 20) + 1,
        len(stream_bytes) - 9,
        len(stream_bytes) - 3,
    ]
    pieces = [stream_bytes[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream_bytes)])]
    fresh_upstream.set_sse(CHAT, pieces, gap=0.02)
    result = await stream(gw, setup)
    payloads = result.data
    assert payloads[0] == first and payloads[-1] == "[DONE]"
    assert json.loads(payloads[1]) == json.loads(second)  # multi-line data stays one event
    assert len(payloads) == 3


# -- timing --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_each_chunk_is_flushed_when_it_arrives(gw, setup, fresh_upstream):
    events = [sse_event(c) for c in chunks_json("one", "two")] + [sse_event("[DONE]")]
    fresh_upstream.set_sse(CHAT, events, gap=0.2)
    result = await stream(gw, setup)
    firsts = []  # arrival time of each data event
    seen = b""
    for piece, at in zip(result.chunks, result.arrivals):
        before = seen.count(b"data:")
        seen += piece
        firsts += [at] * (seen.count(b"data:") - before)
    assert len(firsts) == 6
    gaps = [b - a for a, b in itertools.pairwise(firsts)]
    assert all(0.15 < g < 0.35 for g in gaps), gaps  # relayed one by one, not buffered


# -- cuts and malformed events ---------------------------------------------------------------


@pytest.mark.parametrize("end", ["cut", "reset"])
@pytest_twisted.ensureDeferred
async def test_stream_cut_after_first_chunk_ends_without_done(gw, setup, fresh_upstream, end):
    # "reset" aborts the TCP connection: give the events time to leave first
    events = [sse_event(c) for c in chunks_json("a", usage=False)[:2]]
    fresh_upstream.set_sse(CHAT, events, end=end, end_delay=0.1)
    result = await stream(gw, setup)
    assert result.status == 200
    assert "[DONE]" not in result.data and len(result.json_chunks) == 2
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[0] == "upstream_cut"


@pytest.mark.parametrize("end", ["cut", "reset"])
@pytest_twisted.ensureDeferred
async def test_stream_cut_before_first_chunk_is_502_json(gw, setup, fresh_upstream, end):
    fresh_upstream.set_sse(CHAT, [b": hello\n\n"], end=end)
    result = await stream(gw, setup)
    assert result.status == 502 and result.headers["content-type"] == "application/json"
    error = json.loads(result.body)["error"]
    assert error["code"] == "provider_error" and error["message"].startswith("Provider error: ")
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[:2] == (
        "upstream_error",
        "502",
    )


# the other statuses (4xx relayed, 401, 429): tests/test_pipeline_streams.py, in memory
@pytest.mark.parametrize("status, expected_status, expected_code", [(500, 502, "provider_error")])
@pytest_twisted.ensureDeferred
async def test_upstream_error_status_is_a_json_error_not_a_stream(
    gw, setup, fresh_upstream, status, expected_status, expected_code
):
    code = {400: "context_length_exceeded", 429: "rate_limit_exceeded"}.get(status)
    fresh_upstream.set_json(
        CHAT, {"error": {"message": "nope", "type": "x", "code": code}}, status=status
    )
    result = await stream(gw, setup)
    assert result.status == expected_status and result.headers["content-type"] == "application/json"
    assert json.loads(result.body)["error"]["code"] == expected_code
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[0] == "upstream_error"


# -- timeouts (CONTRACT 4.4) -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_first_chunk_timeout_after_headers_is_504_and_cancels_upstream(
    gw, setup, fresh_upstream
):
    fresh_upstream.set_sse(CHAT, [b": only a comment\n\n"], end="hang")
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    result = await stream(gw, setup, model="s-fast")
    assert result.status == 504 and json.loads(result.body)["error"]["code"] == "request_timeout"
    await gone


@pytest_twisted.ensureDeferred
async def test_idle_timeout_mid_stream_ends_without_done_and_cancels_upstream(
    gw, setup, fresh_upstream
):
    fresh_upstream.set_sse(CHAT, [sse_event(c) for c in chunks_json("a")[:2]], end="hang")
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    result = await stream(gw, setup, model="s-fast")
    assert result.status == 200 and len(result.json_chunks) == 2 and "[DONE]" not in result.data
    assert 0.25 < result.ended_at - result.arrivals[0] < 1.0
    await gone
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[0] == "timeout"


# -- the client going away --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_stream_cancels_upstream_within_100ms(gw, setup, fresh_upstream):
    events = [sse_event(c) for c in chunks_json(*"abcdefghij")]
    fresh_upstream.set_sse(CHAT, events, gap=0.1, end="hang")
    gone = fresh_upstream.wait_for_disconnect(timeout=5)
    result = await stream(gw, setup, stop_when=lambda body: body.count(b"data:") >= 2)
    assert result.ended == "stopped"
    stopped_at = result.ended_at
    await gone
    (seen,) = fresh_upstream.requests
    assert seen.client_gone
    assert seen.ended_at - stopped_at < 0.1, (
        f"upstream closed {seen.ended_at - stopped_at:.3f}s after the client left"
    )
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[:2] == (
        "client_gone",
        "200",
    )


@pytest_twisted.ensureDeferred
async def test_client_gone_before_first_chunk_cancels_upstream(gw, setup, fresh_upstream):
    from tests.streamcheck import finalize_records

    fresh_upstream.set_delay(CHAT, 5)
    before = set(finalize_records(gw.process))
    gone = fresh_upstream.wait_for_disconnect(timeout=5)
    with pytest.raises(defer.TimeoutError):
        await stream(gw, setup, timeout=0.3)
    await gone
    _, (end, _, _) = await wait_new_finalized(gw.process, before)
    assert end == "client_gone"


# -- the official SDK -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_openai_sdk_streams_content_and_tool_calls(gw, setup, fresh_upstream):
    import openai
    from twisted.internet import threads

    call = chat_chunk()
    call["choices"][0]["delta"] = {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_9",
                "type": "function",
                "function": {"name": "lookup", "arguments": ""},
            }
        ]
    }
    args = [chat_chunk() for _ in range(2)]
    args[0]["choices"][0]["delta"] = {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]
    }
    args[1]["choices"][0]["delta"] = {
        "tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]
    }
    events = [
        chat_chunk(role="assistant", content=""),
        chat_chunk("Let me "),
        chat_chunk("check."),
        call,
        *args,
    ]
    events += [
        chat_chunk(finish_reason="tool_calls"),
        chat_chunk(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
    ]
    fresh_upstream.set_sse(CHAT, [sse_event(e) for e in events] + [sse_event("[DONE]")], gap=0.01)
    client = openai.OpenAI(api_key=setup["key"], base_url=gw.proxy + "/v1", max_retries=0)

    def consume():
        text, arguments, names, finish, usage = "", "", [], None, None
        for chunk in client.chat.completions.create(
            model="s-gpt",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.usage:
                usage = chunk.usage.total_tokens
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for tc in choice.delta.tool_calls or []:
                    if tc.function.name:
                        names.append(tc.function.name)
                    arguments += tc.function.arguments or ""
                finish = choice.finish_reason or finish
        return text, names, arguments, finish, usage

    text, names, arguments, finish, usage = await threads.deferToThread(consume)
    assert text == "Let me check." and names == ["lookup"]
    assert json.loads(arguments) == {"q": "x"} and finish == "tool_calls" and usage == 3


@pytest_twisted.ensureDeferred
async def test_no_unhandled_errors_after_all_paths(gw):
    await task.deferLater(reactor, 0.1, lambda: None)
    no_unhandled_errors(gw.process)


@pytest_twisted.ensureDeferred
async def test_upstream_done_ends_the_stream_even_if_the_upstream_keeps_its_body_open(
    gw, setup, fresh_upstream
):
    events = [sse_event(c) for c in chunks_json("a")] + [sse_event("[DONE]")]
    fresh_upstream.set_sse(CHAT, events, end="hang")
    started = reactor.seconds()
    result = await stream(gw, setup, model="s-gpt")  # no model timeout: 1 s gateway default
    assert result.data[-1] == "[DONE]" and result.ended == "done"
    assert reactor.seconds() - started < 0.5  # not after a timeout
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[0] == "done"
