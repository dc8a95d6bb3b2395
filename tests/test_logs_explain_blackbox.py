"""CONTRACT 5.4, black-box: the access-log line of a request that did not
succeed says why, against the real gateway process.

One request per rejection kind, each found by the ``x-request-id`` it was
answered with: its line carries ``error=<the 4.1 code>`` (``missing_api_key`` /
``invalid_api_key`` for the two 401s), ``limit=`` on each 429 of the limiter,
``model=`` the name the client sent (a configured key in it ``[redacted]``),
and for a failed upstream ``upstream=<host:port>`` and ``cause=`` what
happened there (``connection refused``, ``timeout after N ms``, ``status
503``). With routing, each attempt given up gets a warning line and the
access line names the last one. Control characters sent in a model name, a
key id or a path come out escaped, on one line. What the fields are made of
is pinned in memory in tests/test_logs_explain_unit.py.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.streamcheck import no_unhandled_errors, wait_finalized
from tests.support.access_log import FIELDS, LOGFMT
from tests.support.gateway import free_port, treq_stream

CHAT = "/v1/chat/completions"
MAX_BODY = 4096

_ACCESS = re.compile(r"^\S+ \[[^\]]+\] access (.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    from tests.conftest import start_gateway

    extra: dict[str, Any] = {
        "hooks": ["tests.support.finalize_counter.FinalizeCounter"],
        "server": {"proxy": {"max_body_bytes": MAX_BODY}},
    }
    gateway = start_gateway(tmp_path_factory.mktemp("logs-explain"), extra=extra)
    yield gateway
    gateway.process.stop()
    no_unhandled_errors(gateway.process)


# -- helpers ---------------------------------------------------------------------------------


def unquote(raw: str) -> str:
    """A logfmt value as written: bare, or quoted with ``\\"`` and ``\\\\`` escaped."""
    if raw.startswith('"'):
        return re.sub(r"\\([\\\"])", r"\1", raw[1:-1])
    return raw


async def line_of(gw, rid: str) -> dict[str, str]:
    """The one access-log line of request ``rid``, parsed (keys in line order),
    once the request is finalized (the access log runs before the counter)."""
    await wait_finalized(gw.process, rid)
    found = []
    for text in _ACCESS.findall(gw.process.stdout):
        fields = {k: unquote(v) for k, v in LOGFMT.findall(text)}
        if fields.get("rid") == rid:
            found.append(fields)
    assert len(found) == 1, found
    return found[0]


def raw_line_of(gw, rid: str) -> str:
    """The access-log line of ``rid`` as the log holds it."""
    (line,) = [line for line in gw.process.stdout.splitlines() if f" access rid={rid} " in line]
    return line


def why(line: dict[str, str]) -> dict[str, str]:
    """The fields after ``target=``: what CONTRACT 5.4 adds to a failure's line."""
    keys = list(line)
    assert keys[: len(FIELDS)] == FIELDS, keys
    return {k: line[k] for k in keys[len(FIELDS) :]}


def chat_doc(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def host_of(upstream) -> str:
    return urlsplit(upstream.base_url).netloc


async def mock_model(gw, **extra: Any) -> str:
    name = f"lx-mock-{uuid.uuid4().hex[:8]}"
    await gw.add_model(name, "mock/echo", {}, **extra)
    return name


async def upstream_model(gw, api_base: str, **extra: Any) -> str:
    name = f"lx-up-{uuid.uuid4().hex[:8]}"
    await gw.add_model(name, "openai/gpt-lx", {"api_key": "unused", "api_base": api_base}, **extra)
    return name


def closed_base() -> str:
    """An api_base on a local port nobody listens on: connection refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


async def steady_window(margin: float = 2.0) -> None:
    """Wait out the end of the minute, so a test's requests share one rpm/tpm window."""
    left = 60 - time.time() % 60
    if left < margin:
        await task.deferLater(reactor, left + 0.05, lambda: None)


# -- the gateway's own refusals (4.1's order of checks) ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_missing_key_logs_error_missing_api_key(gw):
    model = await mock_model(gw)
    status, headers, _ = await gw.chat(None, chat_doc(model))
    assert status == 401
    line = await line_of(gw, headers["x-request-id"])
    assert (line["status"], line["end"], line["key_id"]) == ("401", "rejected", "-")
    assert why(line) == {"error": "missing_api_key"}


@pytest_twisted.ensureDeferred
async def test_wrong_key_logs_error_invalid_api_key(gw):
    from tests.conftest import secret

    model = await mock_model(gw)
    status, headers, _ = await gw.chat(secret(), chat_doc(model))
    assert status == 401
    line = await line_of(gw, headers["x-request-id"])
    assert (line["status"], line["key_id"]) == ("401", "-")
    assert why(line) == {"error": "invalid_api_key"}


@pytest_twisted.ensureDeferred
async def test_bad_json_logs_error_invalid_json(gw):
    model = await mock_model(gw)
    key, key_id = await gw.add_key_with_id([model])
    status, headers, _ = await gw.chat(key, None, body=b'{"model": "x", "messages": [')
    assert status == 400
    line = await line_of(gw, headers["x-request-id"])
    assert (line["status"], line["key_id"], line["model"]) == ("400", key_id, "-")
    assert why(line) == {"error": "invalid_json"}


@pytest_twisted.ensureDeferred
async def test_unknown_model_logs_the_name_the_client_sent(gw):
    model = await mock_model(gw)
    key, _ = await gw.add_key_with_id([model])
    typo = f"gtp-4o-{uuid.uuid4().hex[:6]}"
    status, headers, _ = await gw.chat(key, chat_doc(typo))
    assert status == 400
    line = await line_of(gw, headers["x-request-id"])
    assert line["model"] == typo
    assert why(line) == {"error": "model_not_found"}


@pytest_twisted.ensureDeferred
async def test_unknown_model_name_is_cut_to_128_characters(gw):
    model = await mock_model(gw)
    key, _ = await gw.add_key_with_id([model])
    long_name = "m" * 1000
    status, headers, _ = await gw.chat(key, chat_doc(long_name))
    assert status == 400
    line = await line_of(gw, headers["x-request-id"])
    assert line["model"] == "m" * 128


@pytest_twisted.ensureDeferred
async def test_model_not_allowed_for_the_key_logs_model_access_forbidden(gw):
    model, other = await mock_model(gw), await mock_model(gw)
    key, _ = await gw.add_key_with_id([model])
    status, headers, _ = await gw.chat(key, chat_doc(other))
    assert status == 403
    line = await line_of(gw, headers["x-request-id"])
    assert line["model"] == other
    assert why(line) == {"error": "model_access_forbidden"}


@pytest_twisted.ensureDeferred
async def test_body_too_big_logs_request_too_large(gw):
    model = await mock_model(gw)
    key, _ = await gw.add_key_with_id([model])
    doc = {"model": model, "messages": [{"role": "user", "content": "x" * (MAX_BODY * 2)}]}
    status, headers, _ = await gw.chat(key, doc)
    assert status == 413
    line = await line_of(gw, headers["x-request-id"])
    assert why(line) == {"error": "request_too_large"}


@pytest_twisted.ensureDeferred
async def test_a_model_equal_to_an_api_key_is_logged_redacted(gw):
    model = await mock_model(gw)
    key, _ = await gw.add_key_with_id([model])
    other_key, _ = await gw.add_key_with_id([model])
    for pasted in (key, other_key):
        status, headers, _ = await gw.chat(key, chat_doc(pasted))
        assert status == 400
        line = await line_of(gw, headers["x-request-id"])
        assert line["model"] == "[redacted]"
        assert "model=[redacted] " in raw_line_of(gw, headers["x-request-id"])
    assert key not in gw.process.output and other_key not in gw.process.output


# -- each limit kind's 429 ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rpm", "rpd", "tpm", "tpd"])
@pytest_twisted.ensureDeferred
async def test_each_window_429_logs_its_limit(gw, kind):
    await steady_window()
    model = await mock_model(gw)
    key, _ = await gw.add_key_with_id([model], {kind: 1})
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 200  # tpm/tpd: its 13 tokens are spent at its finalize
    assert "error" not in why(await line_of(gw, headers["x-request-id"]))
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 429
    line = await line_of(gw, headers["x-request-id"])
    assert line["model"] == model
    assert why(line) == {"error": "rate_limit_exceeded", "limit": kind}


@pytest_twisted.ensureDeferred
async def test_a_model_limit_429_logs_its_limit_too(gw):
    await steady_window()
    model = await mock_model(gw, rate_limit={"rpm": 1})
    key, _ = await gw.add_key_with_id([model])
    assert (await gw.chat(key, chat_doc(model)))[0] == 200
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 429
    assert why(await line_of(gw, headers["x-request-id"])) == {
        "error": "rate_limit_exceeded",
        "limit": "rpm",
    }


@pytest_twisted.ensureDeferred
async def test_concurrency_429_logs_limit_concurrency(gw, fresh_upstream):
    model = await upstream_model(gw, fresh_upstream.base_url)
    key, _ = await gw.add_key_with_id([model], {"concurrency": 1})
    fresh_upstream.set_delay(CHAT, 1.0)  # the first request holds the one slot meanwhile
    first = defer.ensureDeferred(gw.chat(key, chat_doc(model)))
    for _ in range(100):
        if fresh_upstream.requests:
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 429
    line = await line_of(gw, headers["x-request-id"])
    assert why(line) == {"error": "concurrency_limit_exceeded", "limit": "concurrency"}
    assert (await first)[0] == 200


# -- upstream failures: the host and what happened ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstream_down_names_its_host_and_connection_refused(gw):
    base = closed_base()
    model = await upstream_model(gw, base)
    key, _ = await gw.add_key_with_id([model])
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 502
    line = await line_of(gw, headers["x-request-id"])
    assert (line["end"], line["attempts"], line["target"]) == ("upstream_error", "1", f"{model}#0")
    assert why(line) == {
        "error": "provider_error",
        "upstream": urlsplit(base).netloc,
        "cause": "connection refused",
    }
    # the 5xx warning names the host too
    rid = headers["x-request-id"]
    (warning,) = [w for w in gw.process.stdout.splitlines() if f"request {rid} " in w]
    assert warning.endswith(f"(upstream {urlsplit(base).netloc}: connection refused)")


@pytest_twisted.ensureDeferred
async def test_upstream_timeout_logs_timeout_after_its_ms(gw, fresh_upstream):
    model = await upstream_model(gw, fresh_upstream.base_url, timeout=300)
    key, _ = await gw.add_key_with_id([model])
    fresh_upstream.set_delay(CHAT, 3.0)
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 504
    line = await line_of(gw, headers["x-request-id"])
    assert line["end"] == "timeout"
    assert why(line) == {
        "error": "request_timeout",
        "upstream": host_of(fresh_upstream),
        "cause": "timeout after 300 ms",
    }


@pytest_twisted.ensureDeferred
async def test_upstream_503_logs_status_503(gw, fresh_upstream):
    model = await upstream_model(gw, fresh_upstream.base_url)
    key, _ = await gw.add_key_with_id([model])
    fresh_upstream.set_json(CHAT, {"error": {"message": "overloaded"}}, status=503)
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 502
    line = await line_of(gw, headers["x-request-id"])
    assert why(line) == {
        "error": "provider_error",
        "upstream": host_of(fresh_upstream),
        "cause": "status 503",  # never the upstream's own text
    }
    assert "overloaded" not in raw_line_of(gw, headers["x-request-id"])


@pytest_twisted.ensureDeferred
async def test_a_stream_cut_after_its_first_chunk_logs_provider_error(gw, fresh_upstream):
    from tests.support.mock_upstream import chat_chunk, sse_event

    model = await upstream_model(gw, fresh_upstream.base_url)
    key, _ = await gw.add_key_with_id([model])
    fresh_upstream.set_sse(CHAT, [sse_event(chat_chunk("a", role="assistant"))], end="cut")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    result = await treq_stream(
        "POST", gw.proxy + CHAT, headers=headers, json_body=chat_doc(model, True)
    )
    assert result.status == 200 and "[DONE]" not in result.data
    line = await line_of(gw, result.headers["x-request-id"])
    assert line["end"] == "upstream_cut"
    assert why(line) == {
        "error": "provider_error",
        "upstream": host_of(fresh_upstream),
        "cause": "stream cut: upstream connection lost mid-stream",
    }


@pytest_twisted.ensureDeferred
async def test_a_request_that_succeeds_has_no_failure_fields(gw, fresh_upstream):
    model = await upstream_model(gw, fresh_upstream.base_url)
    key, _ = await gw.add_key_with_id([model])
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 200
    line = await line_of(gw, headers["x-request-id"])
    assert list(line) == FIELDS and line["model"] == model


# -- routing: several attempts -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_attempt_given_up_for_another_gets_a_warning_line(gw, fresh_upstream):
    base = closed_base()
    target = {"model": "openai/gpt-lx", "provider_config": {"api_key": "u", "api_base": ""}}
    target["provider_config"]["api_base"] = fresh_upstream.base_url
    model = await upstream_model(gw, base, targets=[{**target, "priority": 1}])
    key, _ = await gw.add_key_with_id([model])
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 200 and headers["x-gateway-attempts"] == "2"
    rid = headers["x-request-id"]
    line = await line_of(gw, rid)
    assert list(line) == FIELDS  # it succeeded, on its second attempt
    assert (line["attempts"], line["target"]) == ("2", f"{model}#1")
    (warning,) = [w for w in gw.process.stdout.splitlines() if f"request {rid} " in w]
    assert warning.endswith(
        f"request {rid} model {model}: attempt 1 on {model}#0 ({urlsplit(base).netloc}) "
        f"failed: connection refused; trying {model}#1"
    )


@pytest_twisted.ensureDeferred
async def test_when_every_attempt_fails_the_line_names_the_last(gw, fresh_upstream):
    base = closed_base()
    target = {"model": "openai/gpt-lx", "priority": 1}
    target["provider_config"] = {"api_key": "u", "api_base": fresh_upstream.base_url}
    model = await upstream_model(gw, base, targets=[target])
    key, _ = await gw.add_key_with_id([model])
    fresh_upstream.set_json(CHAT, {"error": {"message": "down"}}, status=503)
    status, headers, _ = await gw.chat(key, chat_doc(model))
    assert status == 502
    line = await line_of(gw, headers["x-request-id"])
    assert (line["attempts"], line["target"]) == ("2", f"{model}#1")
    assert why(line) == {
        "error": "provider_error",
        "upstream": host_of(fresh_upstream),
        "cause": "status 503",
    }
    rid = headers["x-request-id"]
    warnings = [w for w in gw.process.stdout.splitlines() if f"request {rid} " in w]
    assert len(warnings) == 2  # the attempt given up, then the 502 itself
    assert "attempt 1 on" in warnings[0] and "connection refused" in warnings[0]
    assert warnings[1].endswith(f"(upstream {host_of(fresh_upstream)}: status 503)")


# -- control characters ---------------------------------------------------------------------------

#: CR, LF, ESC, NUL and a forged field: none may break or colour the line
HOSTILE = "x\r\nrid=forged status=200\x1b[31m\x00y"


def assert_one_safe_line(gw, rid: str) -> str:
    line = raw_line_of(gw, rid)
    assert not any(c in line for c in "\r\x1b\x00"), repr(line)
    assert not any(line.startswith("rid=forged") for line in gw.process.stdout.splitlines())
    return line


@pytest_twisted.ensureDeferred
async def test_control_characters_in_a_model_name_are_escaped(gw):
    model = await mock_model(gw)
    key, _ = await gw.add_key_with_id([model])
    status, headers, _ = await gw.chat(key, chat_doc(HOSTILE))
    assert status == 400
    rid = headers["x-request-id"]
    line = await line_of(gw, rid)
    raw = assert_one_safe_line(gw, rid)
    assert 'model="x\\r\\nrid=forged status=200\\x1b[31m\\x00y"' in raw
    assert line["rid"] == rid and line["status"] == "400"  # the forged ones stay inside


@pytest_twisted.ensureDeferred
async def test_control_characters_in_a_key_id_are_escaped(gw):
    from tests.conftest import secret

    model = await mock_model(gw)
    key, key_id = secret(), f"id-{uuid.uuid4().hex[:6]}\r\n\x1b[31m\x00"
    path = "/aisix/admin/apikeys/" + quote(key_id, safe="")
    status, body = await gw.aadmin("PUT", path, {"key": key, "allowed_models": [model]})
    assert status in (200, 201), body
    status, headers, _ = await gw.chat(key, chat_doc(f"nope-{uuid.uuid4().hex[:6]}"))
    assert status == 400
    rid = headers["x-request-id"]
    line = await line_of(gw, rid)
    raw = assert_one_safe_line(gw, rid)
    assert f'key_id="{key_id[:9]}\\r\\n\\x1b[31m\\x00"' in raw
    assert line["error"] == "model_not_found"


@pytest_twisted.ensureDeferred
async def test_control_characters_in_a_path_never_reach_the_log_raw(gw):
    """Raw ESC, SOH and DEL in the request line: the HTTP layer refuses it
    before any route (no access line), or the 404's line escapes them."""
    model = await mock_model(gw)
    key, _ = await gw.add_key_with_id([model])
    raw_path = b"/v1/\x1b[31mred\x01\x7f"
    request = (
        b"GET " + raw_path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\nConnection: close\r\n\r\n"
    )

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=5) as s:
            s.sendall(request)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    from twisted.internet.threads import deferToThread

    answer = await deferToThread(send)
    status = int(answer.split(b" ", 2)[1])
    match = re.search(rb"x-request-id: (\S+)", answer, re.IGNORECASE)
    if match is None:  # refused by the HTTP layer before any route: no access line at all
        assert status == 400
        assert "\x1b[31mred" not in gw.process.stdout
        return
    rid = match.group(1).decode()
    line = await line_of(gw, rid)
    raw = assert_one_safe_line(gw, rid)
    assert status == 404
    assert 'path="/v1/\\x1b[31mred\\x01\\x7f"' in raw
    assert why(line) == {"error": "not_found"}
