"""CONTRACT 5.4 in memory: what the failure fields of an access-log line are
made of, in both formats, and the warning lines of an upstream failure.

Pure functions on a RequestContext built here (the error codes, ``limit``,
the last attempt's ``upstream``/``cause``, the model the client sent, the
host of a deployment), then the in-memory gateway of twisted_gw.testing on
a Clock for what the exchange tells them (timeouts, retries, warnings). The
real process is tests/test_logs_explain_blackbox.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from tests.support.access_log import FIELDS, LOGFMT
from twisted_gw.config.entities import parse_model
from twisted_gw.config.snapshot import Snapshot, StoredEntry
from twisted_gw.errors import (
    invalid_api_key,
    invalid_json,
    missing_api_key,
    model_not_found,
    provider_error,
    request_timeout,
)
from twisted_gw.hooks.context import RequestContext, UpstreamFailure
from twisted_gw.hooks.rate_limit import REJECTED
from twisted_gw.observability.access_log import (
    access_fields,
    access_json,
    access_line,
    client_model,
    failure_fields,
)
from twisted_gw.providers.catalog import authority, upstream_host
from twisted_gw.testing import MemoryGateway

CLIENT_KEY = "sk-client-secret-1"
PROVIDER_KEY = "sk-provider-secret-1"


def snapshot() -> Snapshot:
    return Snapshot.build(
        [
            StoredEntry(
                "/models/m1",
                {
                    "name": "gpt",
                    "model": "openai/x",
                    "provider_config": {"api_key": PROVIDER_KEY},
                },
                1,
                1,
            ),
            StoredEntry("/apikeys/k1", {"key": CLIENT_KEY, "allowed_models": ["gpt"]}, 1, 1),
        ]
    )


def context(end: str, status: int, **fields: Any) -> RequestContext:
    snap = snapshot()
    ctx = RequestContext("rid-1", 100.0, "POST", "/v1/chat/completions", "/v1/chat/completions",
                         "127.0.0.1", snap)  # fmt: skip
    ctx.api_key = snap.keys_by_key[CLIENT_KEY]
    ctx.model_name = "gpt"
    ctx.end_reason, ctx.status, ctx.finished_at = end, status, 100.5
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def parsed(line: str) -> dict[str, str]:
    return dict(LOGFMT.findall(line))


def extra(line: str) -> dict[str, str]:
    """The fields after ``target``."""
    fields = LOGFMT.findall(line)
    assert [k for k, _ in fields[: len(FIELDS)]] == FIELDS
    return dict(fields[len(FIELDS) :])


# -- which lines carry failure fields ---------------------------------------------------------


@pytest.mark.parametrize("end", ["ok", "done", "empty", "client_gone"])
def test_a_request_that_succeeded_or_whose_client_left_has_no_failure_fields(end):
    ctx = context(end, 200, upstream_failure=UpstreamFailure(1, "gpt#0", "h:1", "x"))
    assert failure_fields(ctx) == []
    assert [k for k, _ in LOGFMT.findall(access_line(ctx, 101.0))] == FIELDS
    assert list(access_fields(ctx, 101.0)) == ["time", *FIELDS]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (missing_api_key(), "missing_api_key"),
        (invalid_api_key(), "invalid_api_key"),
        (invalid_json("expected value"), "invalid_json"),
        (model_not_found("nope"), "model_not_found"),
    ],
)
def test_a_refusal_logs_the_code_of_its_answer(error, code):
    ctx = context("rejected", error.status, error=error)
    assert extra(access_line(ctx, 101.0)) == {"error": code}
    assert access_fields(ctx, 101.0)["error"] == code


def test_the_two_401s_keep_a_null_code_on_the_wire():
    """CONTRACT 4.1: their body's ``code`` stays null; only the log names them."""
    for error in (missing_api_key(), invalid_api_key()):
        assert json.loads(error.body())["error"]["code"] is None


@pytest.mark.parametrize("kind", ["rpm", "rpd", "tpm", "tpd", "concurrency"])
def test_a_429_of_the_limiter_logs_its_limit(kind):
    from twisted_gw.errors import GatewayError

    code = "concurrency_limit_exceeded" if kind == "concurrency" else "rate_limit_exceeded"
    ctx = context("rejected", 429, error=GatewayError(429, "limited", code))
    ctx.state[REJECTED] = kind
    assert extra(access_line(ctx, 101.0)) == {"error": code, "limit": kind}


@pytest.mark.parametrize(
    ("end", "code"), [("upstream_cut", "provider_error"), ("timeout", "request_timeout")]
)
def test_a_stream_that_failed_after_its_first_chunk_logs_a_code_too(end, code):
    failure = UpstreamFailure(1, "gpt#0", "api.example:443", "stream cut: connection closed")
    ctx = context(end, 200, attempts=1, upstream_failure=failure)
    assert extra(access_line(ctx, 101.0)) == {
        "error": code,
        "upstream": "api.example:443",
        "cause": '"stream cut: connection closed"',
    }


def test_only_the_last_attempts_failure_is_on_the_line():
    failure = UpstreamFailure(1, "gpt#0", "a.example", "connection refused")
    error = provider_error("invalid JSON in upstream response")
    ctx = context("upstream_error", 502, attempts=2, error=error, upstream_failure=failure)
    assert extra(access_line(ctx, 101.0)) == {"error": "provider_error"}  # attempt 2 noted none
    ctx.upstream_failure = UpstreamFailure(2, "gpt#1", "b.example", "status 503")
    assert extra(access_line(ctx, 101.0)) == {
        "error": "provider_error",
        "upstream": "b.example",
        "cause": '"status 503"',
    }


def test_an_in_process_upstream_is_logged_as_a_dash():
    failure = UpstreamFailure(1, "gpt#0", None, "timeout after 10 ms")
    ctx = context("timeout", 504, attempts=1, error=request_timeout(), upstream_failure=failure)
    assert extra(access_line(ctx, 101.0))["upstream"] == "-"
    assert access_fields(ctx, 101.0)["upstream"] is None


def test_json_lines_carry_the_same_failure_fields():
    failure = UpstreamFailure(1, "gpt#0", "h.example:8443", "connection refused")
    error = provider_error("connection refused", "connect")
    ctx = context("upstream_error", 502, attempts=1, error=error, upstream_failure=failure)
    record = json.loads(access_json(ctx, 101.0))
    assert list(record) == ["time", *FIELDS, "error", "upstream", "cause"]
    assert (record["error"], record["upstream"], record["cause"]) == (
        "provider_error",
        "h.example:8443",
        "connection refused",
    )


# -- the model the client sent --------------------------------------------------------------------


def test_client_model_redacts_every_configured_key_then_cuts():
    snap = snapshot()
    assert client_model(snap, "gpt-typo") == "gpt-typo"
    assert client_model(snap, CLIENT_KEY) == "[redacted]"
    assert client_model(snap, PROVIDER_KEY) == "[redacted]"
    assert client_model(snap, f"a{CLIENT_KEY}b") == "a[redacted]b"
    assert client_model(snap, "x" * 500) == "x" * 128
    assert CLIENT_KEY[:4] not in client_model(snap, "x" * 125 + CLIENT_KEY)


def test_the_json_form_names_the_model_the_client_sent():
    ctx = context("rejected", 400, error=model_not_found("nope"), model_name="nope\r\n")
    assert access_fields(ctx, 101.0)["model"] == "nope\r\n"
    assert "\\r\\n" in access_json(ctx, 101.0)
    ctx.model_name = CLIENT_KEY
    assert access_fields(ctx, 101.0)["model"] == "[redacted]"


# -- control characters in the new fields ---------------------------------------------------------


def test_control_characters_in_a_cause_or_host_are_escaped():
    failure = UpstreamFailure(1, "gpt#0", "h\x1b[31m", "content type 'a\r\nb\x00'")
    ctx = context("upstream_error", 502, attempts=1, error=provider_error("x"))
    ctx.upstream_failure = failure
    line = access_line(ctx, 101.0)
    assert line.splitlines() == [line]
    assert "\x1b" not in line and "\x00" not in line
    assert 'upstream="h\\x1b[31m"' in line and "cause=\"content type 'a\\r\\nb\\x00'\"" in line
    json_text = access_json(ctx, 101.0)
    assert json_text.splitlines() == [json_text] and "\x1b" not in json_text


def test_a_key_in_a_cause_is_redacted():
    failure = UpstreamFailure(1, "gpt#0", "h", f"upstream said {PROVIDER_KEY}")
    ctx = context("upstream_error", 502, attempts=1, error=provider_error("x"))
    ctx.upstream_failure = failure
    assert PROVIDER_KEY not in access_line(ctx, 101.0)
    assert PROVIDER_KEY not in access_json(ctx, 101.0)


# -- the host of a deployment ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://api.openai.com/v1", "api.openai.com"),
        ("http://127.0.0.1:8080/v1?key=sk-in-query", "127.0.0.1:8080"),
        ("https://user:sk-pass@llm.example:8443/v1", "llm.example:8443"),
        ("http://[::1]:9000/v1", "[::1]:9000"),
        ("http://u:p/ss@host/", None),  # a password that reads as a port: say nothing
        ("not a url", None),
    ],
)
def test_authority_is_host_and_port_only(url, host):
    assert authority(url) == host


def test_upstream_host_of_a_deployment():
    def model(spec: str, config: dict) -> Any:
        return parse_model("m", {"name": "m", "model": spec, "provider_config": config})

    assert upstream_host(model("openai/x", {"api_key": "k"})) == "api.openai.com"
    based = model("openai/x", {"api_key": "k", "api_base": "http://10.0.0.5:11434/v1"})
    assert upstream_host(based) == "10.0.0.5:11434"
    assert upstream_host(model("anthropic/c", {"api_key": "k"})) == "api.anthropic.com"
    assert upstream_host(model("mock/echo", {})) is None


# -- what the exchange tells them (in memory, on a Clock) -----------------------------------------


def logged(action: Any) -> list[str]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        action()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(e) for e in events]


@pytest.fixture
def gw():
    gateway = MemoryGateway()
    gateway.add_model("u-slow", "openai/gpt", timeout=250)
    gateway.add_model(
        "u-routed",
        "openai/gpt",
        targets=[{"model": "openai/gpt", "provider_config": {"api_key": "t"}, "priority": 1}],
    )
    gateway.key = gateway.add_key(["u-slow", "u-routed"])
    return gateway


CHAT = "/v1/chat/completions"


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "a"}]}


def test_a_timeout_notes_its_host_and_its_ms(gw):
    def run() -> None:
        pending = gw.post(CHAT, chat("u-slow"), gw.key)
        gw.flush()
        gw.clock.advance(0.3)
        assert gw.result(pending).code == 504

    lines = logged(run)
    (ctx,) = gw.recorder.finalized
    assert ctx.upstream_failure == UpstreamFailure(
        1, "u-slow#0", "api.openai.com", "timeout after 250 ms"
    )
    assert extra(access_line(ctx, gw.clock.seconds())) == {
        "error": "request_timeout",
        "upstream": "api.openai.com",
        "cause": '"timeout after 250 ms"',
    }
    assert any(
        line.endswith(
            "504 Provider request timed out (upstream api.openai.com: timeout after 250 ms)"
        )
        for line in lines
    ), lines


def test_a_retried_attempt_gets_one_warning_and_the_success_none(gw):
    def run() -> None:
        pending = gw.post(CHAT, chat("u-routed"), gw.key)
        gw.flush()
        gw.provider.calls[-1].fail(provider_error("connection refused", "connect"))
        gw.flush()
        gw.provider.calls[-1].answer({"id": "x", "choices": []})
        gw.flush()
        assert gw.result(pending).code == 200

    lines = [line for line in logged(run) if "attempt" in line]
    rid = gw.recorder.finalized[0].request_id
    assert lines == [
        f"request {rid} model u-routed: attempt 1 on u-routed#0 (api.openai.com) failed:"
        + " connection refused; trying u-routed#1"
    ]
    (ctx,) = gw.recorder.finalized
    assert failure_fields(ctx) == []  # it succeeded: the line says nothing of attempt 1


# -- warnings elsewhere that quote text from outside ----------------------------------------------


def test_an_unknown_config_key_warning_is_one_escaped_line():
    from twisted_gw.config.file import _unknown

    text = _unknown("deployment.admin\r\n\x1b[31mforged", "forged", ["admin_key"])
    assert text.splitlines() == [text] and "\x1b" not in text
    assert "deployment.admin\\r\\n\\x1b[31mforged" in text


def test_a_responses_history_warning_escapes_the_store_error():
    from twisted.python.failure import Failure

    from twisted_gw.errors import GatewayError
    from twisted_gw.proxy.history import RedisResponseHistory

    def run() -> None:
        with pytest.raises(GatewayError):
            RedisResponseHistory._unavailable(Failure(ConnectionError("down\r\n\x1b[2Jforged")))

    (line,) = logged(run)
    assert line.splitlines() == [line] and "\x1b" not in line
    assert line.endswith("down\\r\\n\\x1b[2Jforged")
