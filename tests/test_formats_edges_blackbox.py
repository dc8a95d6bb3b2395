"""Edges of ``/v1/messages``, ``/v1/messages/count_tokens``, ``/v1/responses``
and the provider entity on etcd, black-box (CONTRACT-NEXT 1, 2.4, 2.5, 3.5):
the real gateway process, real mock upstreams on 127.0.0.1, the official SDKs
where a client would use them and raw SSE where the wire itself is checked.

tests/test_formats_blackbox.py covers the common paths; this file covers what
it leaves: count_tokens both ways, the rest of the 2.4 error table, streams
that end badly on the translated path, and provider documents on a real etcd.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
import pytest
import pytest_twisted
from twisted.internet import defer

from tests.conftest import secret, start_gateway
from tests.streamcheck import counted_gateway
from tests.support.gateway import treq_stream
from tests.support.mock_upstream import DEFAULT_CONTENT, chat_chunk, sse_event
from tests.test_etcd_store import unique_prefix
from tests.test_formats_blackbox import (
    BETA,
    CHAT,
    CLAUDE,
    MESSAGES,
    RESPONSES,
    anthropic_client,
    failing,
    finalized,
    fresh_model,
    in_thread,
    only_request,
    sse_events,
    user,
)
from tests.test_soak import poll

COUNT = MESSAGES + "/count_tokens"
P = "/aisix/admin/providers"
M = "/aisix/admin/models"
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")
#: put in every upstream error body: it must never reach the client
LEAK = "sk-upstream-leak-0123"


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "formats-edges", upstream_timeout=5)


@pytest.fixture(scope="module")
def env(gw, upstream):
    """An openai-backed and an anthropic-backed model; a key for both, one for the first."""
    state: dict[str, Any] = {"provider_key": secret("sk-provider")}

    async def build():
        pc = {"api_key": state["provider_key"], "api_base": upstream.base_url}
        await gw.add_model("ex-gpt", "openai/gpt-4o-mini", pc)
        await gw.add_model("ex-claude", f"anthropic/{CLAUDE}", pc)
        state["key"] = await gw.add_key(["ex-gpt", "ex-claude"])
        state["narrow_key"] = await gw.add_key(["ex-gpt"])

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    state["anthropic"] = anthropic_client(gw, state["key"])
    return state


def anthropic_error(raw: bytes) -> dict[str, Any]:
    """The ``error`` of an Anthropic-shaped error body; its request_id is ``req_`` + 32 hex."""
    body = json.loads(raw)
    assert set(body) == {"type", "error", "request_id"} and body["type"] == "error", body
    assert REQUEST_ID.fullmatch(body["request_id"]), body["request_id"]
    return body["error"]


async def post_stream(gw, key: str, path: str, body: dict, **kw: Any):
    headers = {"x-api-key": key, "content-type": "application/json"}
    return await treq_stream("POST", gw.proxy + path, headers=headers, json_body=body, **kw)


def message_stream(model: str = "ex-gpt") -> dict[str, Any]:
    return {"model": model, "max_tokens": 32, "stream": True, "messages": user()}


# -- 1. count_tokens ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sdk_count_tokens_on_an_anthropic_model_is_the_upstream_s_count(
    gw, env, fresh_upstream
):
    fresh_upstream.set_json(COUNT, {"input_tokens": 1234})
    system = [{"type": "text", "text": "Count me.", "cache_control": {"type": "ephemeral"}}]
    raw = await in_thread(
        env["anthropic"].messages.with_raw_response.count_tokens,
        model="ex-claude",
        system=system,
        messages=user("How many tokens is this?"),
        extra_headers={"anthropic-beta": BETA},
    )
    assert raw.status_code == 200 and raw.parse().input_tokens == 1234
    assert json.loads(raw.http_response.content) == {"input_tokens": 1234}
    seen = only_request(fresh_upstream, COUNT)
    assert seen.json == {
        "model": CLAUDE,
        "system": system,
        "messages": user("How many tokens is this?"),
    }
    assert seen.headers["anthropic-beta"] == BETA
    assert seen.headers["x-api-key"] == env["provider_key"]
    assert env["key"] not in json.dumps(seen.headers)
    _, status, _ = await finalized(gw, dict(raw.headers))
    assert status == "200"


@pytest_twisted.ensureDeferred
async def test_sdk_count_tokens_on_an_openai_model_is_an_estimate_without_upstream_call(
    gw, env, fresh_upstream
):
    raw = await in_thread(
        env["anthropic"].messages.with_raw_response.count_tokens,
        model="ex-gpt",
        system="You are a counter.",
        messages=user("A sentence of a few words to count, more or less."),
    )
    assert raw.status_code == 200 and raw.parse().input_tokens > 0
    body = json.loads(raw.http_response.content)
    assert body["estimated"] is True and body["input_tokens"] == raw.parse().input_tokens
    assert fresh_upstream.requests == []
    _, status, _ = await finalized(gw, dict(raw.headers))
    assert status == "200"


# -- 2. the rest of the 2.4 error table --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_model_the_key_may_not_use_is_403_permission_error(gw, env, fresh_upstream):
    error = await failing(
        anthropic.PermissionDeniedError,
        anthropic_client(gw, env["narrow_key"]).messages.create,
        model="ex-claude",
        max_tokens=8,
        messages=user(),
    )
    assert error.status_code == 403
    assert anthropic_error(error.response.content) == {
        "type": "permission_error",
        "message": "Access to model 'ex-claude' is forbidden",
    }
    assert fresh_upstream.requests == []
    _, status, _ = await finalized(gw, dict(error.response.headers))
    assert status == "403"


@pytest_twisted.ensureDeferred
async def test_a_model_timeout_is_504_timeout_error(gw, env, upstream, fresh_upstream):
    name = await fresh_model(gw, upstream.base_url, timeout=200)
    key = await gw.add_key([name])
    fresh_upstream.set_delay(CHAT, 2)
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    error = await failing(
        anthropic.APIStatusError,
        anthropic_client(gw, key).messages.create,
        model=name,
        max_tokens=8,
        messages=user(),
    )
    assert error.status_code == 504
    assert anthropic_error(error.response.content) == {
        "type": "timeout_error",
        "message": "Provider request timed out",
    }
    await gone  # the gateway gave up on the upstream request
    assert (await finalized(gw, dict(error.response.headers)))[:2] == ("timeout", "504")


UPSTREAM_STATUSES = [
    (402, "billing_error", "Payment required"),
    (404, "not_found_error", "Requested resource not found"),
    (413, "request_too_large", "Request payload too large"),
    (408, "timeout_error", "Upstream request timed out"),
    (529, "api_error", "overloaded_error"),
    (418, "invalid_request_error", "Provider error"),
    (501, "api_error", "Provider error"),
]


@pytest.mark.parametrize("status, kind, message", UPSTREAM_STATUSES)
@pytest_twisted.ensureDeferred
async def test_an_upstream_status_maps_to_its_anthropic_error_without_its_body(
    gw, upstream, fresh_upstream, status, kind, message
):
    name = await fresh_model(gw, upstream.base_url)  # one deployment: one attempt
    key = await gw.add_key([name])
    body = {"error": {"message": f"upstream says no, {LEAK}", "type": "x", "code": "y"}}
    fresh_upstream.set_json(CHAT, body, status=status)
    doc = {"model": name, "max_tokens": 8, "messages": user()}
    code, answer_headers, raw = await gw.chat(key, doc, path=MESSAGES)
    assert code == status
    assert anthropic_error(raw) == {"type": kind, "message": message}
    assert LEAK.encode() not in raw and b"upstream says no" not in raw
    assert len(fresh_upstream.requests) == 1
    assert answer_headers.get("x-gateway-attempts", "1") == "1"
    _, logged, _ = await finalized(gw, answer_headers)
    assert logged == str(status)


# -- 3. streams that end badly through the translated path ------------------------------


@pytest_twisted.ensureDeferred
async def test_message_stream_without_a_chunk_with_a_choice_is_200_without_events(
    gw, env, fresh_upstream
):
    usage = {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    fresh_upstream.set_sse(CHAT, [sse_event(chat_chunk(usage=usage)), sse_event("[DONE]")])
    result = await post_stream(gw, env["key"], MESSAGES, message_stream())
    assert result.status == 200 and result.ended == "done"
    assert result.headers["content-type"].startswith("text/event-stream")
    events = [(k, without_sequence_number(d)) for k, d in sse_events(result.body)]
    assert events == [] and b"event:" not in result.body
    assert (await finalized(gw, result.headers))[1] == "200"


def started_chunks() -> list[bytes]:
    return [
        sse_event(chat_chunk(role="assistant", content="")),
        sse_event(chat_chunk("half ")),
    ]


def only_error_event(events: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """The one ``error`` event of a Messages stream, its last; no ``message_stop``."""
    kinds = [kind for kind, _ in events]
    assert kinds.count("error") == 1 and kinds[-1] == "error", kinds
    assert "message_stop" not in kinds and "message_delta" not in kinds
    data = events[-1][1]
    assert set(data) == {"type", "error"} and data["type"] == "error"
    assert set(data["error"]) == {"type", "message"} and data["error"]["type"] == "api_error"
    return data["error"]


@pytest_twisted.ensureDeferred
async def test_message_stream_cut_mid_way_ends_with_one_error_event(gw, env, fresh_upstream):
    fresh_upstream.set_sse(CHAT, started_chunks(), end="cut", end_delay=0.05)
    result = await post_stream(gw, env["key"], MESSAGES, message_stream())
    assert result.status == 200
    events = sse_events(result.body)
    assert [k for k, _ in events][:2] == ["message_start", "content_block_start"]
    assert any(k == "content_block_delta" and d["delta"]["text"] == "half " for k, d in events)
    error = only_error_event(events)
    assert error["message"].startswith(("HTTP: ", "stream: ")), error
    assert (await finalized(gw, result.headers))[1] == "200"


@pytest_twisted.ensureDeferred
async def test_message_stream_with_a_malformed_chunk_after_the_first_has_one_error_event(
    gw, env, fresh_upstream
):
    chunks = [*started_chunks(), b"data: {not json at all\n\n", sse_event(chat_chunk("never"))]
    fresh_upstream.set_sse(CHAT, [*chunks, sse_event("[DONE]")])
    result = await post_stream(gw, env["key"], MESSAGES, message_stream())
    assert result.status == 200
    events = sse_events(result.body)
    assert events[0][0] == "message_start"
    error = only_error_event(events)
    # the text is the gateway's (at present "stream: the upstream stream ended early")
    assert error["message"].startswith(("stream: ", "data transform: ")), error
    assert b"never" not in result.body
    assert (await finalized(gw, result.headers))[1] == "200"


@pytest_twisted.ensureDeferred
async def test_message_stream_client_gone_closes_the_upstream_and_finalizes_once(
    gw, env, fresh_upstream
):
    pieces = [sse_event(chat_chunk(role="assistant", content=""))]
    pieces += [sse_event(chat_chunk(f"w{i} ")) for i in range(40)]
    fresh_upstream.set_sse(CHAT, pieces, gap=0.05, end="hang")
    gone = fresh_upstream.wait_for_disconnect(timeout=5)
    result = await post_stream(
        gw,
        env["key"],
        MESSAGES,
        message_stream(),
        stop_when=lambda body: body.count(b"content_block_delta") >= 3,
    )
    assert result.status == 200 and result.ended == "stopped"
    await gone
    (seen,) = fresh_upstream.requests
    assert seen.client_gone
    assert (await finalized(gw, result.headers))[:2] == ("client_gone", "200")


def without_sequence_number(data: dict[str, Any]) -> dict[str, Any]:
    """A Responses event without the official ``sequence_number`` we add (**[ours]**,
    twisted_gw/formats/responses.py: the openai SDK's typed events need it)."""
    assert isinstance(data.get("sequence_number"), int), data
    return {k: v for k, v in data.items() if k != "sequence_number"}


@pytest_twisted.ensureDeferred
async def test_response_stream_cut_mid_way_is_an_error_event_and_nothing_stored(
    gw, env, fresh_upstream
):
    fresh_upstream.set_sse(CHAT, started_chunks(), end="cut", end_delay=0.05)
    body = {"model": "ex-gpt", "input": "hi", "stream": True}
    result = await post_stream(gw, env["key"], RESPONSES, body)
    assert result.status == 200
    events = sse_events(result.body)
    kinds = [k for k, _ in events]
    assert kinds[0] == "response.created" and kinds.count("error") == 1 and kinds[-1] == "error"
    assert "response.completed" not in kinds
    error = without_sequence_number(events[-1][1])
    assert set(error) == {"type", "message"} and error["type"] == "error"
    assert error["message"].startswith(("HTTP: ", "stream: ")), error
    response_id = events[0][1]["response"]["id"]
    assert response_id.startswith("aresp_")
    await finalized(gw, result.headers)
    fresh_upstream.reset()
    again = {"model": "ex-gpt", "input": "go on", "previous_response_id": response_id}
    status, _, raw = await gw.chat(env["key"], again, path=RESPONSES)
    assert status == 400
    assert json.loads(raw)["error"]["message"] == (
        f"validation: previous_response_not_found: {response_id}"
    )
    assert fresh_upstream.requests == []


@pytest_twisted.ensureDeferred
async def test_response_stream_of_an_empty_upstream_is_one_error_event(gw, env, fresh_upstream):
    fresh_upstream.set_sse(CHAT, [])
    body = {"model": "ex-gpt", "input": "hi", "stream": True}
    result = await post_stream(gw, env["key"], RESPONSES, body)
    assert result.status == 200
    events = [(k, without_sequence_number(d)) for k, d in sse_events(result.body)]
    assert events == [
        (
            "error",
            {
                "type": "error",
                "message": "Gateway error: validation: "
                "responses stream completed without an upstream response id",
            },
        )
    ]
    assert (await finalized(gw, result.headers))[1] == "200"


# -- 4. the provider entity on a real etcd ---------------------------------------------


@pytest.fixture(scope="module")
def etcd_gw(etcd, tmp_path_factory):
    prefix = unique_prefix("/edges")
    settings = {"host": [etcd.url], "prefix": prefix, "timeout": 1}
    gateway = start_gateway(
        tmp_path_factory.mktemp("edges-etcd"), extra={"deployment": {"etcd": settings}}
    )
    yield gateway, prefix
    gateway.process.stop()


async def chat_ok(gw, key: str, model: str) -> dict[str, Any] | None:
    status, _, raw = await gw.chat(key, {"model": model, "messages": user("hi")})
    return json.loads(raw) if status == 200 else None


@pytest_twisted.ensureDeferred
async def test_provider_entity_and_legacy_model_side_by_side_on_etcd(
    etcd, etcd_gw, upstream, fresh_upstream
):
    gw, prefix = etcd_gw
    base = upstream.base_url.removesuffix("/v1")
    provider_key = secret("sk-prov")
    doc = {"name": "edge", "type": "openai", "config": {"api_key": provider_key, "api_base": base}}
    status, body = await gw.aadmin("POST", P, doc)
    assert status == 201, body
    provider_id = body["key"].split("/")[-1]
    stored = etcd.get(f"{prefix}/providers/{provider_id}")
    assert stored is not None and stored["value"] == doc
    new = {"name": "edge-new", "provider_id": provider_id, "model": "org/served:q4"}
    assert (await gw.aadmin("POST", M, new))[0] == 201
    legacy_key = secret("sk-legacy")
    legacy = {"api_key": legacy_key, "api_base": upstream.base_url}
    await gw.add_model("edge-legacy", "openai/gpt-legacy", legacy)
    # another writer (etcdctl, a second gateway) adds a provider and a model naming it
    other_key = secret("sk-other")
    other = {"name": "other", "type": "openai", "config": {"api_key": other_key, "api_base": base}}
    await etcd.aput(f"{prefix}/providers/by-hand", other)
    await etcd.aput(
        f"{prefix}/models/by-hand",
        {"name": "edge-hand", "provider_id": "by-hand", "model": "hand/made"},
    )
    key = await gw.add_key(["edge-new", "edge-legacy", "edge-hand"])

    answer = await chat_ok(gw, key, "edge-new")
    assert answer is not None and answer["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    answer = await chat_ok(gw, key, "edge-legacy")
    assert answer is not None and answer["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    answer = await poll(lambda: chat_ok(gw, key, "edge-hand"), within=5)
    assert answer is not None, "the model put into etcd was never served"
    sent = {r.json["model"]: r.headers["authorization"] for r in fresh_upstream.requests}
    assert sent["org/served:q4"] == f"Bearer {provider_key}"
    assert sent["gpt-legacy"] == f"Bearer {legacy_key}"
    assert sent["hand/made"] == f"Bearer {other_key}"

    status, body = await gw.aadmin("DELETE", f"{P}/{provider_id}")
    assert (status, body) == (400, {"error_msg": "provider is still referenced by models"})
    assert etcd.get(f"{prefix}/providers/{provider_id}") is not None
    status, body = await gw.aadmin("DELETE", f"{P}/by-hand")
    assert (status, body) == (400, {"error_msg": "provider is still referenced by models"})
    assert await chat_ok(gw, key, "edge-new") is not None  # still served
