"""CONTRACT 4.6 and ``GET /metrics`` of section 3, black-box: the Prometheus
series move by the right amounts after real requests, and every finished
request writes exactly one access-log line with the right end reason, in
logfmt by default and as JSON when configured, never holding a key or the
prompt.

Model-labelled series are read for a model made by the test itself, so they
start from zero; the shared ``aisix_request_count_total`` and latency series
are compared before and after. What the pipeline tells these hooks without a
process (every limit kind's rejection, stream latencies and the timeouts'
lines, on a Clock) is pinned in memory in tests/test_pipeline_limits.py and
tests/test_pipeline_streams.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task

from tests.conftest import secret, start_gateway
from tests.streamcheck import (
    counted_gateway,
    finalize_records,
    wait_finalized,
    wait_new_finalized,
)
from tests.support.access_log import FIELDS, LOGFMT
from tests.support.gateway import treq_json, treq_stream
from tests.support.mock_upstream import chat_chunk, sse_event

CHAT = "/v1/chat/completions"
# the mock provider's usage for chat_doc's "hi" (twisted_gw.tokens): the message's JSON
# is 32 characters, ceil(32 / 4) + 4 = 12 prompt tokens; "hi" answered, 1
MOCK_USAGE = {"prompt": 12, "completion": 1, "total": 13}

_ACCESS = re.compile(r"^(\S+) \[[^\]]+\] access (.*)$", re.MULTILINE)
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "observability", upstream_timeout=2)


# -- helpers ---------------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gw) -> Samples:
    """Every sample of ``GET /metrics`` (admin listener, no auth)."""
    status, headers, body = await treq_json("GET", gw.admin + "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; an absent series reads 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def chat_route(status: int) -> dict[str, str]:
    return {"method": "POST", "endpoint": CHAT, "status_code": str(status)}


async def new_model(gw, upstream=None, **extra: Any) -> str:
    """A fresh model (mock provider, or the mock upstream); its name."""
    name = f"obs-{uuid.uuid4().hex[:8]}"
    if upstream is None:
        await gw.add_model(name, "mock/echo", {}, **extra)
    else:
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        await gw.add_model(name, "openai/gpt-obs", pc, **extra)
    return name


async def new_key(gw, allowed: list[str], rate_limit: dict | None = None) -> tuple[str, str]:
    """A client key: (key value, store id)."""
    return await gw.add_key_with_id(allowed, rate_limit)


def chat_doc(model: str, stream: bool = False, prompt: str = "hi") -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}


async def stream(gw, key: str, model: str, prompt: str = "hi", **kw: Any):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    doc = chat_doc(model, True, prompt)
    return await treq_stream("POST", gw.proxy + CHAT, headers=headers, json_body=doc, **kw)


def unquote(raw: str) -> str:
    if raw.startswith('"'):
        return raw[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
    return raw


def access_lines(process: Any) -> list[tuple[str, str]]:
    """(time prefix, what follows ``access ``) of every access-log line so far."""
    return _ACCESS.findall(process.stdout)


def logfmt_lines(process: Any, rid: str) -> list[dict[str, str]]:
    """The access-log lines of one request, parsed (keys in line order)."""
    found = []
    for stamp, text in access_lines(process):
        fields = {k: unquote(v) for k, v in LOGFMT.findall(text)}
        if fields.get("rid") == rid:
            assert _TIME.match(stamp), stamp
            found.append(fields)
    return found


# -- /metrics ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_metrics_is_prometheus_text_on_the_admin_listener_without_auth(gw):
    status, headers, body = await treq_json("GET", gw.admin + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert {
        "aisix_request_count": "counter",
        "aisix_token_count": "counter",
        "aisix_request_latency_milliseconds": "histogram",
        "aisix_llm_latency_milliseconds": "histogram",
        "aisix_llm_first_token_latency_milliseconds": "histogram",
        "twisted_gw_rate_limit_rejections": "counter",
        "twisted_gw_stream_ends": "counter",
        "twisted_gw_ratelimit_store_errors": "counter",
    }.items() <= families.items()
    # a wrong admin key does not matter either: /metrics has no auth
    wrong = {"Authorization": "Bearer not-the-admin-key"}
    assert (await treq_json("GET", gw.admin + "/metrics", headers=wrong))[0] == 200


@pytest_twisted.ensureDeferred
async def test_non_stream_request_moves_count_tokens_and_latencies(gw):
    model = await new_model(gw)
    key, _ = await new_key(gw, [model])
    before = await scrape(gw)
    status, _, _ = await gw.chat(key, chat_doc(model))
    assert status == 200
    after = await scrape(gw)
    assert delta(before, after, "aisix_request_count_total", **chat_route(200)) == 1
    for kind, n in MOCK_USAGE.items():
        assert value(after, "aisix_token_count_total", model=model, type=kind) == n
    latency = "aisix_request_latency_milliseconds"
    assert delta(before, after, f"{latency}_count", **chat_route(200)) == 1
    assert delta(before, after, f"{latency}_bucket", le="+Inf", **chat_route(200)) == 1
    assert delta(before, after, f"{latency}_sum", **chat_route(200)) > 0
    llm = "aisix_llm_latency_milliseconds"
    assert value(after, f"{llm}_count", model=model) == 1
    assert value(after, f"{llm}_bucket", model=model, le="+Inf") == 1
    assert value(after, f"{llm}_sum", model=model) >= 0
    # no first token and no stream end for a non-stream request
    assert value(after, "aisix_llm_first_token_latency_milliseconds_count", model=model) == 0
    ends = [k for k in after if k[0] == "twisted_gw_stream_ends_total"]
    assert all(before.get(k, 0) == after[k] for k in ends)


@pytest_twisted.ensureDeferred
async def test_tokens_come_from_the_upstream_usage(gw, fresh_upstream):
    model = await new_model(gw, fresh_upstream)
    key, _ = await new_key(gw, [model])
    for _ in range(2):  # the mock upstream's default answer: usage 3/4/7
        assert (await gw.chat(key, chat_doc(model)))[0] == 200
    after = await scrape(gw)
    assert value(after, "aisix_token_count_total", model=model, type="prompt") == 6
    assert value(after, "aisix_token_count_total", model=model, type="completion") == 8
    assert value(after, "aisix_token_count_total", model=model, type="total") == 14


@pytest_twisted.ensureDeferred
async def test_stream_usage_chunk_counts_tokens_and_first_token_latency(gw):
    model = await new_model(gw)
    key, _ = await new_key(gw, [model])
    before = await scrape(gw)
    result = await stream(gw, key, model)
    assert result.data[-1] == "[DONE]"
    after = await scrape(gw)
    assert delta(before, after, "aisix_request_count_total", **chat_route(200)) == 1
    for kind, n in MOCK_USAGE.items():
        assert value(after, "aisix_token_count_total", model=model, type=kind) == n
    assert value(after, "aisix_llm_first_token_latency_milliseconds_count", model=model) == 1
    assert value(after, "aisix_llm_latency_milliseconds_count", model=model) == 1
    assert delta(before, after, "twisted_gw_stream_ends_total", end="done") == 1


@pytest_twisted.ensureDeferred
async def test_stream_without_usage_counts_no_tokens(gw, fresh_upstream):
    model = await new_model(gw, fresh_upstream)
    key, _ = await new_key(gw, [model])
    events = [chat_chunk(role="assistant", content=""), chat_chunk("a")]
    fresh_upstream.set_sse(CHAT, [sse_event(e) for e in events])
    result = await stream(gw, key, model)
    assert result.data[-1] == "[DONE]"
    after = await scrape(gw)
    for kind in MOCK_USAGE:
        assert value(after, "aisix_token_count_total", model=model, type=kind) == 0
    assert value(after, "aisix_llm_first_token_latency_milliseconds_count", model=model) == 1


@pytest_twisted.ensureDeferred
async def test_request_count_is_labelled_with_the_matched_route_or_a_dash(gw):
    model = await new_model(gw)
    key, _ = await new_key(gw, [model])
    auth = {"Authorization": f"Bearer {key}"}
    before = await scrape(gw)
    assert (await treq_json("GET", gw.proxy + "/v1/models", headers=auth))[0] == 200
    assert (await treq_json("GET", gw.proxy + "/v1/nowhere", headers=auth))[0] == 404
    embed = {"model": model, "input": "x"}
    assert (await gw.chat(key, embed, path="/v1/embeddings"))[0] == 200
    assert (await gw.chat(None, chat_doc(model)))[0] == 401
    after = await scrape(gw)
    count = "aisix_request_count_total"
    assert delta(before, after, count, method="GET", endpoint="/v1/models", status_code="200") == 1
    assert delta(before, after, count, method="GET", endpoint="-", status_code="404") == 1
    assert (
        delta(before, after, count, method="POST", endpoint="/v1/embeddings", status_code="200")
        == 1
    )
    assert delta(before, after, count, **chat_route(401)) == 1
    assert delta(before, after, "aisix_request_latency_milliseconds_count", **chat_route(401)) == 1


# the other kinds and concurrency, in memory: tests/test_pipeline_limits.py
@pytest.mark.parametrize("kind", ["rpm"])
@pytest_twisted.ensureDeferred
async def test_window_rejections_are_counted_by_limit(gw, kind):
    model = await new_model(gw)
    key, _ = await new_key(gw, [model], {kind: 1})
    before = await scrape(gw)
    assert (await gw.chat(key, chat_doc(model)))[0] == 200
    assert (await gw.chat(key, chat_doc(model)))[0] == 429
    after = await scrape(gw)
    assert delta(before, after, "twisted_gw_rate_limit_rejections_total", limit=kind) == 1
    assert delta(before, after, "aisix_request_count_total", **chat_route(429)) == 1
    others = {"rpm", "rpd", "tpm", "tpd", "concurrency"} - {kind}
    for other in others:
        assert delta(before, after, "twisted_gw_rate_limit_rejections_total", limit=other) == 0


# -- every way a request ends: one access-log line, and the stream-end counter ---------------


@dataclass
class Ended:
    """What a case did: the request id the client saw (None if it never saw
    one), and the status and end reason the log must show."""

    rid: str | None
    status: int
    end: str
    stream: bool
    model: str | None  # the configured model name the line must name, else None
    first_token: bool = False  # whether a first chunk reached the client
    #: the fields after ``target`` that say why it failed (CONTRACT 5.4);
    #: ``upstream`` is written ``UP`` for the mock upstream's host:port
    why: dict[str, str] = field(default_factory=dict)


Case = Callable[[Any, Any, dict[str, str]], Awaitable[Ended]]


def _first() -> bytes:
    return sse_event(chat_chunk("a", role="assistant"))


async def _ok(gw, up, env):
    status, headers, _ = await gw.chat(env["key"], chat_doc(env["mock"]))
    assert status == 200
    return Ended(headers["x-request-id"], 200, "ok", False, env["mock"])


async def _rejected_no_key(gw, up, env):
    status, headers, _ = await gw.chat(None, chat_doc(env["mock"]))
    why = {"error": "missing_api_key"}
    return Ended(headers["x-request-id"], status, "rejected", False, None, why=why)  # auth first


async def _rejected_bad_key(gw, up, env):
    status, headers, _ = await gw.chat(secret(), chat_doc(env["mock"]))
    why = {"error": "invalid_api_key"}
    return Ended(headers["x-request-id"], status, "rejected", False, None, why=why)


async def _rejected_forbidden(gw, up, env):
    status, headers, _ = await gw.chat(env["key"], chat_doc(env["forbidden"]))
    why = {"error": "model_access_forbidden"}
    return Ended(headers["x-request-id"], status, "rejected", False, env["forbidden"], why=why)


async def _rejected_rate_limit(gw, up, env):
    key = env["limited_key"]  # rpm 1
    left = 60 - time.time() % 60
    if left < 2:  # both requests in one window
        await task.deferLater(reactor, left + 0.05, lambda: None)
    assert (await gw.chat(key, chat_doc(env["mock"], stream=True)))[0] == 200
    status, headers, _ = await gw.chat(key, chat_doc(env["mock"], stream=True))
    why = {"error": "rate_limit_exceeded", "limit": "rpm"}
    return Ended(headers["x-request-id"], status, "rejected", True, env["mock"], why=why)


async def _upstream_error(gw, up, env):
    up.set_json(CHAT, {"error": {"message": "boom"}}, status=500)
    status, headers, _ = await gw.chat(env["key"], chat_doc(env["up"]))
    why = {"error": "provider_error", "upstream": "UP", "cause": "status 500"}
    return Ended(headers["x-request-id"], status, "upstream_error", False, env["up"], why=why)


async def _upstream_4xx(gw, up, env):
    up.set_json(CHAT, {"error": {"message": "too long", "code": "context_length"}}, status=400)
    status, headers, _ = await gw.chat(env["key"], chat_doc(env["up"]))
    why = {"error": "context_length", "upstream": "UP", "cause": "status 400"}  # its code
    return Ended(headers["x-request-id"], status, "upstream_error", False, env["up"], why=why)


async def _stream_upstream_error(gw, up, env):
    up.set_json(CHAT, {"error": {"message": "boom"}}, status=503)
    result = await stream(gw, env["key"], env["up"])
    why = {"error": "provider_error", "upstream": "UP", "cause": "status 503"}
    rid = result.headers["x-request-id"]
    return Ended(rid, result.status, "upstream_error", True, env["up"], why=why)


async def _done(gw, up, env):
    result = await stream(gw, env["key"], env["mock"])
    assert result.data[-1] == "[DONE]"
    return Ended(result.headers["x-request-id"], 200, "done", True, env["mock"], True)


async def _empty(gw, up, env):
    up.set_sse(CHAT, [])
    result = await stream(gw, env["key"], env["up"])
    assert b"data:" not in result.body
    return Ended(result.headers["x-request-id"], 200, "empty", True, env["up"])


async def _upstream_cut(gw, up, env):
    up.set_sse(CHAT, [_first()], end="cut")
    result = await stream(gw, env["key"], env["up"])
    assert "[DONE]" not in result.data
    why = {
        "error": "provider_error",
        "upstream": "UP",
        "cause": "stream cut: upstream connection lost mid-stream",
    }
    return Ended(result.headers["x-request-id"], 200, "upstream_cut", True, env["up"], True, why)


async def _client_gone(gw, up, env):
    up.set_sse(CHAT, [_first()], end="hang")
    result = await stream(gw, env["key"], env["up"], stop_when=lambda body: b"data:" in body)
    assert result.ended == "stopped"
    return Ended(result.headers["x-request-id"], 200, "client_gone", True, env["up"], True)


async def _client_gone_waiting(gw, up, env):
    up.set_delay(CHAT, 5)
    with pytest.raises(defer.TimeoutError):
        await gw.chat(env["key"], chat_doc(env["up"]), timeout=0.2)
    return Ended(None, 499, "client_gone", False, env["up"])


#: the two timeouts (whole answer, mid-stream) are told to the log in memory,
#: on a Clock: tests/test_pipeline_streams.py
CASES: dict[str, Case] = {
    "ok": _ok,
    "rejected-401-missing-key": _rejected_no_key,
    "rejected-401-unknown-key": _rejected_bad_key,
    "rejected-403": _rejected_forbidden,
    "rejected-429-stream": _rejected_rate_limit,
    "upstream_error-502": _upstream_error,
    "upstream_error-4xx": _upstream_4xx,
    "upstream_error-stream": _stream_upstream_error,
    "done": _done,
    "empty": _empty,
    "upstream_cut": _upstream_cut,
    "client_gone-mid-stream": _client_gone,
    "client_gone-before-answer": _client_gone_waiting,
}


@pytest.fixture(scope="module")
def env(gw, upstream):
    state: dict[str, str] = {}

    async def build():
        state["mock"] = await new_model(gw)
        state["up"] = await new_model(gw, upstream)
        state["forbidden"] = await new_model(gw)
        allowed = [state["mock"], state["up"]]
        state["key"], state["key_id"] = await new_key(gw, allowed)
        state["limited_key"], state["limited_key_id"] = await new_key(gw, allowed, {"rpm": 1})

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    return state


@pytest.mark.parametrize("case", list(CASES))
@pytest_twisted.ensureDeferred
async def test_every_way_a_request_ends_writes_one_access_line(gw, env, fresh_upstream, case):
    before_rids = set(finalize_records(gw.process))
    before = await scrape(gw)
    ended = await CASES[case](gw, fresh_upstream, env)
    if ended.rid is None:
        rid, _ = await wait_new_finalized(gw.process, before_rids)
    else:
        rid = ended.rid
        await wait_finalized(gw.process, rid)  # after the access-log hook, which runs first
    lines = logfmt_lines(gw.process, rid)
    assert len(lines) == 1, f"{len(lines)} access lines for {rid}"
    line = lines[0]
    assert list(line) == FIELDS + list(ended.why)
    up = urlsplit(fresh_upstream.base_url).netloc
    assert {k: line[k] for k in ended.why} == {
        k: up if v == "UP" else v for k, v in ended.why.items()
    }
    assert (line["end"], line["status"]) == (ended.end, str(ended.status))
    assert line["method"] == "POST" and line["path"] == CHAT
    assert line["client"] == "127.0.0.1"
    assert line["model"] == (ended.model or "-")
    key_ids = {env["key_id"], env["limited_key_id"]}
    assert line["key_id"] in key_ids if ended.status != 401 else line["key_id"] == "-"
    assert float(line["latency_ms"]) >= 0
    if ended.first_token:
        assert float(line["first_token_ms"]) >= 0
    elif ended.end != "empty":  # see test_an_empty_stream_has_no_first_token
        assert line["first_token_ms"] == "-"
    if ended.end == "done":  # the mock provider's usage chunk
        assert [line[f"{k}_tokens"] for k in MOCK_USAGE] == ["12", "1", "13"]
    elif ended.end != "ok":
        assert [line[f"{k}_tokens"] for k in MOCK_USAGE] == ["0", "0", "0"]
    # streams are counted by how they ended; other requests are not
    after = await scrape(gw)
    ends = {
        dict(labels)["end"]: after[(name, labels)] - before.get((name, labels), 0)
        for name, labels in after
        if name == "twisted_gw_stream_ends_total"
    }
    moved = {end: n for end, n in ends.items() if n}
    if ended.stream:
        expected = {ended.end: 1}
        if case == "rejected-429-stream":
            expected["done"] = 1  # the request that spent the rpm
        assert moved == expected
    else:
        assert moved == {}


@pytest_twisted.ensureDeferred
async def test_the_log_never_holds_a_key_or_the_prompt(gw, fresh_upstream):
    prompt = f"my secret plan {uuid.uuid4().hex}"
    provider_key = secret("sk-provider")
    model = f"obs-{uuid.uuid4().hex[:8]}"
    pc = {"api_key": provider_key, "api_base": fresh_upstream.base_url}
    await gw.add_model(model, "openai/gpt-obs", pc)
    mock = await new_model(gw)
    key, _ = await new_key(gw, [model, mock], {"rpm": 100, "tpm": 100000})
    stranger = secret()
    sent = []

    async def send(k: str | None, doc: dict[str, Any]) -> None:
        status, _, body = await gw.chat(k, doc)
        sent.append((status, body))

    await send(key, chat_doc(mock, prompt=prompt))
    await send(key, chat_doc(mock, stream=True, prompt=prompt))
    await send(stranger, chat_doc(mock, prompt=prompt))
    await send(key, chat_doc(key, prompt=prompt))  # a key pasted into "model"
    await send(key, chat_doc(provider_key, prompt=prompt))  # the provider's, too
    unknown = f"no-such-model-{uuid.uuid4().hex[:8]}"
    await send(key, chat_doc(unknown, prompt=prompt))  # not a key: logged as sent
    await send(key, {"model": mock, "messages": prompt})  # wrong type: 400 invalid_json
    for status in (400, 500):
        fresh_upstream.set_json(
            CHAT, {"error": {"message": f"bad key {provider_key}", "code": "x"}}, status=status
        )
        await send(key, chat_doc(model, prompt=prompt))
    fresh_upstream.set_sse(CHAT, [_first()], end="hang")
    await stream(gw, key, model, prompt, stop_when=lambda body: b"data:" in body)
    assert [s for s, _ in sent] == [200, 200, 401, 400, 400, 400, 400, 400, 502]
    await task.deferLater(reactor, 0.2, lambda: None)  # the client_gone line comes a moment later
    log = gw.process.output
    assert "access " in log
    assert prompt not in log and prompt.split()[-1] not in log
    for value in (key, stranger, provider_key):
        assert value not in log
    # CONTRACT 5.4: an unknown model is named as sent, a key in its place is not
    models = [
        fields.get("model")
        for _, text in access_lines(gw.process)
        for fields in [dict(LOGFMT.findall(text))]
    ]
    assert unknown in models and models.count("[redacted]") >= 2


@pytest_twisted.ensureDeferred
async def test_an_empty_stream_has_no_first_token(gw, fresh_upstream):
    fresh_upstream.set_sse(CHAT, [sse_event("[DONE]")])
    model = await new_model(gw, fresh_upstream)
    key, _ = await new_key(gw, [model])
    result = await stream(gw, key, model)
    assert result.status == 200 and b"data:" not in result.body
    rid = result.headers["x-request-id"]
    assert (await wait_finalized(gw.process, rid))[0] == "empty"
    after = await scrape(gw)
    assert value(after, "aisix_llm_first_token_latency_milliseconds_count", model=model) == 0
    (line,) = logfmt_lines(gw.process, rid)
    assert line["first_token_ms"] == "-"


# -- JSON lines ---------------------------------------------------------------------------------


def test_json_access_log_has_one_object_per_line_with_the_same_fields(tmp_path):
    from tests.support.gateway import http

    gateway = start_gateway(
        tmp_path, extra={"server": {"proxy": {"access_log": {"format": "json"}}}}
    )
    try:
        model = f"obs-{uuid.uuid4().hex[:8]}"
        status, body = gateway.admin_call(
            "POST", "/aisix/admin/models", {"name": model, "model": "mock/x", "provider_config": {}}
        )
        assert status == 201, body
        key = secret()
        status, body = gateway.admin_call(
            "POST", "/aisix/admin/apikeys", {"key": key, "allowed_models": [model]}
        )
        assert status == 201, body
        key_id = body["key"].split("/")[-1]
        auth = {"Authorization": f"Bearer {key}"}
        rids = {}
        for name, headers, stream_ in (
            ("ok", auth, False),
            ("done", auth, True),
            ("rejected", {}, False),
        ):
            status, got, _ = http(
                "POST", gateway.proxy + CHAT, headers=headers, json_body=chat_doc(model, stream_)
            )
            rids[got["x-request-id"]] = (name, status)
    finally:
        gateway.process.stop()
    records = {}
    for stamp, text in access_lines(gateway.process):
        assert _TIME.match(stamp), stamp
        record = json.loads(text)  # the whole rest of the line is one JSON object
        assert isinstance(record, dict)
        records[record["rid"]] = record
    assert set(records) == set(rids)
    for rid, (end, status) in rids.items():
        record = records[rid]
        why = ["error"] if end == "rejected" else []  # CONTRACT 5.4: the 401's code
        assert list(record) == ["time", *FIELDS, *why]  # JSON lines carry their own time too
        if why:
            assert record["error"] == "missing_api_key"
        assert _TIME.match(record["time"].replace("+00:00", "+0000")), record["time"]
        assert (record["end"], record["status"]) == (end, status)
        assert record["method"] == "POST" and record["path"] == CHAT
        assert record["client"] == "127.0.0.1"
        # a 401 is decided before the body is read: no model, no key
        assert (record["model"], record["key_id"]) == (
            (None, None) if end == "rejected" else (model, key_id)
        )
        assert isinstance(record["latency_ms"], float | int)
        if end == "done":
            assert isinstance(record["first_token_ms"], float | int)
        else:
            assert record["first_token_ms"] is None
        tokens = [record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]]
        assert tokens == ([0, 0, 0] if end == "rejected" else [12, 1, 13])
    assert key not in gateway.process.output
