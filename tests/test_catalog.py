"""The two tables (issue 12, "one table per concept"): provider families and
rate-limit kinds, and that everything that lists them reads them: the entity
schemas, the providers built at start-up, the limiter, the OpenAPI document
and the catalog the admin UI fetches."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from jsonschema import Draft202012Validator
from twisted.internet.testing import MemoryReactorClock

from twisted_gw.config import entities
from twisted_gw.config.entities import (
    MAX_RATE_LIMIT,
    MAX_TIMEOUT_MS,
    MODEL_SCHEMA,
    RateLimit,
    SchemaError,
    parse_apikey,
    parse_model,
    provider_config_conditions,
)
from twisted_gw.providers import catalog, types
from twisted_gw.providers.catalog import FAMILIES, NO_SETTINGS, REMOTE, ConfigField, ConfigShape
from twisted_gw.providers.http import UpstreamClient
from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS, IProvider
from twisted_gw.providers.registry import build_providers
from twisted_gw.ratelimit import kinds
from twisted_gw.ratelimit.limits import plan_for

#: CONTRACT 2, "Upstreams"
CONTRACT_BASES = {
    "openai": "https://api.openai.com/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "anthropic": "https://api.anthropic.com/v1",
    "mock": None,
}


def model(provider: str, provider_config: dict | None = None, **extra):
    config = {"api_key": "sk-x"} if provider_config is None else provider_config
    doc = {"name": "n", "model": f"{provider}/up/stream", "provider_config": config, **extra}
    return parse_model("id", doc)


@pytest.fixture(scope="module")
def providers():
    return build_providers(UpstreamClient(MemoryReactorClock()))


# -- provider families ------------------------------------------------------------------


def test_the_families_are_the_contract_s_in_its_order():
    assert catalog.NAMES == ("openai", "deepseek", "gemini", "anthropic", "mock")
    assert entities.FAMILY_NAMES == catalog.NAMES
    assert {f.name: f.default_base for f in FAMILIES} == CONTRACT_BASES


def test_each_family_builds_the_provider_its_row_describes(providers):
    assert [n for n in providers if not n.startswith(types.PREFIX)] == list(catalog.NAMES)
    typed = {types.registry_key(t) for t in types.TYPES}
    assert {n for n in providers if n.startswith(types.PREFIX)} == typed - set(catalog.NAMES)
    for family in FAMILIES:
        provider = providers[family.name]
        assert IProvider.providedBy(provider)
        assert provider.name == family.name
        assert provider.endpoints == family.endpoints


def test_embeddings_are_served_by_openai_gemini_and_mock_only(providers):
    serving = {name for name, p in providers.items() if EMBEDDINGS in p.endpoints}
    assert {n for n in serving if not n.startswith(types.PREFIX)} == {"openai", "gemini", "mock"}
    typed = {types.PREFIX + t.name for t in types.TYPES if t.embeddings and t.dialect != "mock"}
    assert {n for n in serving if n.startswith(types.PREFIX)} == typed
    assert all(CHAT in p.endpoints for p in providers.values())


def test_upstream_urls_start_at_the_catalog_s_default_base(providers):
    for name in ("openai", "deepseek", "gemini"):
        url = providers[name].url(model(name), CHAT)
        assert url == CONTRACT_BASES[name] + "/chat/completions"
    assert providers["anthropic"].url(model("anthropic")) == CONTRACT_BASES["anthropic"] + (
        "/messages"
    )
    with_base = model("openai", {"api_key": "k", "api_base": "http://h/v1/"})
    assert providers["openai"].url(with_base, EMBEDDINGS) == "http://h/v1/embeddings"


def test_an_openai_compatible_provider_of_an_unknown_name_goes_where_openai_goes():
    assert catalog.default_base("azure") == CONTRACT_BASES["openai"]
    assert catalog.default_base("mock") == CONTRACT_BASES["openai"]  # no upstream of its own


def test_a_factory_that_builds_the_wrong_provider_is_refused_at_start_up(monkeypatch):
    wrong = replace(catalog.BY_NAME["anthropic"], endpoints=frozenset({CHAT, EMBEDDINGS}))
    monkeypatch.setattr("twisted_gw.providers.registry.FAMILIES", (wrong,))
    with pytest.raises(TypeError, match="anthropic"):
        build_providers(UpstreamClient(MemoryReactorClock()))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_each_family_takes_exactly_its_provider_config_shape(family):
    required = [f.name for f in family.config.fields if f.required]
    full = {f.name: "v" for f in family.config.fields}
    assert model(family.name, full).provider == family.name
    assert model(family.name, {n: "v" for n in required}).upstream_model == "up/stream"
    with pytest.raises(SchemaError, match="Additional properties are not allowed"):
        model(family.name, {**full, "other": "v"})
    for name in required:
        with pytest.raises(SchemaError, match=f'"{name}" is a required property'):
            model(family.name, {k: v for k, v in full.items() if k != name})


def test_the_shapes_are_the_contract_s():
    assert REMOTE.schema() == {
        "type": "object",
        "required": ["api_key"],
        "additionalProperties": False,
        "properties": {"api_key": {"type": "string"}, "api_base": {"type": "string"}},
    }
    assert NO_SETTINGS.schema() == {"type": "object", "additionalProperties": False}
    assert [(s, [f.name for f in fs]) for s, fs in catalog.shapes()] == [
        (REMOTE, ["openai", "deepseek", "gemini", "anthropic"]),
        (NO_SETTINGS, ["mock"]),
    ]


def test_the_model_schema_picks_the_shape_as_it_always_has():
    """Pinned, key order included: the order of the keywords decides the order of
    the Admin API's error lines, whose texts must not change."""
    expected = {
        "if": {
            "required": ["model"],
            "properties": {"model": {"type": "string", "pattern": "^mock/"}},
        },
        "then": {
            "properties": {"provider_config": {"type": "object", "additionalProperties": False}}
        },
        "else": {
            "properties": {
                "provider_config": {
                    "type": "object",
                    "required": ["api_key"],
                    "additionalProperties": False,
                    "properties": {"api_key": {"type": "string"}, "api_base": {"type": "string"}},
                }
            }
        },
    }
    conditions = {k: MODEL_SCHEMA[k] for k in ("if", "then", "else")}
    assert json.dumps(conditions) == json.dumps(expected)
    assert MODEL_SCHEMA["properties"]["model"]["pattern"] == (
        "^(openai|deepseek|gemini|anthropic|mock)/.+$"
    )
    assert list(MODEL_SCHEMA) == [
        "type", "required", "additionalProperties", "properties", "if", "then", "else"
    ]  # fmt: skip


def test_an_unknown_provider_is_told_about_model_and_about_api_key():
    with pytest.raises(SchemaError) as info:
        parse_model("id", {"name": "n", "model": "azure/x", "provider_config": {}})
    assert str(info.value).splitlines() == [
        (
            'JSON schema validation error: property "/model" validation failed: '
            '"azure/x" does not match "^(openai|deepseek|gemini|anthropic|mock)/.+$"'
        ),
        'property "/provider_config" validation failed: "api_key" is a required property',
    ]


def test_a_family_with_a_third_shape_gets_its_own_branch(monkeypatch):
    """What a new row with new settings gets without touching the schema code."""
    azure = ConfigShape(
        "AzureProviderConfig",
        "Settings of {families}.",
        (ConfigField("api_key", True, "k"), ConfigField("deployment", True, "d")),
    )
    row = replace(catalog.BY_NAME["openai"], name="azure", config=azure)
    monkeypatch.setattr(catalog, "FAMILIES", (*FAMILIES, row))
    schema = {
        "type": "object",
        "properties": {"model": {"type": "string"}},
        **provider_config_conditions(ConfigShape.schema),
    }
    valid = Draft202012Validator(schema).is_valid
    assert valid({"model": "azure/x", "provider_config": {"api_key": "k", "deployment": "d"}})
    assert not valid({"model": "azure/x", "provider_config": {"api_key": "k"}})
    assert valid({"model": "mock/x", "provider_config": {}})
    assert valid({"model": "openai/x", "provider_config": {"api_key": "k"}})
    assert not valid({"model": "openai/x", "provider_config": {"api_key": "k", "deployment": "d"}})


def test_each_row_describes_itself_as_json_without_its_factory():
    for family in FAMILIES:
        described = json.loads(json.dumps(family.describe()))
        assert described["name"] == family.name
        assert described["default_base"] == family.default_base
        assert set(described["endpoints"]) == family.endpoints
        assert list(described["provider_config"]) == [f.name for f in family.config.fields]
        assert "factory" not in described


# -- rate-limit kinds ------------------------------------------------------------------


def test_the_kinds_are_the_contract_s_in_check_order():
    assert kinds.NAMES == ("rpm", "rpd", "tpm", "tpd", "concurrency")
    assert entities.RATE_LIMIT_FIELDS == kinds.NAMES
    assert {k.name: (k.counts, k.window) for k in kinds.KINDS} == {
        "rpm": ("requests", 60),
        "rpd": ("requests", 86400),
        "tpm": ("tokens", 60),
        "tpd": ("tokens", 86400),
        "concurrency": ("concurrency", None),
    }


def test_a_kind_has_a_window_exactly_when_it_counts_in_one():
    with pytest.raises(ValueError, match="window"):
        kinds.LimitKind("rph", "requests", None, "x", "y")
    with pytest.raises(ValueError, match="window"):
        kinds.LimitKind("gate", "concurrency", 60, "x", "y")


def test_the_rate_limit_entity_has_one_field_per_kind():
    limit = RateLimit(rpm=1, concurrency=2)
    assert [getattr(limit, k) for k in kinds.NAMES] == [1, None, None, None, 2]
    assert repr(limit) == "RateLimit(rpm=1, rpd=None, tpm=None, tpd=None, concurrency=2)"
    assert RateLimit(rpm=1, concurrency=2) == limit
    with pytest.raises(AttributeError):
        limit.rpm = 3  # type: ignore[misc]


@pytest.mark.parametrize("schema", [entities.MODEL_SCHEMA, entities.APIKEY_SCHEMA])
def test_every_kind_is_a_bounded_integer_in_both_entity_schemas(schema):
    properties = schema["properties"]["rate_limit"]["properties"]
    assert list(properties) == list(kinds.NAMES)
    for value in properties.values():
        assert value == {"type": "integer", "minimum": 0, "maximum": MAX_RATE_LIMIT}
    assert MAX_RATE_LIMIT == 10**12 and MAX_TIMEOUT_MS == 3_600_000


def test_the_limiter_sizes_its_windows_by_the_table():
    every = {k: 5 for k in kinds.NAMES}
    key = parse_apikey("k1", {"key": "sk", "allowed_models": [], "rate_limit": every})
    plan = plan_for(key, None)
    assert [(w.kind, w.size, w.is_tokens) for w in plan.windows] == [
        (k.name, k.window, k.counts == "tokens") for k in kinds.WINDOWED
    ]
    assert [w.key(125.0) for w in plan.windows][:1] == ["apikey:k1:rpm:120"]
    assert [g.key for g in plan.concurrency] == ["apikey:k1:concurrency"]


# -- what the admin UI fetches ---------------------------------------------------------


def test_the_ui_catalog_is_the_two_tables_and_the_bounds():
    from twisted_gw.admin.openapi import catalog_document

    served = json.loads(json.dumps(catalog_document()))
    assert [p["name"] for p in served["providers"]] == list(catalog.NAMES)
    assert served["providers"] == [f.describe() for f in FAMILIES]
    assert [k["name"] for k in served["rate_limits"]] == list(kinds.NAMES)
    assert served["rate_limits"] == [k.describe() for k in kinds.KINDS]
    assert served["bounds"] == {"timeout_ms": MAX_TIMEOUT_MS, "rate_limit": MAX_RATE_LIMIT}
    mock = served["providers"][catalog.NAMES.index("mock")]
    assert (mock["default_base"], mock["provider_config"]) == (None, {})
    openai = served["providers"][0]
    assert openai["provider_config"]["api_key"]["required"] is True
    assert openai["provider_config"]["api_base"]["required"] is False
