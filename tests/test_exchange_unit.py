"""The request pipeline in memory (twisted_gw.testing): the real ProxyApp,
Exchange and relay on a Clock, with a provider the test answers by hand. The
black-box suite covers the wire; these pin the exchange's decisions."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from twisted_gw.errors import GatewayError
from twisted_gw.testing import MemoryGateway

CHAT = "/v1/chat/completions"
CHUNK = {"id": "c", "object": "chat.completion.chunk", "choices": []}
ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


@pytest.fixture
def gw():
    gateway = MemoryGateway()
    gateway.add_model("gpt", timeout=30_000, rate_limit={"concurrency": 1})
    gateway.key = gateway.add_key(["gpt", "demo"])
    gateway.add_model("demo", "mock/x")
    return gateway


def chat(gw, stream=False, model="gpt"):
    doc = {"model": model, "messages": [{"role": "user", "content": "a"}], "stream": stream}
    return gw.post(CHAT, doc, gw.key)


def opened(gw):
    """A stream whose first chunk went out."""
    pending = chat(gw, stream=True)
    gw.flush()
    source = gw.provider.calls[-1].stream()
    source.push(CHUNK)
    gw.flush()
    return pending, source


def test_non_stream_answer_is_relayed_and_finalized_once(gw):
    pending = chat(gw)
    gw.flush()
    gw.provider.calls[-1].answer(ANSWER)
    response = gw.result(pending)
    assert response.code == 200 and response.json()["id"] == "x"
    assert gw.ends == ["ok"]
    assert gw.recorder.finalized[0].usage["total_tokens"] == 3


def test_non_stream_timeout_cancels_the_call_and_is_a_504(gw):
    pending = chat(gw)
    gw.flush()
    gw.clock.advance(30)
    response = gw.result(pending)
    assert response.code == 504 and response.json()["error"]["code"] == "request_timeout"
    assert gw.provider.calls[-1].cancelled and gw.ends == ["timeout"]


def test_an_upstream_error_is_its_json_error(gw):
    pending = chat(gw, stream=True)
    gw.flush()
    gw.provider.calls[-1].fail(GatewayError(400, "bad temperature", "invalid_value"))
    response = gw.result(pending)
    assert response.code == 400 and response.json()["error"]["code"] == "invalid_value"
    assert gw.ends == ["rejected"]


def test_a_stream_ends_with_done_after_a_clean_end(gw):
    pending, source = opened(gw)
    source.push(CHUNK, CHUNK)
    source.end(clean=True)
    response = gw.result(pending)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.data[-1] == "[DONE]" and len(response.data) == 4
    assert gw.ends == ["done"]


def test_a_clean_end_without_a_chunk_is_an_empty_stream(gw):
    pending = chat(gw, stream=True)
    gw.flush()
    gw.provider.calls[-1].stream().end(clean=True)
    response = gw.result(pending)
    assert (response.code, response.body, gw.ends) == (200, b"", ["empty"])


def test_a_cut_before_the_first_chunk_is_a_502(gw):
    pending = chat(gw, stream=True)
    gw.flush()
    gw.provider.calls[-1].stream().end(clean=False, detail="connection lost")
    response = gw.result(pending)
    assert response.code == 502
    assert response.json()["error"]["message"] == (
        "Provider error: connection lost before the first chunk"
    )
    assert gw.ends == ["upstream_error"]


def test_a_cut_after_a_chunk_ends_without_done(gw):
    pending, source = opened(gw)
    source.end(clean=False)
    response = gw.result(pending)
    assert "[DONE]" not in response.data and gw.ends == ["upstream_cut"]


def test_a_malformed_chunk_before_the_first_is_a_502_and_after_it_a_cut(gw):
    pending = chat(gw, stream=True)
    gw.flush()
    source = gw.provider.calls[-1].stream()
    source.push(b"[1, 2]")
    assert gw.result(pending).code == 502 and source.cancelled
    pending, source = opened(gw)
    source.push(b"{not json")
    response = gw.result(pending)
    assert len(response.data) == 1 and source.cancelled
    assert gw.ends == ["upstream_error", "upstream_cut"]


def test_no_first_chunk_within_the_timeout_is_a_504(gw):
    pending = chat(gw, stream=True)
    gw.flush()
    source = gw.provider.calls[-1].stream()
    gw.clock.advance(30)
    assert gw.result(pending).code == 504 and source.cancelled and gw.ends == ["timeout"]


def test_an_idle_upstream_is_cut_once_without_done(gw):
    pending, source = opened(gw)
    gw.clock.advance(29)
    source.push(CHUNK)  # activity restarts the idle time
    gw.clock.advance(29)
    assert gw.ends == []
    gw.clock.advance(1)
    response = gw.result(pending)
    assert gw.ends == ["timeout"] and source.cancelled and "[DONE]" not in response.data
    source.push(CHUNK)  # late chunks after the end change nothing
    assert gw.ends == ["timeout"]


def test_a_slow_client_is_not_an_idle_upstream(gw):
    pending, source = opened(gw)
    (relay,) = gw.stream_producers()
    relay.pauseProducing()  # the client's socket is full: twisted.web pauses us
    assert source.paused
    gw.clock.advance(120)  # far past the idle timeout, but the upstream was paused by us
    assert gw.ends == [] and not source.cancelled
    relay.resumeProducing()
    assert not source.paused
    gw.clock.advance(29)
    assert gw.ends == []  # idle time counts from the resume
    gw.clock.advance(2)
    assert gw.ends == ["timeout"] and source.cancelled
    gw.result(pending)


def test_client_gone_cancels_the_upstream_and_releases_the_slot(gw):
    pending, source = opened(gw)
    (relay,) = gw.stream_producers()
    relay.stopProducing()  # the transport calls this before connectionLost
    assert source.cancelled and gw.ends == ["client_gone"]
    assert gw.recorder.finalized[0].status == 200  # the stream had started
    assert gw.limiter.slots_held() == 0
    pending.addErrback(lambda f: f.trap(defer.CancelledError))
    pending.cancel()


def test_the_concurrency_slot_is_held_while_in_flight_and_given_back(gw):
    first = chat(gw)
    gw.flush()
    second = gw.result(chat(gw))
    assert second.code == 429 and gw.limiter.slots_held() == 1
    gw.provider.calls[0].answer(ANSWER)
    assert gw.result(first).code == 200 and gw.limiter.slots_held() == 0
    assert gw.ends == ["rejected", "ok"]


def test_checks_run_in_the_contract_order_before_any_upstream_call(gw):
    cases = [
        (None, {"model": "gpt", "messages": []}, 401),
        (gw.key, b"{", 400),
        (gw.key, {"model": "nope", "messages": []}, 400),
        (gw.add_key([]), {"model": "gpt", "messages": []}, 403),
    ]
    for key, doc, status in cases:
        assert gw.result(gw.post(CHAT, doc, key)).code == status
    assert gw.provider.calls == [] and gw.ends == ["rejected"] * 4


def test_the_mock_provider_runs_through_the_same_exchange(gw):
    response = gw.result(chat(gw, stream=True, model="demo"))
    assert response.data[-1] == "[DONE]" and gw.ends == ["done"]
