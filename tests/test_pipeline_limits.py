"""CONTRACT 4.5 and the 429 rows of 4.1 in memory (twisted_gw.testing): the
limiter's decisions, the x-ratelimit-* headers, the 429 texts and the release
of concurrency slots, on a Clock, with an upstream the test answers by hand.

The windows are the limiter's real ones on the Clock (time 0 is the start of
every window), so no test has to wait for a quiet moment of the minute. The
black-box suite (tests/test_ratelimit_blackbox.py) keeps one test of each
bullet against the real process.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.ratelimit import assert_retry_after, concurrency_429, reset_seconds, window_429
from twisted_gw.errors import provider_error
from twisted_gw.testing import MemoryGateway

CHAT = "/v1/chat/completions"
# the mock provider's usage for chat_doc's one message "hi" (twisted_gw.tokens):
# prompt ceil(len('[{"role":"user","content":"hi"}]') / 4) + 4 = 8 + 4, completion 1
MOCK_TOTAL_TOKENS = 13
ANSWER = {
    "id": "chatcmpl-up",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
FIRST = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}],
}


@pytest.fixture
def gw() -> MemoryGateway:
    return MemoryGateway()


# -- helpers -------------------------------------------------------------------------


def mock_model(gw: MemoryGateway, name: str, rate_limit: dict | None = None) -> str:
    """A ``mock`` provider model (answers at once, usage 12/1/13 for "hi"); its store id."""
    extra = {"rate_limit": rate_limit} if rate_limit is not None else {}
    return gw.add_model(name, "mock/echo", **extra)


def upstream_model(
    gw: MemoryGateway, name: str, rate_limit: dict | None = None, timeout: int | None = None
) -> str:
    """A model on the scripted upstream; its store id."""
    extra: dict[str, Any] = {}
    if rate_limit is not None:
        extra["rate_limit"] = rate_limit
    if timeout is not None:
        extra["timeout"] = timeout
    return gw.add_model(name, "openai/gpt-rl", **extra)


def new_key(gw: MemoryGateway, allowed: list[str], rate_limit: dict | None = None):
    """A client key: (key value, store id)."""
    extra = {"rate_limit": rate_limit} if rate_limit is not None else {}
    key = gw.add_key(allowed, **extra)
    return key, gw.store.snapshot.keys_by_key[key].id


def chat_doc(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def send(gw: MemoryGateway, key: str, model: str, stream: bool = False):
    """Send a request and move its bytes in; the Deferred of its Response."""
    pending = gw.post(CHAT, chat_doc(model, stream), key)
    gw.flush()
    return pending


def chat(gw: MemoryGateway, key: str, model: str, stream: bool = False):
    """A request that is answered without the scripted upstream (mock model or a 429)."""
    return gw.result(send(gw, key, model, stream))


def error_of(response: Any) -> dict[str, Any]:
    return response.json()["error"]


def json_chunks(response: Any) -> list[dict]:
    import json

    return [json.loads(d) for d in response.data if d != "[DONE]"]


def ratelimit_headers(headers: dict[str, str]) -> dict[str, str]:
    return {h: v for h, v in headers.items() if h.startswith("x-ratelimit-")}


def hold_stream(gw: MemoryGateway, key: str, model: str):
    """A stream whose first chunk went out and that stays open: (pending, source)."""
    pending = send(gw, key, model, stream=True)
    source = gw.provider.calls[-1].stream()
    source.push(FIRST)
    gw.flush()
    return pending, source


def walk_away(gw: MemoryGateway, pending: Any) -> None:
    """The client of a held request goes away."""
    gw.disconnect()
    with pytest.raises(Exception):  # noqa: B017 - the client's side only sees a lost connection
        gw.result(pending)


# -- request windows -------------------------------------------------------------------


def test_model_rpm_exhausted_names_the_model_store_id_never_the_key(gw):
    model_id = mock_model(gw, "m", {"rpm": 1})
    key, key_id = new_key(gw, ["m"])
    assert chat(gw, key, "m").code == 200
    response = chat(gw, key, "m")
    assert response.code == 429
    assert response.json() == {"error": window_429("model", model_id, "rpm", 1)}
    assert key.encode() not in response.body and key_id.encode() not in response.body
    assert_retry_after(response.headers)


def test_rpd_exhausted_is_429_with_a_retry_after_within_the_day(gw):
    mock_model(gw, "m")
    key, key_id = new_key(gw, ["m"], {"rpd": 1})
    response = chat(gw, key, "m")
    assert response.code == 200 and response.headers["x-ratelimit-limit-requests"] == "1"
    assert reset_seconds(response.headers["x-ratelimit-reset-requests"]) <= 86400
    response = chat(gw, key, "m")
    assert response.code == 429
    assert response.json() == {"error": window_429("key", key_id, "rpd", 1)}
    assert_retry_after(response.headers, window=86400)


def test_only_the_configured_header_groups_are_sent(gw):
    mock_model(gw, "m")
    key, _ = new_key(gw, ["m"])
    assert ratelimit_headers(chat(gw, key, "m").headers) == {}
    key, _ = new_key(gw, ["m"], {"concurrency": 3})
    assert ratelimit_headers(chat(gw, key, "m").headers) == {
        "x-ratelimit-limit-concurrent": "3",
        "x-ratelimit-remaining-concurrent": "2",  # this request counts itself
    }


def test_headers_show_the_strictest_of_key_and_model_limits(gw):
    mock_model(gw, "m", {"rpm": 2, "tpm": 10000})
    key, _ = new_key(gw, ["m"], {"rpm": 10, "tpm": 100})
    headers = chat(gw, key, "m").headers
    assert headers["x-ratelimit-limit-requests"] == "2"  # the model's: 1 left < 9 left
    assert headers["x-ratelimit-remaining-requests"] == "1"
    assert headers["x-ratelimit-limit-tokens"] == "100"  # the key's: 100 left < 10000
    assert headers["x-ratelimit-remaining-tokens"] == "100"
    headers = chat(gw, key, "m").headers
    assert headers["x-ratelimit-remaining-tokens"] == str(100 - MOCK_TOTAL_TOKENS)


def test_request_rejected_by_the_key_does_not_spend_the_model_quota(gw):
    mock_model(gw, "m", {"rpm": 2})
    tight, tight_id = new_key(gw, ["m"], {"rpm": 1})
    other, _ = new_key(gw, ["m"])
    assert chat(gw, tight, "m").code == 200  # model: 1 of 2
    for _ in range(3):
        response = chat(gw, tight, "m")
        assert response.code == 429 and error_of(response) == window_429("key", tight_id, "rpm", 1)
    response = chat(gw, other, "m")
    assert response.code == 200
    assert response.headers["x-ratelimit-remaining-requests"] == "0"  # model: 2 of 2


def test_rate_limit_headers_on_upstream_errors_that_passed_the_limiter(gw):
    upstream_model(gw, "up")
    key, _ = new_key(gw, ["up"], {"rpm": 5})
    pending = send(gw, key, "up")
    gw.provider.calls[-1].refuse(500, {"error": {"message": "boom"}})
    response = gw.result(pending)
    assert response.code == 502 and response.headers["x-ratelimit-remaining-requests"] == "4"
    pending = send(gw, key, "up", stream=True)
    gw.provider.calls[-1].refuse(500, {"error": {"message": "boom"}})
    response = gw.result(pending)
    assert response.code == 502 and response.headers["x-ratelimit-remaining-requests"] == "3"


def test_a_request_rejected_before_the_limiter_spends_nothing(gw):
    mock_model(gw, "m")
    mock_model(gw, "other")
    key, _ = new_key(gw, ["m"], {"rpm": 1})
    assert gw.result(gw.post(CHAT, {"model": "m"}, key)).code == 400  # no messages
    assert chat(gw, key, "no-such-model").code == 400
    assert chat(gw, key, "other").code == 403
    response = chat(gw, key, "m")
    assert response.code == 200 and response.headers["x-ratelimit-remaining-requests"] == "0"


# -- token windows ------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("scope", ["key", "model"])
def test_tpm_is_reached_after_usage_is_settled(gw, scope, streaming):
    # check at pre-call rejects only when nothing remains: 0 < 20, 13 < 20, 26 >= 20
    model_id = mock_model(gw, "m", {"tpm": 20} if scope == "model" else None)
    key, key_id = new_key(gw, ["m"], {"tpm": 20} if scope == "key" else None)
    seen = []
    for _ in range(2):
        response = chat(gw, key, "m", stream=streaming)
        if streaming:
            assert json_chunks(response)[-1]["usage"]["total_tokens"] == MOCK_TOTAL_TOKENS
        assert response.code == 200
        seen.append(response.headers["x-ratelimit-remaining-tokens"])
        assert gw.recorder.finalized[-1].usage["total_tokens"] == 13
    assert seen == ["20", str(20 - MOCK_TOTAL_TOKENS)]
    response = chat(gw, key, "m")
    assert response.code == 429
    assert error_of(response) == window_429(
        scope, key_id if scope == "key" else model_id, "tpm", 20
    )
    assert_retry_after(response.headers)


def test_missing_usage_spends_no_tokens(gw):
    upstream_model(gw, "up")
    key, _ = new_key(gw, ["up"], {"tpm": 10})
    for _ in range(3):
        pending = send(gw, key, "up", stream=True)
        source = gw.provider.calls[-1].stream()
        source.push(FIRST, dict(FIRST, choices=[{"index": 0, "delta": {"content": "x"}}]))
        source.end(clean=True)
        response = gw.result(pending)
        assert response.code == 200 and response.data[-1] == "[DONE]"
        assert response.headers["x-ratelimit-remaining-tokens"] == "10"


# -- concurrency --------------------------------------------------------------------------


def test_model_concurrency_names_the_model_id(gw):
    model_id = upstream_model(gw, "held", {"concurrency": 1})
    key_a, _ = new_key(gw, ["held"])
    key_b, _ = new_key(gw, ["held"])
    held, _ = hold_stream(gw, key_a, "held")
    response = chat(gw, key_b, "held")
    assert response.code == 429 and error_of(response) == concurrency_429(model_id)
    walk_away(gw, held)
    pending = send(gw, key_b, "held")
    gw.provider.calls[-1].answer(ANSWER)
    assert gw.result(pending).code == 200


def test_concurrency_rejection_does_not_spend_the_request_quota(gw):
    upstream_model(gw, "held")
    mock_model(gw, "quick")
    key, _ = new_key(gw, ["held", "quick"], {"rpm": 3, "concurrency": 1})
    held, _ = hold_stream(gw, key, "held")  # rpm: 1 of 3
    for _ in range(3):
        response = chat(gw, key, "quick")
        assert response.code == 429 and error_of(response)["code"] == "concurrency_limit_exceeded"
    walk_away(gw, held)
    response = chat(gw, key, "quick")
    assert response.code == 200 and response.headers["x-ratelimit-remaining-requests"] == "1"


@pytest.mark.parametrize(
    "detail",
    ["connection closed", "upstream connection lost mid-stream"],  # stream_end's cut and reset
    ids=["cut", "reset"],
)
def test_concurrency_is_held_while_streaming_and_freed_after_an_upstream_cut(gw, detail):
    upstream_model(gw, "held")
    mock_model(gw, "quick")
    key, key_id = new_key(gw, ["held", "quick"], {"concurrency": 1})
    running, source = hold_stream(gw, key, "held")
    response = chat(gw, key, "quick")
    assert response.code == 429 and error_of(response) == concurrency_429(key_id)
    source.end(clean=False, detail=detail)
    result = gw.result(running)
    assert result.code == 200 and "[DONE]" not in result.data
    assert gw.ends[-1] == "upstream_cut"
    assert chat(gw, key, "quick").code == 200


@pytest.mark.parametrize("started", [True, False], ids=["mid-stream", "before-first-chunk"])
def test_concurrency_is_freed_after_a_stream_timeout(gw, started):
    upstream_model(gw, "held", timeout=300)
    mock_model(gw, "quick")
    key, _ = new_key(gw, ["held", "quick"], {"concurrency": 1})
    running = send(gw, key, "held", stream=True)
    source = gw.provider.calls[-1].stream()
    if started:
        source.push(FIRST)  # else the upstream sent only a comment: no chunk
    assert chat(gw, key, "quick").code == 429
    gw.clock.advance(0.3)
    result = gw.result(running)
    assert result.code == (200 if started else 504)
    assert gw.ends[-1] == "timeout"
    assert chat(gw, key, "quick").code == 200


def test_no_permit_leaks_whatever_way_requests_end(gw):
    # a concurrency-1 key: any permit not given back makes every later request 429
    upstream_model(gw, "up", timeout=300)
    mock_model(gw, "quick")
    key, _ = new_key(gw, ["up", "quick"], {"concurrency": 1})
    usage = dict(FIRST, choices=[], usage={"prompt_tokens": 1, "completion_tokens": 1})

    def refuse(status: int):
        return lambda call: call.refuse(status, {"error": {"message": "x"}})

    def events(*chunks: Any, end: str = "close"):
        def play(call: Any) -> None:
            source = call.stream()
            if chunks:
                source.push(*chunks)
            if end == "close":
                source.end(clean=True)
            elif end == "cut":
                source.end(clean=False, detail="connection closed")

        return play

    def malformed(call: Any) -> None:
        source = call.stream()
        source.push(FIRST)
        source.push(b"{x")

    def answer(call: Any) -> None:
        call.answer(ANSWER)

    def drop(call: Any) -> None:
        call.fail(provider_error("connection closed before a response"))

    def wait(call: Any) -> None:
        gw.clock.advance(0.3)

    def idle(call: Any) -> None:
        call.stream().push(FIRST)
        gw.clock.advance(0.3)

    def gone(call: Any) -> None:
        gw.disconnect()

    def gone_streaming(call: Any) -> None:
        call.stream().push(FIRST)
        gw.flush()
        gw.disconnect()

    steps = [
        # (what, the request's model, stream?, how the upstream answers, the outcome)
        ("mock ok", "quick", False, None, 200),
        ("mock stream", "quick", True, None, 200),
        ("upstream ok", "up", False, answer, 200),
        ("upstream 400", "up", False, refuse(400), 400),
        ("upstream 401", "up", False, refuse(401), 502),
        ("upstream 500", "up", False, refuse(500), 502),
        ("stream upstream 500", "up", True, refuse(500), 502),
        ("stream upstream 429", "up", True, refuse(429), 429),
        ("upstream drops the connection", "up", False, drop, 502),
        ("stream done", "up", True, events(FIRST, usage), 200),
        ("stream empty", "up", True, events(), 200),
        ("stream cut before a chunk", "up", True, events(end="cut"), 502),
        ("stream cut after a chunk", "up", True, events(FIRST, end="cut"), 200),
        ("stream malformed", "up", True, malformed, 200),
        ("timeout", "up", False, wait, 504),
        ("stream timeout", "up", True, wait, 504),
        ("stream idle timeout", "up", True, idle, 200),
        ("client gone waiting", "up", False, gone, "gone"),
        ("client gone mid-stream", "up", True, gone_streaming, "gone"),
    ]
    for name, model, stream, upstream, expected in steps:
        pending = send(gw, key, model, stream)
        if upstream is not None:
            upstream(gw.provider.calls[-1])
        if expected == "gone":
            with pytest.raises(Exception):  # noqa: B017 - the client left
                gw.result(pending)
        else:
            assert gw.result(pending).code == expected, name
        assert gw.limiter.slots_held() == 0, f"a permit leaked after: {name}"
        assert chat(gw, key, "quick").code == 200, f"a permit leaked after: {name}"
    assert len(gw.ends) == 2 * len(steps)  # one finalize each


# -- rejections counted (CONTRACT 4.6's twisted_gw_rate_limit_rejections_total) -----------


@pytest.mark.parametrize("kind", ["rpm", "rpd", "tpm", "tpd"])
def test_window_rejections_are_counted_by_limit(gw, kind):
    mock_model(gw, "m")
    key, _ = new_key(gw, ["m"], {kind: 1})
    assert chat(gw, key, "m").code == 200
    assert chat(gw, key, "m").code == 429
    rejections = "twisted_gw_rate_limit_rejections_total"
    assert gw.sample(rejections, limit=kind) == 1
    route = {"method": "POST", "endpoint": CHAT, "status_code": "429"}
    assert gw.sample("aisix_request_count_total", **route) == 1
    for other in {"rpm", "rpd", "tpm", "tpd", "concurrency"} - {kind}:
        assert gw.sample(rejections, limit=other) == 0


def test_concurrency_rejections_are_counted(gw):
    upstream_model(gw, "held")
    mock_model(gw, "quick")
    key, _ = new_key(gw, ["held", "quick"], {"concurrency": 1})
    held, _ = hold_stream(gw, key, "held")
    rejections = "twisted_gw_rate_limit_rejections_total"
    before = gw.sample(rejections, limit="concurrency")
    assert chat(gw, key, "quick").code == 429
    assert gw.sample(rejections, limit="concurrency") - before == 1
    walk_away(gw, held)
