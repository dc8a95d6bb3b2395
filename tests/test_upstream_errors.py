"""CONTRACT 4.1: upstream answers mapped to the gateway's errors (pure)."""

import json

from twisted_gw.providers.errors import map_upstream_status


def body(message, code=None):
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    ).encode()


def test_5xx_is_502_provider_error_with_upstream_message():
    e = map_upstream_status(503, body("overloaded"))
    assert (e.status, e.code, e.type) == (502, "provider_error", "server_error")
    assert e.message == "Provider error: upstream returned status 503: overloaded"


def test_4xx_is_relayed_with_upstream_code_and_message():
    e = map_upstream_status(400, body("bad temperature", "invalid_value"))
    assert (e.status, e.code, e.message, e.type) == (
        400,
        "invalid_value",
        "bad temperature",
        "invalid_request_error",
    )
    e = map_upstream_status(429, body("slow down", "rate_limit_exceeded"))
    assert (e.status, e.type) == (429, "rate_limit_error")


def test_4xx_without_code_is_provider_error():
    e = map_upstream_status(404, body("no such model"))
    assert (e.status, e.code, e.message) == (404, "provider_error", "no such model")
    e = map_upstream_status(422, b"not json")
    assert (e.status, e.code, e.message) == (422, "provider_error", "upstream returned status 422")


def test_401_403_hide_upstream_text_behind_the_credentials_message():
    for status in (401, 403):
        e = map_upstream_status(status, body("Incorrect API key provided: sk-secret-123"))
        assert (e.status, e.code) == (502, "provider_error")
        assert e.message == f"Provider error: upstream rejected the provider credentials ({status})"


def test_secrets_echoed_by_upstream_are_redacted():
    e = map_upstream_status(400, body("key sk-provider-xyz is bad"), secrets=["sk-provider-xyz"])
    assert "sk-provider-xyz" not in e.message and "[redacted]" in e.message
    e = map_upstream_status(500, body("boom sk-provider-xyz"), secrets=["sk-provider-xyz"])
    assert "sk-provider-xyz" not in e.message
