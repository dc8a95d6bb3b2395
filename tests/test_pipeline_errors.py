"""CONTRACT 4.1 and 4.2 in memory (twisted_gw.testing): the error bodies of
the proxy's checks and of upstream failures, and the mock provider's answers,
through the real ProxyApp and Exchange with an upstream the test answers by
hand.

An upstream's error status is played with ``PendingCall.refuse``, which
fails the call with what the HTTP providers make of that status and body
(the mapping is unit-tested in tests/test_upstream_errors.py). The wire of
each row stays black-box in tests/test_proxy.py.
"""

from __future__ import annotations

import base64
import json

import pytest
from twisted.logger import capturedLogs, formatEvent

from tests.support.upstream_errors import expected_error_type, upstream_error_table
from twisted_gw.testing import MemoryGateway

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
PROVIDER_KEY = "sk-provider-in-memory-0123456789"


@pytest.fixture
def gw() -> MemoryGateway:
    gateway = MemoryGateway()
    pc = {"api_key": PROVIDER_KEY}
    gateway.add_model("gpt", "openai/org/gpt-x", provider_config=pc)
    gateway.add_model("claude", "anthropic/claude-x", provider_config=pc)
    gateway.add_model("demo", "mock/demo-1")
    gateway.key = gateway.add_key(["gpt", "claude", "demo"])
    return gateway


def error_of(response) -> dict:
    doc = response.json()
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["param"] is None
    assert response.headers["content-type"] == "application/json"
    return doc["error"]


def post(gw: MemoryGateway, doc, path: str = CHAT, key: str | None = None):
    """A request answered without the scripted upstream; its Response."""
    return gw.result(gw.post(path, doc, key or gw.key))


# -- body parsing (CONTRACT 4.1) ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"{not json", "Failed to parse JSON: "),
        (b"[]", "Failed to parse JSON: "),
        (b'{"model": "demo"}', "missing field `messages`"),
        (b'{"messages": []}', "missing field `model`"),
        (b'{"model": 3, "messages": []}', "`model`"),
        (b'{"model": "demo", "messages": "hi"}', "`messages`"),
    ],
)
def test_bad_body_is_400_invalid_json(gw, raw, fragment):
    response = post(gw, raw)
    error = error_of(response)
    assert response.code == 400 and error["code"] == "invalid_json"
    assert error["message"].startswith("Failed to parse JSON: ") and fragment in error["message"]
    assert gw.ends == ["rejected"]


def test_embeddings_need_input(gw):
    response = post(gw, {"model": "demo"}, path=EMB)
    assert response.code == 400 and "missing field `input`" in error_of(response)["message"]


DEEP = b'{"model": "gpt", "messages": ' + b"[" * 1000 + b"]" * 1000 + b"}"
SURROGATE = b'{"model": "%s", "messages": [{"role": "user", "content": "\\ud800"}]%s}'
HUGE_FLOAT = b'{"model": "gpt", "temperature": 1e400, "messages": []}'


@pytest.mark.parametrize(
    "raw, problem",
    [
        (DEEP, "recursion limit exceeded"),
        (SURROGATE % (b"demo", b""), "surrogate"),
        (SURROGATE % (b"gpt", b""), "surrogate"),
        (SURROGATE % (b"gpt", b', "stream": true'), "surrogate"),
        (SURROGATE % (b"claude", b', "stream": true'), "surrogate"),
        (HUGE_FLOAT, "number out of range"),
    ],
)
def test_proxy_body_that_cannot_be_sent_on_is_400_and_nothing_goes_upstream(gw, raw, problem):
    response = post(gw, raw)
    error = error_of(response)
    assert response.code == 400 and error["code"] == "invalid_json"
    assert error["message"].startswith("Failed to parse JSON: ")
    assert problem in error["message"]
    assert gw.provider.calls == [] and gw.providers["anthropic"].calls == []
    assert gw.ends == ["rejected"]


# -- the mock provider ------------------------------------------------------------------------


def test_mock_chat_echoes_the_last_user_message(gw):
    request = {
        "model": "demo",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "echo me"},
        ],
    }
    response = post(gw, request)
    doc = response.json()
    assert response.code == 200 and doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "echo me"}
    # the gateway's estimate (twisted_gw.tokens): the messages' JSON is 106
    # characters, ceil(106 / 4) + 4 per message = 27 + 12; "echo me" is 7: 2
    assert doc["usage"] == {"prompt_tokens": 39, "completion_tokens": 2, "total_tokens": 41}
    again = post(gw, request).json()
    assert again["id"] == doc["id"]  # deterministic
    assert gw.ends == ["ok", "ok"]


def test_mock_embeddings_are_16_dimension_and_deterministic(gw):
    response = post(gw, {"model": "demo", "input": ["a", "b"]}, path=EMB)
    doc = response.json()
    assert response.code == 200 and doc["model"] == "demo"
    vectors = [item["embedding"] for item in doc["data"]]
    assert [len(v) for v in vectors] == [16, 16] and vectors[0] != vectors[1]
    again = post(gw, {"model": "demo", "input": "a"}, path=EMB).json()
    assert again["data"][0]["embedding"] == vectors[0]
    b64 = post(gw, {"model": "demo", "input": "a", "encoding_format": "base64"}, path=EMB).json()
    assert len(base64.b64decode(b64["data"][0]["embedding"])) == 16 * 4


def test_mock_embeddings_usage_counts_the_text_of_each_input(gw):
    # one token per 4 characters, rounded up, at least 1 an input: 1 + 1, then 3 + 1 + 1
    doc = post(gw, {"model": "demo", "input": ["a", "b"]}, path=EMB).json()
    assert doc["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    doc = post(gw, {"model": "demo", "input": ["twelve chars", "", "abcd"]}, path=EMB).json()
    assert doc["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


def test_mock_chat_usage_grows_with_what_was_sent_and_answered(gw):
    short = post(gw, {"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
    long = post(gw, {"model": "demo", "messages": [{"role": "user", "content": "hi" * 40}]})
    short_usage, long_usage = short.json()["usage"], long.json()["usage"]
    assert short_usage == {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    # 78 more characters of prompt (+20 tokens: 110 / 4 rounds up to 28), 80 echoed
    assert long_usage == {"prompt_tokens": 32, "completion_tokens": 20, "total_tokens": 52}


# -- upstream errors (the 4.1 table) ------------------------------------------------------------


@upstream_error_table()
def test_upstream_status_mapping(
    gw, status, answer, expected_status, expected_code, expected_message
):
    pending = gw.post(CHAT, {"model": "gpt", **HELLO}, gw.key)
    gw.flush()
    gw.provider.calls[-1].refuse(status, b"<html>down</html>" if answer is None else answer)
    response = gw.result(pending)
    error = error_of(response)
    assert (response.code, error["code"], error["message"]) == (
        expected_status,
        expected_code,
        expected_message,
    )
    assert error["type"] == expected_error_type(expected_status)
    assert gw.ends == ["upstream_error"]


# -- secrets an upstream echoes back -------------------------------------------------


@pytest.mark.parametrize("upstream_status", [400, 500])
def test_configured_keys_echoed_by_the_upstream_are_redacted(gw, upstream_status):
    other = gw.add_key([])  # any configured key, not only the caller's
    text = f"user {gw.key} and {other} are blocked; provider {PROVIDER_KEY}"
    with capturedLogs() as events:
        pending = gw.post(CHAT, {"model": "gpt", "user": gw.key, **HELLO}, gw.key)
        gw.flush()
        gw.provider.calls[-1].refuse(upstream_status, {"error": {"message": text}})
        response = gw.result(pending)
    assert response.code == (400 if upstream_status == 400 else 502)
    for value in (gw.key, other, PROVIDER_KEY):
        assert value.encode() not in response.body
    assert json.loads(response.body)["error"]["message"].count("[redacted]") == 3
    assert gw.ends == ["upstream_error"]
    log = "\n".join(formatEvent(event) for event in events)
    assert gw.key not in log
    if upstream_status >= 500:
        assert "[redacted]" in log  # the 5xx is logged for the operator, redacted
