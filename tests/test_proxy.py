"""CONTRACT 4.1, 4.2 and 4.4 (non-stream), black-box: the real gateway process,
a real mock upstream on a socket, HTTP over 127.0.0.1. One test per row and
bullet here; the pipeline's decisions without a wire (every bad body, every
upstream status, the mock provider's answers) are pinned in memory in
tests/test_pipeline_errors.py."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.conftest import secret, start_gateway
from tests.support.gateway import free_port, treq_json
from tests.support.mock_upstream import MockUpstream
from tests.support.upstream_errors import expected_error_type, upstream_error_table

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """A gateway with a small body limit and a 1 s gateway-wide upstream timeout."""
    gateway = start_gateway(
        tmp_path_factory.mktemp("proxy"),
        extra={"server": {"proxy": {"max_body_bytes": 65536, "upstream_timeout": 1}}},
    )
    yield gateway
    gateway.process.stop()


def error_of(body: bytes) -> dict:
    doc = json.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["param"] is None
    return doc["error"]


@pytest.fixture(scope="module")
def setup(gw, upstream):
    """Models on the mock upstream and the mock provider, and keys for them."""
    state = {}

    async def build():
        state["provider_key"] = secret("sk-provider")
        pc = {"api_key": state["provider_key"], "api_base": upstream.base_url + "/"}
        await gw.add_model("gpt", "openai/org/gpt-x", pc)
        await gw.add_model("slow", "openai/slow-model", pc, timeout=300)
        await gw.add_model("slow-default", "openai/slow-model", pc)
        await gw.add_model("gem", "gemini/gemini-2.0-flash", pc)
        await gw.add_model("deep", "deepseek/deepseek-chat", pc)
        await gw.add_model("claude", "anthropic/claude-x", pc)
        await gw.add_model("demo", "mock/demo-1", {})
        dead = {"api_key": state["provider_key"], "api_base": f"http://127.0.0.1:{free_port()}/v1"}
        await gw.add_model("dead", "openai/x", dead)
        await gw.add_model("private", "mock/p", {})
        allowed = ["gpt", "slow", "slow-default", "gem", "deep", "claude", "demo", "dead", "ghost"]
        state["key"] = await gw.add_key(allowed)

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    return state


# -- auth and parsing (CONTRACT 4.1) ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_missing_key_is_401_on_every_path(gw):
    for method, path in [
        ("POST", CHAT),
        ("POST", EMB),
        ("GET", "/v1/models"),
        ("GET", "/"),
        ("GET", "/nope"),
    ]:
        status, headers, body = await treq_json(method, gw.proxy + path)
        assert status == 401, (path, body)
        assert headers["content-type"] == "application/json"
        assert error_of(body) == {
            "message": "Missing API key in request",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }


@pytest_twisted.ensureDeferred
async def test_unknown_key_is_401(gw):
    status, _, body = await gw.chat("sk-nope", {"model": "demo", **HELLO})
    assert status == 401 and error_of(body)["message"] == "Invalid API key"


@pytest_twisted.ensureDeferred
async def test_bearer_prefix_is_case_insensitive_and_bare_key_works(gw, setup):
    for value in (f"bearer {setup['key']}", f"BEARER {setup['key']}", setup["key"]):
        status, _, body = await treq_json(
            "GET", gw.proxy + "/v1/models", headers={"Authorization": value}
        )
        assert status == 200, body


@pytest_twisted.ensureDeferred
async def test_unknown_path_404_and_wrong_method_405_after_auth(gw, setup):
    auth = {"Authorization": f"Bearer {setup['key']}"}
    status, _, body = await treq_json("GET", gw.proxy + "/v1/nope", headers=auth)
    assert status == 404 and error_of(body)["type"] == "invalid_request_error"
    status, _, body = await treq_json("GET", gw.proxy + CHAT, headers=auth)
    assert status == 405 and error_of(body)


# every other bad body: tests/test_pipeline_errors.py, in memory
@pytest.mark.parametrize("raw, fragment", [(b"{not json", "Failed to parse JSON: ")])
@pytest_twisted.ensureDeferred
async def test_bad_body_is_400_invalid_json(gw, setup, raw, fragment):
    status, _, body = await gw.chat(setup["key"], None, body=raw)
    error = error_of(body)
    assert status == 400 and error["code"] == "invalid_json"
    assert error["message"].startswith("Failed to parse JSON: ") and fragment in error["message"]


@pytest_twisted.ensureDeferred
async def test_body_over_max_body_bytes_is_413(gw, setup):
    big = {"model": "demo", "messages": [{"role": "user", "content": "x" * 70000}]}
    status, _, body = await gw.chat(setup["key"], big)
    error = error_of(body)
    assert status == 413 and error["code"] == "request_too_large"
    assert error["message"] == "Request body exceeds 65536 bytes"


@pytest_twisted.ensureDeferred
async def test_model_not_found_400_and_forbidden_403(gw, setup):
    status, _, body = await gw.chat(setup["key"], {"model": "ghost", **HELLO})
    assert status == 400 and error_of(body) == {
        "message": "Model 'ghost' not found",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    status, _, body = await gw.chat(setup["key"], {"model": "private", **HELLO})
    assert status == 403 and error_of(body) == {
        "message": "Access to model 'private' is forbidden",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_access_forbidden",
    }


@pytest_twisted.ensureDeferred
async def test_endpoint_the_provider_lacks_is_400_unsupported(gw, setup):
    status, _, body = await gw.chat(setup["key"], {"model": "deep", "input": "x"}, path=EMB)
    error = error_of(body)
    assert status == 400 and error["code"] == "unsupported_endpoint"
    assert error["message"] == "Model 'deep' does not support embeddings"


# -- GET /v1/models ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_models_lists_only_allowed_existing_models(gw, setup):
    status, _, body = await treq_json(
        "GET", gw.proxy + "/v1/models", headers={"Authorization": f"Bearer {setup['key']}"}
    )
    doc = json.loads(body)
    assert status == 200 and doc["object"] == "list"
    ids = [m["id"] for m in doc["data"]]
    assert set(ids) == {"gpt", "slow", "slow-default", "gem", "deep", "claude", "demo", "dead"}
    for item in doc["data"]:
        assert (
            item["object"] == "model"
            and item["owned_by"] == "apisix"
            and isinstance(item["created"], int)
        )


@pytest_twisted.ensureDeferred
async def test_key_with_no_models_sees_an_empty_list(gw, setup):
    key = await gw.add_key([])
    status, _, body = await treq_json(
        "GET", gw.proxy + "/v1/models", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 200 and json.loads(body) == {"object": "list", "data": []}


# -- chat and embeddings through the openai-compatible provider (CONTRACT 4.2) ---------


@pytest_twisted.ensureDeferred
async def test_chat_forwards_every_field_and_substitutes_the_upstream_id(gw, setup, fresh_upstream):
    answer = {
        "id": "chatcmpl-upstream-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "org/gpt-x-2025",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        "system_fingerprint": "fp_x",
    }
    fresh_upstream.set_json("/v1/chat/completions", answer)
    request = {
        "model": "gpt",
        "messages": [{"role": "user", "content": "héllo ✓"}],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "temperature": 0.2,
        "x_unknown_field": {"nested": [1, 2, 3]},
    }
    status, headers, body = await gw.chat(setup["key"], request)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == answer
    (seen,) = fresh_upstream.requests
    assert (seen.method, seen.path) == (
        "POST",
        "/v1/chat/completions",
    )  # trailing "/" on api_base ignored
    assert seen.headers["authorization"] == f"Bearer {setup['provider_key']}"
    assert seen.json == dict(request, model="org/gpt-x")


@pytest_twisted.ensureDeferred
async def test_gemini_and_deepseek_use_bearer_auth_on_their_base(gw, setup, fresh_upstream):
    for name, upstream_id in (("gem", "gemini-2.0-flash"), ("deep", "deepseek-chat")):
        status, _, body = await gw.chat(setup["key"], {"model": name, **HELLO})
        assert status == 200, body
        assert json.loads(body)["model"] == upstream_id
    assert [r.json["model"] for r in fresh_upstream.requests] == [
        "gemini-2.0-flash",
        "deepseek-chat",
    ]
    assert all(
        r.headers["authorization"] == f"Bearer {setup['provider_key']}"
        for r in fresh_upstream.requests
    )


@pytest_twisted.ensureDeferred
async def test_embeddings_relay_with_the_client_model_name(gw, setup, fresh_upstream):
    request = {"model": "gpt", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}
    status, _, body = await gw.chat(setup["key"], request, path=EMB)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["model"] == "gpt" and len(doc["data"]) == 2
    assert all(isinstance(item["embedding"], str) for item in doc["data"])  # base64 relayed as is
    (seen,) = fresh_upstream.requests
    assert seen.path == "/v1/embeddings" and seen.json == dict(request, model="org/gpt-x")


# -- upstream errors (the 4.1 table) ---------------------------------------------------------


# one upstream answer of each row (and an HTML page); every status, in memory:
# tests/test_pipeline_errors.py
@upstream_error_table(500, 503, 400, 401)
@pytest_twisted.ensureDeferred
async def test_upstream_status_mapping(
    gw, setup, fresh_upstream, status, answer, expected_status, expected_code, expected_message
):
    if answer is None:  # an HTML error page, not JSON
        fresh_upstream.set_raw(
            "/v1/chat/completions", b"<html>down</html>", status=status, content_type="text/html"
        )
    else:
        fresh_upstream.set_json("/v1/chat/completions", answer, status=status)
    got, _, body = await gw.chat(setup["key"], {"model": "gpt", **HELLO})
    error = error_of(body)
    assert (got, error["code"], error["message"]) == (
        expected_status,
        expected_code,
        expected_message,
    )
    assert error["type"] == expected_error_type(expected_status)


@pytest_twisted.ensureDeferred
async def test_undecodable_upstream_answer_is_502(gw, setup, fresh_upstream):
    fresh_upstream.set_raw("/v1/chat/completions", b"not json at all", status=200)
    status, _, body = await gw.chat(setup["key"], {"model": "gpt", **HELLO})
    error = error_of(body)
    assert status == 502 and error["code"] == "provider_error"
    assert error["message"].startswith("Provider error: ")


@pytest_twisted.ensureDeferred
async def test_unreachable_upstream_is_502(gw, setup):
    status, _, body = await gw.chat(setup["key"], {"model": "dead", **HELLO})
    error = error_of(body)
    assert status == 502 and error == {
        "message": "Provider error: connection refused",
        "type": "server_error",
        "param": None,
        "code": "provider_error",
    }


@pytest_twisted.ensureDeferred
async def test_upstream_closing_without_answer_is_502(gw, setup, fresh_upstream):
    fresh_upstream.set_drop("/v1/chat/completions")
    status, _, body = await gw.chat(setup["key"], {"model": "gpt", **HELLO})
    assert status == 502 and error_of(body)["code"] == "provider_error"


# -- timeouts (CONTRACT 4.4) ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_model_timeout_is_504_and_cancels_the_upstream_request(gw, setup, fresh_upstream):
    fresh_upstream.set_delay("/v1/chat/completions", 5)
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    status, _, body = await gw.chat(setup["key"], {"model": "slow", **HELLO})
    assert status == 504 and error_of(body) == {
        "message": "Provider request timed out",
        "type": "server_error",
        "param": None,
        "code": "request_timeout",
    }
    await gone  # the gateway closed its upstream connection
    (seen,) = fresh_upstream.requests
    assert seen.client_gone, "the gateway must drop the upstream request on timeout"
    assert seen.ended_at - seen.received_at < 0.6


@pytest_twisted.ensureDeferred
async def test_no_model_timeout_uses_the_gateway_wide_default(gw, setup, fresh_upstream):
    fresh_upstream.set_delay("/v1/chat/completions", 5)
    gone = fresh_upstream.wait_for_disconnect(timeout=4)
    status, _, body = await gw.chat(setup["key"], {"model": "slow-default", **HELLO})
    assert status == 504 and error_of(body)["code"] == "request_timeout"
    await gone
    (seen,) = fresh_upstream.requests
    assert seen.client_gone and 0.9 < seen.ended_at - seen.received_at < 1.6


@pytest_twisted.ensureDeferred
async def test_client_gone_cancels_the_upstream_request(gw, setup, fresh_upstream):
    fresh_upstream.set_delay("/v1/chat/completions", 5)
    gone = fresh_upstream.wait_for_disconnect(timeout=3)
    with pytest.raises(defer.TimeoutError):
        await gw.chat(setup["key"], {"model": "gpt", **HELLO}, timeout=0.3)
    await gone
    (seen,) = fresh_upstream.requests
    assert seen.client_gone and seen.ended_at - seen.received_at < 0.5


@pytest_twisted.ensureDeferred
async def test_persistent_upstream_connections_are_reused(gw, setup, fresh_upstream):
    before = fresh_upstream.total_connections
    for _ in range(5):
        status, _, _ = await gw.chat(setup["key"], {"model": "gpt", **HELLO})
        assert status == 200
    assert fresh_upstream.total_connections - before <= 1


@pytest_twisted.ensureDeferred
async def test_a_second_mock_upstream_on_another_api_base(gw, setup):
    other = MockUpstream()
    other.start()
    try:
        await gw.add_model(
            "other", "openai/m", {"api_key": "sk-other-upstream", "api_base": other.base_url}
        )
        key = await gw.add_key(["other"])
        status, _, body = await gw.chat(key, {"model": "other", **HELLO})
        assert status == 200 and len(other.requests) == 1, body
    finally:
        await other.stop()


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_an_api_base_the_url_library_refuses_is_a_json_error_and_frees_the_permit(gw, stream):
    # passes the schema (a string), but the upstream URL cannot be built
    await gw.add_model(
        f"bad-base-{stream}", "openai/x", {"api_key": "sk-x", "api_base": "http://exa mple.com/v1"}
    )
    key = secret()
    status, _ = await gw.aadmin(
        "PUT",
        f"/aisix/admin/apikeys/bad-base-key-{stream}",
        {"key": key, "allowed_models": [f"bad-base-{stream}"], "rate_limit": {"concurrency": 1}},
    )
    assert status == 201
    for _ in range(3):  # a leaked permit would make the second one a 429
        got, headers, body = await gw.chat(
            key, {"model": f"bad-base-{stream}", "stream": stream, **HELLO}
        )
        assert got in (500, 502) and headers["content-type"] == "application/json", body
        assert error_of(body)["code"] in ("provider_error", "internal_error")


@pytest_twisted.ensureDeferred
async def test_unknown_methods_do_not_mint_metric_series(gw):
    status, _, _ = await treq_json("FOOBAR", gw.proxy + CHAT)
    assert status == 401
    _, _, metrics = await treq_json("GET", gw.admin + "/metrics")
    assert b'method="FOOBAR"' not in metrics and b'method="OTHER"' in metrics
