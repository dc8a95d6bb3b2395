"""CONTRACT 2 and 3: entity schemas, the validation texts, re-serialization."""

import pytest

from twisted_gw.config.entities import SchemaError, parse_apikey, parse_model


def model_error(doc):
    with pytest.raises(SchemaError) as info:
        parse_model("id1", doc)
    return str(info.value)


def test_valid_model_is_reserialized_with_absent_optionals_omitted():
    model = parse_model(
        "m1",
        {
            "name": "my-gpt",
            "model": "openai/gpt-4.1-mini",
            "provider_config": {"api_key": "sk-x", "api_base": "https://h/v1/"},
            "timeout": 30000,
            "rate_limit": {"rpm": 100, "tpm": 10000, "concurrency": 10, "bogus": 1},
        },
    )
    assert model.provider == "openai"
    assert model.upstream_model == "gpt-4.1-mini"
    assert model.timeout_ms == 30000
    assert model.doc == {
        "name": "my-gpt",
        "model": "openai/gpt-4.1-mini",
        "provider_config": {"api_key": "sk-x", "api_base": "https://h/v1/"},
        "timeout": 30000,
        "rate_limit": {"rpm": 100, "tpm": 10000, "concurrency": 10},
    }
    assert "sk-x" not in repr(model)


def test_upstream_id_keeps_every_slash():
    model = parse_model(
        "m", {"name": "n", "model": "openai/org/sub/model", "provider_config": {"api_key": "k"}}
    )
    assert model.upstream_model == "org/sub/model"


def test_mock_provider_config_must_be_empty():
    assert (
        parse_model("m", {"name": "n", "model": "mock/x", "provider_config": {}}).provider == "mock"
    )
    assert model_error({"name": "n", "model": "mock/x", "provider_config": {"api_key": "k"}}) == (
        'JSON schema validation error: property "/provider_config" validation failed: '
        "Additional properties are not allowed ('api_key' was unexpected)"
    )


def test_remote_provider_needs_api_key():
    assert model_error({"name": "n", "model": "openai/x", "provider_config": {}}) == (
        'JSON schema validation error: property "/provider_config" validation failed: '
        '"api_key" is a required property'
    )


def test_missing_required_fields_are_each_reported_at_root():
    # CONTRACT-NEXT 1.5: a document without provider_config is judged by the
    # later wire's schema; with it, by CONTRACT 2's
    assert model_error({}).splitlines() == [
        'JSON schema validation error: property "/" validation failed: "name" is a required property',
        'property "/" validation failed: "provider_id" is a required property',
        'property "/" validation failed: "model" is a required property',
    ]
    assert model_error({"provider_config": {}}).splitlines()[:2] == [
        'JSON schema validation error: property "/" validation failed: "name" is a required property',
        'property "/" validation failed: "model" is a required property',
    ]


def test_type_and_extra_field_errors():
    text = model_error(
        {"name": 5, "model": "openai/x", "provider_config": {"api_key": "k"}, "extra": 1}
    )
    assert (
        "property \"/\" validation failed: Additional properties are not allowed ('extra' was unexpected)"
        in text
    )
    assert 'property "/name" validation failed: 5 is not of type "string"' in text


def test_unknown_provider_and_negative_timeout():
    assert 'property "/model" validation failed' in model_error(
        {"name": "n", "model": "bogus/x", "provider_config": {}}
    )
    text = model_error({"name": "n", "model": "mock/x", "provider_config": {}, "timeout": -1})
    assert 'property "/timeout" validation failed: -1 is less than the minimum of 0' in text


def test_apikey_schema():
    key = parse_apikey(
        "k1", {"key": "sk-1", "allowed_models": ["a", "b"], "rate_limit": {"rpd": 5}}
    )
    assert key.allowed_models == frozenset({"a", "b"})
    assert key.doc == {"key": "sk-1", "allowed_models": ["a", "b"], "rate_limit": {"rpd": 5}}
    assert "sk-1" not in repr(key)
    with pytest.raises(SchemaError, match='"allowed_models" is a required property'):
        parse_apikey("k", {"key": "sk"})
    with pytest.raises(
        SchemaError,
        match=r"property \"/allowed_models/1\" validation failed: 3 is not of type \"string\"",
    ):
        parse_apikey("k", {"key": "sk", "allowed_models": ["a", 3]})
