"""CONTRACT 4.5 and the 429 rows of 4.1, black-box: rate limits and
concurrency against the real gateway process, the local ``mock`` provider
(usage 12/1/13 for a "hi") and a real mock upstream for streams that must stay open, be
cut or time out.

One test per bullet here, against the real process; the limiter's other
decisions (every window kind, the strictest headers, the 429 texts of each
scope, what a rejection spends, the release of slots on every way a request
ends) are pinned in memory, on a Clock, in tests/test_pipeline_limits.py.

Every test makes its own models and keys through the Admin API, so their
counters never meet. Windows are fixed and aligned to the epoch minute, so a
test that counts requests first steps past the last seconds of a minute.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.conftest import secret
from tests.streamcheck import counted_gateway, no_unhandled_errors, wait_finalized
from tests.support.gateway import treq_json, treq_stream
from tests.support.mock_upstream import chat_chunk, sse_event
from tests.support.ratelimit import (
    RESET,
    assert_retry_after,
    concurrency_429,
    reset_seconds,
    window_429,
)

CHAT = "/v1/chat/completions"
# the mock provider's usage for chat_doc's one message "hi" (twisted_gw.tokens):
# prompt ceil(len('[{"role":"user","content":"hi"}]') / 4) + 4 = 8 + 4, completion 1
MOCK_TOTAL_TOKENS = 13


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "ratelimit", upstream_timeout=2)


# -- helpers -------------------------------------------------------------------------


async def steady_window(margin: float = 2.0) -> None:
    """Wait out the last ``margin`` seconds of the current minute, so every
    request of the test falls into one rpm/tpm window."""
    left = 60 - time.time() % 60
    if left < margin:
        await task.deferLater(reactor, left + 0.05, lambda: None)


async def mock_model(gw, rate_limit: dict | None = None) -> tuple[str, str]:
    """A ``mock`` provider model with a fresh name: (name, store id)."""
    name = f"rl-mock-{uuid.uuid4().hex[:8]}"
    extra = {"rate_limit": rate_limit} if rate_limit is not None else {}
    return name, await gw.add_model(name, "mock/echo", {}, **extra)


async def upstream_model(
    gw, upstream, rate_limit: dict | None = None, timeout: int | None = None
) -> tuple[str, str]:
    """A model served by the mock upstream: (name, store id)."""
    name = f"rl-up-{uuid.uuid4().hex[:8]}"
    extra: dict[str, Any] = {}
    if rate_limit is not None:
        extra["rate_limit"] = rate_limit
    if timeout is not None:
        extra["timeout"] = timeout
    pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
    return name, await gw.add_model(name, "openai/gpt-rl", pc, **extra)


async def new_key(gw, allowed: list[str], rate_limit: dict | None = None) -> tuple[str, str]:
    """A client key: (key value, store id)."""
    return await gw.add_key_with_id(allowed, rate_limit)


def chat_doc(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


async def chat(gw, key: str, model: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    return await gw.chat(key, chat_doc(model), **kw)


async def stream(gw, key: str, model: str, **kw: Any):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return await treq_stream(
        "POST", gw.proxy + CHAT, headers=headers, json_body=chat_doc(model, True), **kw
    )


def hold_stream(gw, key: str, model: str) -> defer.Deferred:
    """Start a streaming request and leave it running; cancel it to walk away."""
    return defer.ensureDeferred(stream(gw, key, model))


async def walk_away(held: defer.Deferred) -> None:
    """Drop a held stream's connection, as a client that goes away does."""
    held.cancel()
    with pytest.raises(defer.CancelledError):
        await held


def error_of(body: bytes) -> dict[str, Any]:
    return json.loads(body)["error"]


async def until_ok(gw, key: str, model: str, within: float = 1.0) -> tuple[int, dict[str, str]]:
    """Retry a quick request until it is 200 (a client's leaving is seen by
    the gateway a moment after the client saw it); the last answer."""
    deadline = reactor.seconds() + within
    while True:
        status, headers, body = await chat(gw, key, model)
        if status == 200 or reactor.seconds() > deadline:
            return status, headers
        assert status == 429 and error_of(body)["code"] == "concurrency_limit_exceeded", body
        await task.deferLater(reactor, 0.02, lambda: None)


# -- request windows -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_key_rpm_exhausted_is_429_naming_the_key_id_with_retry_after(gw):
    await steady_window()
    model, _ = await mock_model(gw)
    key, key_id = await new_key(gw, [model], {"rpm": 2})
    for _ in range(2):
        assert (await chat(gw, key, model))[0] == 200
    status, headers, body = await chat(gw, key, model)
    assert status == 429
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": window_429("key", key_id, "rpm", 2)}
    assert key.encode() not in body
    assert_retry_after(headers)
    assert "x-request-id" in headers
    # still rejected: a 429 spends nothing, but it does not free anything either
    assert (await chat(gw, key, model))[0] == 429


@pytest_twisted.ensureDeferred
async def test_remaining_requests_decrease_one_by_one_with_a_reset_duration(gw):
    await steady_window()
    model, _ = await mock_model(gw)
    key, _ = await new_key(gw, [model], {"rpm": 4})
    remaining = []
    for _ in range(4):
        status, headers, _ = await chat(gw, key, model)
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "4"
        assert 0 < reset_seconds(headers["x-ratelimit-reset-requests"]) <= 60
        remaining.append(headers["x-ratelimit-remaining-requests"])
    assert remaining == ["3", "2", "1", "0"]
    assert (await chat(gw, key, model))[0] == 429


@pytest_twisted.ensureDeferred
async def test_request_rejected_by_the_model_does_not_spend_the_key_quota(gw):
    # CONTRACT 4.5 [beyond]: AISIX spends the key's request when the model rejects
    await steady_window()
    strict, strict_id = await mock_model(gw, {"rpm": 1})
    free, _ = await mock_model(gw)
    key, key_id = await new_key(gw, [strict, free], {"rpm": 3})
    assert (await chat(gw, key, strict))[0] == 200  # key: 1 of 3
    for _ in range(3):
        status, _, body = await chat(gw, key, strict)
        assert status == 429 and error_of(body) == window_429("model", strict_id, "rpm", 1)
    status, headers, _ = await chat(gw, key, free)
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "1"  # key: 2 of 3
    assert (await chat(gw, key, free))[0] == 200
    status, _, body = await chat(gw, key, free)
    assert status == 429 and error_of(body) == window_429("key", key_id, "rpm", 3)


@pytest_twisted.ensureDeferred
async def test_rate_limit_headers_on_streaming_responses(gw):
    await steady_window()
    model, _ = await mock_model(gw)
    key, _ = await new_key(gw, [model], {"rpm": 10, "tpm": 1000, "concurrency": 2})
    first = await stream(gw, key, model)
    assert first.status == 200 and first.headers["content-type"] == "text/event-stream"
    assert first.data[-1] == "[DONE]"
    h = first.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("10", "9")
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("1000", "1000")
    assert (h["x-ratelimit-limit-concurrent"], h["x-ratelimit-remaining-concurrent"]) == ("2", "1")
    assert RESET.match(h["x-ratelimit-reset-requests"]) and h["x-ratelimit-reset-requests"]
    assert RESET.match(h["x-ratelimit-reset-tokens"]) and h["x-ratelimit-reset-tokens"]
    second = await stream(gw, key, model)
    assert second.headers["x-ratelimit-remaining-requests"] == "8"
    # the first stream's usage chunk was settled at its finalize
    assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - MOCK_TOTAL_TOKENS)


# -- token windows ------------------------------------------------------------------------


# a stream's usage chunk on a key's limit here; the three other cases, in memory:
# tests/test_pipeline_limits.py
@pytest.mark.parametrize("streaming", [True], ids=["stream"])
@pytest.mark.parametrize("scope", ["key"])
@pytest_twisted.ensureDeferred
async def test_tpm_is_reached_after_usage_is_settled(gw, scope, streaming):
    # check at pre-call rejects only when nothing remains: 0 < 20, 13 < 20, 26 >= 20
    await steady_window()
    model, model_id = await mock_model(gw, {"tpm": 20} if scope == "model" else None)
    key, key_id = await new_key(gw, [model], {"tpm": 20} if scope == "key" else None)
    seen = []
    for _ in range(2):
        if streaming:
            result = await stream(gw, key, model)
            status, headers = result.status, result.headers
            assert result.json_chunks[-1]["usage"]["total_tokens"] == MOCK_TOTAL_TOKENS
        else:
            status, headers, _ = await chat(gw, key, model)
        assert status == 200
        seen.append(headers["x-ratelimit-remaining-tokens"])
        assert (await wait_finalized(gw.process, headers["x-request-id"]))[2] == 13
    assert seen == ["20", str(20 - MOCK_TOTAL_TOKENS)]
    status, headers, body = await chat(gw, key, model)
    assert status == 429
    assert error_of(body) == window_429(scope, key_id if scope == "key" else model_id, "tpm", 20)
    assert_retry_after(headers)


# -- concurrency --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_concurrency_429_while_a_stream_is_open_freed_when_the_client_leaves(
    gw, fresh_upstream
):
    held_model, _ = await upstream_model(gw, fresh_upstream)
    quick, _ = await mock_model(gw)
    key, key_id = await new_key(gw, [held_model, quick], {"concurrency": 1})
    fresh_upstream.set_sse(CHAT, [sse_event(chat_chunk("a", role="assistant"))], end="hang")
    held = hold_stream(gw, key, held_model)
    await fresh_upstream.wait_for_requests(1, timeout=5)
    gone = fresh_upstream.wait_for_disconnect(timeout=5)
    for doc in (chat_doc(quick), chat_doc(quick, stream=True)):
        status, headers, body = await gw.chat(key, doc)
        assert status == 429 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"error": concurrency_429(key_id)}
        assert key.encode() not in body
    await walk_away(held)
    status, headers = await until_ok(gw, key, quick)
    assert status == 200, "the permit of a stream whose client left was never released"
    assert headers["x-ratelimit-remaining-concurrent"] == "0"  # this request holds it now
    await gone  # and the upstream request was cancelled


# -- changes and exemptions ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_key_limit_changed_through_the_admin_api_applies_to_the_next_request(gw):
    await steady_window()
    model, _ = await mock_model(gw)
    key, key_id = await new_key(gw, [model], {"rpm": 100})
    status, headers, _ = await chat(gw, key, model)
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "99"

    async def put(rate_limit: dict | None) -> None:
        doc: dict[str, Any] = {"key": key, "allowed_models": [model]}
        if rate_limit is not None:
            doc["rate_limit"] = rate_limit
        status, body = await gw.aadmin("PUT", f"/aisix/admin/apikeys/{key_id}", doc)
        assert status == 200, body

    await put({"rpm": 1})  # already 1 spent in this window
    status, _, body = await chat(gw, key, model)
    assert status == 429 and error_of(body) == window_429("key", key_id, "rpm", 1)
    await put({"rpm": 1000})
    status, headers, _ = await chat(gw, key, model)
    assert status == 200 and headers["x-ratelimit-limit-requests"] == "1000"
    assert headers["x-ratelimit-remaining-requests"] == "998"  # the counter was kept
    await put(None)
    status, headers, _ = await chat(gw, key, model)
    assert status == 200 and not [h for h in headers if h.startswith("x-ratelimit-")]


@pytest_twisted.ensureDeferred
async def test_a_model_limit_changed_through_the_admin_api_applies_to_the_next_request(gw):
    await steady_window()
    model, model_id = await mock_model(gw)
    key, _ = await new_key(gw, [model])
    assert (await chat(gw, key, model))[0] == 200
    doc = {"name": model, "model": "mock/echo", "provider_config": {}, "rate_limit": {"tpm": 1}}
    status, body = await gw.aadmin("PUT", f"/aisix/admin/models/{model_id}", doc)
    assert status == 200, body
    status, headers, _ = await chat(gw, key, model)  # nothing spent yet under tpm
    assert status == 200 and headers["x-ratelimit-remaining-tokens"] == "1"
    status, _, body = await chat(gw, key, model)
    assert status == 429 and error_of(body) == window_429("model", model_id, "tpm", 1)
    doc["rate_limit"] = {"concurrency": 5}
    status, body = await gw.aadmin("PUT", f"/aisix/admin/models/{model_id}", doc)
    assert status == 200, body
    status, headers, _ = await chat(gw, key, model)
    assert status == 200 and headers["x-ratelimit-limit-concurrent"] == "5"


@pytest_twisted.ensureDeferred
async def test_models_endpoint_is_not_rate_limited(gw):
    await steady_window()
    model, _ = await mock_model(gw, {"rpm": 1})
    key, _ = await new_key(gw, [model], {"rpm": 1, "concurrency": 1})
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(3):  # spends nothing
        status, headers, body = await treq_json("GET", gw.proxy + "/v1/models", headers=auth)
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [model]
        assert not [h for h in headers if h.startswith("x-ratelimit-")]
    assert (await chat(gw, key, model))[0] == 200
    assert (await chat(gw, key, model))[0] == 429
    status, _, _ = await treq_json("GET", gw.proxy + "/v1/models", headers=auth)
    assert status == 200  # and is not refused when the limits are spent


@pytest_twisted.ensureDeferred
async def test_no_unhandled_errors_after_all_paths(gw):
    await task.deferLater(reactor, 0.1, lambda: None)
    no_unhandled_errors(gw.process)
