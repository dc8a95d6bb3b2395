"""CONTRACT 4.3 and 4.4 in memory (twisted_gw.testing): how the exchange ends
each kind of stream (the client's view, the end reason its finalize saw, the
upstream call cancelled or not) and its timeouts, on a Clock, with an
upstream the test feeds by hand.

What a scripted source cannot show stays black-box in tests/test_streaming.py:
SSE framing, no buffering on the socket, TCP cuts and resets, the client's
socket going away, the upstream connection being closed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.access_log import FIELDS, LOGFMT
from tests.support.mock_upstream import chat_chunk, chunks_json
from twisted_gw.observability.access_log import access_line
from twisted_gw.testing import MemoryGateway

CHAT = "/v1/chat/completions"
TIMEOUT_ERROR = {
    "message": "Provider request timed out",
    "type": "server_error",
    "param": None,
    "code": "request_timeout",
}


@pytest.fixture
def gw() -> MemoryGateway:
    gateway = MemoryGateway(upstream_timeout=1)  # the black-box gateway's default
    gateway.add_model("s-gpt", "openai/gpt-stream")
    gateway.add_model("s-fast", "openai/gpt-stream", timeout=300)
    gateway.add_model("s-demo", "mock/demo")
    gateway.key = gateway.add_key(["s-gpt", "s-fast", "s-demo"])
    return gateway


def stream(gw: MemoryGateway, body: dict | None = None, model: str = "s-gpt"):
    """Send a streaming request and move its bytes in; the Deferred of its Response."""
    doc = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    doc.update(body or {})
    pending = gw.post(CHAT, doc, gw.key)
    gw.flush()
    return pending


def json_chunks(response: Any) -> list[dict]:
    return [json.loads(d) for d in response.data if d != "[DONE]"]


def finalized(gw: MemoryGateway) -> tuple[str | None, int, int]:
    """(end, status, total tokens) of the one request finalized so far."""
    (ctx,) = gw.recorder.finalized
    return ctx.end_reason, ctx.status, (ctx.usage or {}).get("total_tokens", 0)


# -- malformed events and upstream errors ------------------------------------------------


def test_malformed_first_event_is_502_json(gw):
    pending = stream(gw)
    source = gw.provider.calls[-1].stream()
    source.push(b"garbage")  # the data of ``data: garbage``
    response = gw.result(pending)
    assert response.code == 502 and response.json()["error"]["code"] == "provider_error"
    assert response.headers["content-type"] == "application/json"
    assert finalized(gw)[0] == "upstream_error" and source.cancelled


def test_malformed_event_after_a_chunk_cuts_the_stream_and_the_upstream(gw):
    good = [json.dumps(c).encode() for c in chunks_json("a")[:2]]
    pending = stream(gw)
    source = gw.provider.calls[-1].stream()
    for event in [*good, b"{not json", *good]:  # one upstream read each
        source.push(event)
    response = gw.result(pending)
    assert response.code == 200 and len(json_chunks(response)) == 2
    assert "[DONE]" not in response.data
    assert source.cancelled  # the gateway stopped reading the broken upstream
    assert finalized(gw)[0] == "upstream_cut"


@pytest.mark.parametrize(
    "status, expected_status, expected_code",
    [
        (500, 502, "provider_error"),
        (400, 400, "context_length_exceeded"),
        (401, 502, "provider_error"),
        (429, 429, "rate_limit_exceeded"),
    ],
)
def test_upstream_error_status_is_a_json_error_not_a_stream(
    gw, status, expected_status, expected_code
):
    code = {400: "context_length_exceeded", 429: "rate_limit_exceeded"}.get(status)
    pending = stream(gw)
    gw.provider.calls[-1].refuse(status, {"error": {"message": "nope", "type": "x", "code": code}})
    response = gw.result(pending)
    assert response.code == expected_status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == expected_code
    assert finalized(gw)[0] == "upstream_error"


# -- timeouts (CONTRACT 4.4) ---------------------------------------------------------------


def test_first_chunk_timeout_before_headers_is_504_and_cancels_upstream(gw):
    pending = stream(gw, model="s-fast")
    gw.clock.advance(0.299)
    assert gw.ends == []
    gw.clock.advance(0.001)
    response = gw.result(pending)
    assert response.code == 504 and response.json()["error"] == TIMEOUT_ERROR
    assert gw.provider.calls[-1].cancelled  # the upstream request is dropped
    assert finalized(gw)[:2] == ("timeout", 504)


def test_gateway_default_timeout_applies_without_a_model_timeout(gw):
    pending = stream(gw)  # s-gpt: no timeout, gateway default 1 s
    gw.clock.advance(0.9)
    assert gw.ends == []
    gw.clock.advance(0.1)
    response = gw.result(pending)
    assert response.code == 504 and response.json()["error"] == TIMEOUT_ERROR
    assert gw.provider.calls[-1].cancelled and gw.ends == ["timeout"]


def test_steady_chunks_slower_than_nothing_but_faster_than_timeout_are_not_cut(gw):
    events = chunks_json("a", "b", "c", "d")
    pending = stream(gw, model="s-fast")
    gw.clock.advance(0.15)
    source = gw.provider.calls[-1].stream()
    for event in events:  # 8 x 0.15 s > 300 ms timeout in total
        source.push(event)
        gw.flush()
        gw.clock.advance(0.15)
    source.end(clean=True)  # after the upstream's own [DONE]
    response = gw.result(pending)
    assert response.data[-1] == "[DONE]" and len(json_chunks(response)) == 7
    assert gw.ends == ["done"]


def test_the_idle_timer_fires_when_the_clock_lands_on_its_deadline(gw):
    gw.clock.advance(0.6)
    pending = stream(gw, model="s-fast")
    source = gw.provider.calls[-1].stream()
    source.push(chat_chunk("a", role="assistant"))  # last activity at t = 0.6
    gw.flush()
    gw.clock.advance(0.3)  # t = 0.6 + 0.3 = 0.8999999999999999; idle 0.29999999999999993
    assert gw.ends == ["timeout"] and source.cancelled
    gw.result(pending)


# -- the mock provider ---------------------------------------------------------------------


def test_mock_provider_streams_offline(gw):
    messages = [{"role": "user", "content": "stream me please"}]
    response = gw.result(stream(gw, {"messages": messages}, model="s-demo"))
    chunks = json_chunks(response)
    assert response.data[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "stream me please"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # the estimate of twisted_gw.tokens, as a whole answer would report it: the
    # message's JSON is 46 characters, ceil(46 / 4) + 4 = 16; the 16 echoed, 4
    usage = {"prompt_tokens": 16, "completion_tokens": 4, "total_tokens": 20}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
    assert finalized(gw) == ("done", 200, 20)


# -- what the metrics and the access log are told (CONTRACT 4.6) ---------------------------


def test_stream_latencies_run_to_the_first_and_the_last_byte(gw):
    usage = {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
    events = [chat_chunk(role="assistant", content=""), chat_chunk("a"), chat_chunk("b")]
    events.append(chat_chunk(usage=usage))
    pending = stream(gw)
    source = gw.provider.calls[-1].stream()
    for i, event in enumerate(events):  # 0.1 s apart: 0.3 s in all
        if i:
            gw.clock.advance(0.1)
        source.push(event)
        gw.flush()
    source.end(clean=True)
    response = gw.result(pending)
    assert response.data[-1] == "[DONE]"
    model = {"model": "s-gpt"}
    first = gw.sample("aisix_llm_first_token_latency_milliseconds_sum", **model)
    llm = gw.sample("aisix_llm_latency_milliseconds_sum", **model)
    route = {"method": "POST", "endpoint": CHAT, "status_code": "200"}
    request = gw.sample("aisix_request_latency_milliseconds_sum", **route)
    assert 0 <= first < 200, "first token: the first chunk came at once"
    assert 290 < llm <= request, "upstream and request latencies run to the last chunk"
    assert gw.sample("aisix_token_count_total", type="prompt", **model) == 7
    assert gw.sample("aisix_token_count_total", type="completion", **model) == 11
    assert gw.sample("aisix_token_count_total", type="total", **model) == 18


def access_fields_of(gw: MemoryGateway) -> dict[str, str]:
    """The access-log line the one finished request gets, parsed (keys in line order)."""
    (ctx,) = gw.recorder.finalized
    text = access_line(ctx, gw.clock.seconds())
    return {k: v.strip('"') for k, v in LOGFMT.findall(text)}


@pytest.mark.parametrize("streamed", [False, True], ids=["timeout", "timeout-mid-stream"])
def test_a_timeout_writes_one_access_line(gw, streamed):
    doc = {"model": "s-fast", "stream": streamed, "messages": [{"role": "user", "content": "a"}]}
    pending = gw.post(CHAT, doc, gw.key)
    gw.flush()
    if streamed:
        source = gw.provider.calls[-1].stream()
        source.push(chat_chunk("a", role="assistant"))
        gw.flush()
    gw.clock.advance(0.3)
    response = gw.result(pending)
    assert response.code == (200 if streamed else 504)
    if streamed:
        assert "[DONE]" not in response.data and len(response.data) == 1
    line = access_fields_of(gw)  # one finalize: one line
    assert list(line) == [*FIELDS, "error", "upstream", "cause"]
    assert (line["end"], line["status"]) == ("timeout", "200" if streamed else "504")
    # CONTRACT 5.4: the line says why, and where (s-fast times out after 300 ms)
    assert line["error"] == "request_timeout"
    assert line["upstream"] == "api.openai.com"  # an openai model without api_base
    assert line["cause"] == (
        "timeout after 300 ms without a chunk" if streamed else "timeout after 300 ms"
    )
    assert line["rid"] == response.headers["x-request-id"]
    assert line["method"] == "POST" and line["path"] == CHAT
    assert line["client"] == "127.0.0.1"
    assert line["model"] == "s-fast"
    assert line["key_id"] == gw.store.snapshot.keys_by_key[gw.key].id
    assert float(line["latency_ms"]) >= 0
    if streamed:
        assert float(line["first_token_ms"]) >= 0
    else:
        assert line["first_token_ms"] == "-"
    assert [line[f"{k}_tokens"] for k in ("prompt", "completion", "total")] == ["0", "0", "0"]
    # streams are counted by how they ended; other requests are not
    moved = {
        end: gw.sample("twisted_gw_stream_ends_total", end=end)
        for end in (
            "ok",
            "done",
            "empty",
            "upstream_cut",
            "upstream_error",
            "timeout",
            "client_gone",
            "rejected",
        )
    }
    assert {k: n for k, n in moved.items() if n} == ({"timeout": 1} if streamed else {})
