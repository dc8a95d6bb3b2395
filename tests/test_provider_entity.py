"""The provider entity and the models that name it (CONTRACT-NEXT 1), beside
the legacy wire of CONTRACT 2 in one store: the pure parts (URLs, request
tweaks, resolution) first, then the Admin API and the proxy of the real
gateway process against the real mock upstream."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.logger import capturedLogs, formatEvent

from tests.conftest import secret
from tests.streamcheck import counted_gateway
from twisted_gw.config.entities import SchemaError, parse_model, parse_provider
from twisted_gw.config.snapshot import Snapshot, StoredEntry
from twisted_gw.providers import types
from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS
from twisted_gw.providers.typed import TypedProvider
from twisted_gw.testing import MemoryGateway

P = "/aisix/admin/providers"
M = "/aisix/admin/models"

# -- pure: URLs, request tweaks, resolution ------------------------------------------------


@pytest.mark.parametrize(
    "base, path, url",
    [
        ("http://h", "/v1/chat/completions", "http://h/v1/chat/completions"),
        ("http://h/v1", "/v1/chat/completions", "http://h/v1/chat/completions"),
        ("http://h/v1/", "/v1/chat/completions", "http://h/v1/chat/completions"),
        ("http://h/api/v1", "/v1/embeddings", "http://h/api/v1/embeddings"),
        ("http://h/xv1", "/v1/chat/completions", "http://h/xv1/v1/chat/completions"),
        (
            "https://g/v1beta/openai",
            "/chat/completions",
            "https://g/v1beta/openai/chat/completions",
        ),
        ("http://h/v1?tenant=a", "/v1/chat/completions", "http://h/v1/chat/completions?tenant=a"),
    ],
)
def test_join_url_drops_the_overlap_of_base_and_endpoint(base, path, url):
    assert types.join_url(base, path) == url


def test_each_type_s_endpoints_from_its_default_base():
    urls = {t.name: types.endpoint_urls(t, {"api_key": "k"}, "m") for t in types.TYPES}
    assert urls["openai"] == {
        CHAT: "https://api.openai.com/v1/chat/completions",
        EMBEDDINGS: "https://api.openai.com/v1/embeddings",
    }
    assert urls["gemini"][EMBEDDINGS] == (
        "https://generativelanguage.googleapis.com/v1beta/openai/embeddings"
    )
    assert urls["anthropic"] == {CHAT: "https://api.anthropic.com/v1/messages"}
    assert urls["openrouter"] == {CHAT: "https://openrouter.ai/api/v1/chat/completions"}
    assert urls["deepseek"] == {CHAT: "https://api.deepseek.com/v1/chat/completions"}
    assert urls["mock"] == {}


def test_azure_deploys_the_model_in_the_url_with_its_api_version():
    azure = types.BY_NAME["azure"]
    urls = types.endpoint_urls(azure, {"api_key": "k", "api_base": "https://a.example"}, "gpt/4o")
    assert urls[CHAT] == (
        "https://a.example/openai/deployments/gpt%2F4o/chat/completions?api-version=v1"
    )
    config = {"api_key": "k", "api_base": "https://a.example", "api_version": "2024-10-21"}
    assert types.endpoint_urls(azure, config, "m")[EMBEDDINGS].endswith("?api-version=2024-10-21")


def body_for(type_name: str, body: dict) -> dict:
    provider = TypedProvider(types.BY_NAME[type_name], client=None)  # type: ignore[arg-type]
    model = parse_model("m", {"name": "n", "provider_id": "p", "model": "up/x"})
    return provider.upstream_body(model, body, CHAT)


def test_request_tweaks_of_the_types():
    chat = {
        "model": "n",
        "messages": [{"role": "user", "content": "hi", "name": "ann"}],
        "n": 3,
        "logprobs": True,
        "logit_bias": {"1": 2},
        "tool_choice": {"type": "function", "function": {"name": "f"}},
    }
    groq = body_for("groq", chat)
    assert groq["n"] == 1 and "logprobs" not in groq and "logit_bias" not in groq
    assert groq["messages"] == [{"role": "user", "content": "hi"}] and groq["model"] == "up/x"
    assert "model" not in body_for("azure", chat)
    assert body_for("fireworks-ai", chat)["context_length_exceeded_behavior"] == "error"
    assert "tool_choice" not in body_for("moonshotai", chat)
    assert body_for("moonshotai", {**chat, "tool_choice": "auto"})["tool_choice"] == "auto"
    assert body_for("openai", chat) == {**chat, "model": "up/x"}  # nothing else changes
    assert chat["n"] == 3  # the client's body is never changed in place


def test_auth_headers_of_the_types():
    model = parse_model("m", {"name": "n", "provider_id": "p", "model": "x"})
    model = replace(model, api_key="sk-up")
    headers = {
        name: TypedProvider(types.BY_NAME[name], client=None).headers(model)  # type: ignore[arg-type]
        for name in ("openai", "azure", "gemini")
    }
    assert headers["openai"][b"authorization"] == [b"Bearer sk-up"]
    assert headers["azure"][b"api-key"] == [b"sk-up"] and b"authorization" not in headers["azure"]
    assert headers["gemini"][b"x-goog-api-key"] == [b"sk-up"]


def entry(key: str, value: dict) -> StoredEntry:
    return StoredEntry(key, value, 1, 1)


def test_the_snapshot_resolves_a_model_against_its_provider_and_keeps_legacy_models():
    snap = Snapshot.build(
        [
            entry(
                "/providers/p1",
                {
                    "name": "eu",
                    "type": "openai",
                    "config": {"api_key": "sk-p1", "api_base": "http://h/v1"},
                },
            ),
            entry("/models/m1", {"name": "new", "provider_id": "p1", "model": "gpt-4o"}),
            entry("/models/m2", {"name": "orphan", "provider_id": "gone", "model": "x"}),
            entry(
                "/models/m3",
                {"name": "old", "model": "openai/gpt-4o", "provider_config": {"api_key": "sk-old"}},
            ),
            entry("/models/m4", {"name": "extra", "provider_id": "p1", "model": "y", "junk": 1}),
        ]
    )
    new = snap.models_by_name["new"]
    assert (new.provider, new.api_key, new.upstream_model) == ("provider:openai", "sk-p1", "gpt-4o")
    assert new.endpoint_urls[CHAT] == "http://h/v1/chat/completions"
    assert snap.models_by_name["orphan"].provider == ""  # listed, a 500 when called
    assert snap.models_by_name["old"].provider == "openai"
    assert "extra" in snap.models_by_name  # a stored later-wire document drops unknown keys
    assert "sk-p1" not in snap.redact("key sk-p1 leaked")


def test_which_wire_a_model_document_follows():
    with pytest.raises(SchemaError, match='"provider_id" is a required property'):
        parse_model("m", {"name": "a", "model": "openai/x"})
    both = {"name": "a", "model": "x", "provider_id": "p", "provider_config": {"api_key": "k"}}
    with pytest.raises(SchemaError, match="'provider_config' was unexpected"):
        parse_model("m", both)
    assert (
        parse_model("m", {"name": "a", "model": "mock/x", "provider_config": {}}).provider == "mock"
    )


@pytest.mark.parametrize(
    "doc, text",
    [
        (
            {"name": "x", "type": "openai", "config": {}},
            '"/config" validation failed: "api_key" is a required property',
        ),
        (
            {"name": "x", "type": "azure", "config": {"api_key": "k"}},
            '"api_base" is a required property',
        ),
        (
            {"name": "x", "type": "nope", "config": {"api_key": "k"}},
            '"nope" is not one of ["openai","azure"',
        ),
        (
            {"name": "x", "type": "openai", "config": {"api_key": "k", "x": "y"}},
            "('x' was unexpected)",
        ),
        ({"name": "x", "type": "mock", "config": {"api_key": "k"}}, "('api_key' was unexpected)"),
        ({"type": "openai", "config": {"api_key": "k"}}, '"name" is a required property'),
    ],
)
def test_provider_schema_errors(doc, text):
    with pytest.raises(SchemaError) as info:
        parse_provider("p", doc)
    assert text in str(info.value)


# -- black-box: the Admin API and the proxy -------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "provider-entity", upstream_timeout=2)


async def admin(gw, method, path, doc=None):
    return await gw.aadmin(method, path, doc)


@pytest_twisted.ensureDeferred
async def test_provider_crud_and_the_texts_of_its_errors(gw):
    status, body = await admin(gw, "GET", P + "/nope")
    assert (status, body) == (404, {"error_msg": "Provider with ID nope not found"})
    doc = {"name": "eu", "type": "openai", "config": {"api_key": secret()}}
    status, body = await admin(gw, "PUT", P + "/eu", doc)
    assert (status, body) == (201, {"key": "/providers/eu", "value": doc})
    status, body = await admin(gw, "PUT", P + "/eu2", doc)  # names need not be unique
    assert status == 201
    status, body = await admin(gw, "POST", P, {**doc, "type": "vertex"})
    assert status == 400 and body["error_msg"].startswith(
        'JSON schema validation error: property "/type" validation failed: "vertex" is not one of'
    )
    status, body = await admin(gw, "GET", P)
    assert status == 200 and {e["key"] for e in body["list"]} >= {"/providers/eu", "/providers/eu2"}
    status, body = await admin(gw, "DELETE", P + "/eu2")
    assert (status, body) == (200, {"deleted": 1, "key": "/providers/eu2"})
    status, body = await admin(gw, "DELETE", P + "/eu2")
    assert (status, body) == (404, {"error_msg": "Provider with ID eu2 not found"})


@pytest_twisted.ensureDeferred
async def test_a_model_names_an_existing_provider_which_cannot_go_while_named(gw):
    status, body = await admin(
        gw, "PUT", M + "/m-x", {"name": "m-x", "provider_id": "zz", "model": "x"}
    )
    assert (status, body) == (400, {"error_msg": "Provider with ID zz not found"})
    doc = {"name": "ref", "type": "openai", "config": {"api_key": secret()}}
    assert (await admin(gw, "PUT", P + "/ref", doc))[0] == 201
    model = {"name": "m-ref", "provider_id": "ref", "model": "org/m:1"}
    status, body = await admin(gw, "PUT", M + "/m-ref", model)
    assert (status, body) == (201, {"key": "/models/m-ref", "value": model})
    status, body = await admin(gw, "DELETE", P + "/ref")
    assert (status, body) == (400, {"error_msg": "provider is still referenced by models"})
    assert (await admin(gw, "DELETE", M + "/m-ref"))[0] == 200
    assert (await admin(gw, "DELETE", P + "/ref"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_names_are_unique_across_both_wires(gw, upstream):
    doc = {"name": "uniq", "type": "openai", "config": {"api_key": secret()}}
    assert (await admin(gw, "PUT", P + "/u", doc))[0] == 201
    await gw.add_model("both-wires", "openai/x", {"api_key": secret()})
    status, body = await admin(
        gw, "POST", M, {"name": "both-wires", "provider_id": "u", "model": "x"}
    )
    assert (status, body) == (400, {"error_msg": "Model name already exists"})


@pytest_twisted.ensureDeferred
async def test_a_call_through_a_provider_entity_reaches_its_upstream(gw, upstream):
    provider_key = secret("sk-prov")
    base = upstream.base_url.removesuffix("/v1")  # http://127.0.0.1:<port>: the /v1 is added
    doc = {"name": "local", "type": "openai", "config": {"api_key": provider_key, "api_base": base}}
    assert (await admin(gw, "PUT", P + "/local", doc))[0] == 201
    model = {"name": "via-provider", "provider_id": "local", "model": "org/served:q4"}
    assert (await admin(gw, "PUT", M + "/via-provider", model))[0] == 201
    key = await gw.add_key(["via-provider"])
    upstream.reset()
    status, _, raw = await gw.chat(
        key, {"model": "via-provider", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 200, raw
    assert json.loads(raw)["object"] == "chat.completion"
    seen = upstream.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {provider_key}"
    assert seen.json["model"] == "org/served:q4"


def test_a_model_whose_provider_is_gone_is_listed_and_a_500_after_its_limits():
    # a stored model can outlive its provider (another writer, e.g. etcdctl, removed it)
    gw = MemoryGateway()
    gw._put(
        "models", {"name": "orphan", "provider_id": "gone", "model": "x", "rate_limit": {"rpm": 1}}
    )
    key = gw.add_key(["orphan"])
    listed = gw.result(gw.get("/v1/models", key)).json()
    assert [m["id"] for m in listed["data"]] == ["orphan"]
    hello = {"model": "orphan", "messages": [{"role": "user", "content": "hi"}]}
    with capturedLogs() as events:
        response = gw.result(gw.post("/v1/chat/completions", hello, key))
    assert response.code == 500 and response.json()["error"]["code"] == "internal_error"
    assert "x-gateway-attempts" not in response.headers
    assert any("provider gone not found" in formatEvent(e) for e in events)
    again = gw.result(gw.post("/v1/chat/completions", hello, key))
    assert again.code == 429  # the first one was counted


def test_a_mock_provider_entity_answers_locally_as_the_legacy_mock():
    gw = MemoryGateway()
    gw._put("providers", {"name": "local", "type": "mock", "config": {}})
    (provider_id,) = gw.store.snapshot.providers_by_id
    gw._put("models", {"name": "echo-next", "provider_id": provider_id, "model": "echo"})
    key = gw.add_key(["echo-next"])
    hello = {"model": "echo-next", "messages": [{"role": "user", "content": "hi"}]}
    response = gw.result(gw.post("/v1/chat/completions", hello, key))
    assert response.code == 200
    answer = response.json()
    assert answer["model"] == "echo" and answer["choices"][0]["message"]["content"] == "hi"


# -- routing on the later wire (CONTRACT 5.1 on CONTRACT-NEXT 1.3) -----------------------------


def test_a_later_wire_model_routes_over_targets_naming_other_providers():
    snap = Snapshot.build(
        [
            entry(
                "/providers/a", {"name": "a", "type": "openai", "config": {"api_key": "sk-aaaa"}}
            ),
            entry(
                "/providers/b", {"name": "b", "type": "deepseek", "config": {"api_key": "sk-bbbb"}}
            ),
            entry(
                "/models/m",
                {
                    "name": "m",
                    "provider_id": "a",
                    "model": "gpt-x",
                    "targets": [
                        {"provider_id": "b", "model": "deepseek-chat", "priority": 1},
                        {"provider_id": "gone", "model": "y"},
                    ],
                    "routing": {"retries": 1},
                    "fallbacks": ["other"],
                },
            ),
        ]
    )
    model = snap.models_by_name["m"]
    first, second, orphan = model.deployments
    assert (first.provider, second.provider, orphan.provider) == (
        "provider:openai",
        "provider:deepseek",
        "",
    )
    assert second.endpoint_urls[CHAT] == "https://api.deepseek.com/v1/chat/completions"
    assert (second.api_key, second.priority, second.index) == ("sk-bbbb", 1, 1)
    assert model.fallbacks == ("other",) and model.routing.retries == 1
    assert "sk-bbbb" not in snap.redact("sk-bbbb")


@pytest_twisted.ensureDeferred
async def test_a_target_s_provider_must_exist_and_cannot_go_while_named(gw):
    doc = {"name": "t", "type": "mock", "config": {}}
    assert (await admin(gw, "PUT", P + "/t-own", doc))[0] == 201
    model = {
        "name": "routed-next",
        "provider_id": "t-own",
        "model": "echo",
        "targets": [{"provider_id": "t-other", "model": "echo"}],
    }
    status, body = await admin(gw, "PUT", M + "/routed-next", model)
    assert (status, body) == (400, {"error_msg": "Provider with ID t-other not found"})
    assert (await admin(gw, "PUT", P + "/t-other", doc))[0] == 201
    status, body = await admin(gw, "PUT", M + "/routed-next", model)
    assert (status, body) == (201, {"key": "/models/routed-next", "value": model})
    status, body = await admin(gw, "DELETE", P + "/t-other")
    assert (status, body) == (400, {"error_msg": "provider is still referenced by models"})
