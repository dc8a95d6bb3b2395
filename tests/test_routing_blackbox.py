"""CONTRACT 5.1, black-box: routing a model over several deployments, retries,
cooldowns and fallbacks, against the real gateway process and several real
upstreams, each on its own 127.0.0.1 port (three mock upstreams, a fault
upstream per test, and a port that refuses every connection).

Every model is made by its test under a fresh name, so its deployments'
cooldowns (per node, per model) and its metric series start from nothing.
Deployment 0 is made the first choice by giving the targets a higher
``priority`` (or, where the test is about one priority, a tiny ``weight``),
so which upstream an attempt reaches is known in advance.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from typing import Any

import openai
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.web.client import ResponseNeverReceived

from tests.conftest import secret
from tests.streamcheck import counted_gateway, wait_finalized
from tests.support.fault_upstream import FaultUpstream, marker
from tests.support.gateway import treq_stream
from tests.support.mock_upstream import DEFAULT_CONTENT, MockUpstream, chat_chunk, sse_event
from tests.support.upstream_errors import upstream_error, upstream_error_table
from tests.test_metrics_and_access_log import chat_doc, logfmt_lines, scrape, stream

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
ATTEMPTS = "twisted_gw_upstream_attempts_total"
COOLDOWNS = "twisted_gw_deployment_cooldowns_total"
#: a weight that makes a deployment the first choice of its priority all but surely
HEAVY = 1_000_000


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """The gateway (with the test-only finalize counter); a 5 s gateway-wide
    upstream timeout, far above the models' own, so a test can tell them apart."""
    yield from counted_gateway(tmp_path_factory, "routing", upstream_timeout=5)


@pytest.fixture(scope="module")
def refused():
    """An ``api_base`` whose every connection is refused: a port bound but never
    listening (held for the module, so nothing else can take it meanwhile)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


@pytest.fixture(scope="module")
def mocks():
    started = [MockUpstream() for _ in range(3)]
    for mock in started:
        mock.start()
    yield started
    pytest_twisted.blockon(defer.gatherResults([m.stop() for m in started]))


@pytest.fixture
def ups(mocks):
    """Three mock upstreams (a, b, c), their answers and records forgotten."""
    for mock in mocks:
        mock.reset()
    return mocks


@pytest.fixture
def fault():
    """A fault upstream of this test alone, so its connection counts are exact."""
    upstream = FaultUpstream()
    upstream.start()
    yield upstream
    pytest_twisted.blockon(upstream.stop())


# -- helpers -----------------------------------------------------------------------------


def pc(base: str) -> dict[str, str]:
    return {"api_key": secret("sk-provider"), "api_base": base}


def target(base: str, model: str = "openai/gpt-one", **fields: Any) -> dict[str, Any]:
    """One more deployment: ``model`` behind ``base`` (plus weight, priority, timeout)."""
    return {"model": model, "provider_config": pc(base), **fields}


async def new_model(gw, base: str, model: str = "openai/gpt-zero", **extra: Any) -> str:
    """A fresh model whose deployment 0 is ``model`` behind ``base``; its name."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    await gw.add_model(name, model, pc(base), **extra)
    return name


async def ask(gw, key: str, model: str, prompt: str = "hi") -> tuple[int, dict[str, str], Any]:
    status, headers, raw = await gw.chat(key, chat_doc(model, prompt=prompt))
    return status, headers, json.loads(raw)


async def attempts_of(gw, model: str) -> dict[tuple[str, str], float]:
    """``twisted_gw_upstream_attempts_total`` of ``model``: (target, outcome) -> count."""
    return {
        (labels["target"], labels["outcome"]): v for labels, v in await series(gw, ATTEMPTS, model)
    }


async def cooldowns_of(gw, model: str) -> dict[str, float]:
    """``twisted_gw_deployment_cooldowns_total`` of ``model``: target -> count."""
    return {labels["target"]: v for labels, v in await series(gw, COOLDOWNS, model)}


async def series(gw, name: str, model: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of the counter ``name`` labelled ``model=model``."""
    found = []
    for (sample, labels), v in (await scrape(gw)).items():
        labels = dict(labels)
        if sample == name and labels.get("model") == model:
            found.append((labels, v))
    return found


async def logged(gw, headers: dict[str, str]) -> dict[str, str]:
    """The one access-log line of the request that got ``headers`` (finalized once)."""
    rid = headers["x-request-id"]
    await wait_finalized(gw.process, rid)
    (line,) = logfmt_lines(gw.process, rid)
    return line


def error_of(body: Any) -> dict[str, Any]:
    """CONTRACT 4.1's error shape, checked; its ``error`` object."""
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["param"] is None
    return body["error"]


def wait(seconds: float) -> defer.Deferred:
    """Let time pass (a cooldown running out: nothing to await but the clock)."""
    return task.deferLater(reactor, seconds, lambda: None)


def program(upstream: MockUpstream, status: int, answer: dict | None, **headers: str) -> None:
    """Answer chat with ``status``: ``answer`` as JSON, or an HTML error page when None."""
    if answer is None:
        upstream.set_raw(
            CHAT, b"<html>down</html>", status=status, content_type="text/html", headers=headers
        )
    else:
        upstream.set_json(CHAT, answer, status=status, headers=headers)


# -- 1. retries: connect, cooldowns, upstream statuses -------------------------------------


@pytest_twisted.ensureDeferred
async def test_refused_deployment_is_retried_on_the_next_of_the_same_priority(gw, refused, ups):
    _, b, _ = ups
    name = await new_model(gw, refused, weight=HEAVY, targets=[target(b.base_url)])
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert status == 200, body
    assert body["model"] == "gpt-one"  # target 1's upstream answered
    assert body["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert headers["x-gateway-attempts"] == "2"
    line = await logged(gw, headers)
    assert (line["status"], line["model"], line["end"]) == ("200", name, "ok")
    assert (line["attempts"], line["target"]) == ("2", f"{name}#1")
    assert await attempts_of(gw, name) == {("0", "connect"): 1, ("1", "ok"): 1}
    assert len(b.requests) == 1


@pytest_twisted.ensureDeferred
async def test_retry_after_puts_the_deployment_in_cooldown(gw, ups):
    a, b, _ = ups
    program(a, 429, upstream_error("slow down", "rate_limit_exceeded"), **{"Retry-After": "30"})
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-one", "2")
    assert await cooldowns_of(gw, name) == {"0": 1}
    # deployment 0 (priority 0, the first choice whenever it is free) rests for 30 s
    for _ in range(5):
        status, headers, body = await ask(gw, key, name)
        assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-one", "1")
    assert (len(a.requests), len(b.requests)) == (1, 6)
    assert await attempts_of(gw, name) == {("0", "429"): 1, ("1", "ok"): 6}
    assert await cooldowns_of(gw, name) == {"0": 1}


@pytest_twisted.ensureDeferred
async def test_retryable_failures_within_the_window_start_a_cooldown(gw, refused, ups):
    """Default cooldown: 3 retryable failures within 60 s rest the deployment 30 s."""
    _, b, _ = ups
    name = await new_model(gw, refused, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    seen = []
    for _ in range(5):
        status, headers, body = await ask(gw, key, name)
        assert (status, body["model"]) == (200, "gpt-one")
        seen.append(headers["x-gateway-attempts"])
    assert seen == ["2", "2", "2", "1", "1"]
    assert await cooldowns_of(gw, name) == {"0": 1}
    assert await attempts_of(gw, name) == {("0", "connect"): 3, ("1", "ok"): 5}


@pytest_twisted.ensureDeferred
async def test_after_its_cooldown_one_request_probes_the_deployment(gw, ups):
    a, b, _ = ups
    program(a, 500, upstream_error("boom"))
    cooldown = {"failures": 2, "window_ms": 60000, "duration_ms": 300}
    name = await new_model(
        gw, a.base_url, targets=[target(b.base_url, priority=1)], routing={"cooldown": cooldown}
    )
    key = await gw.add_key([name])

    async def answered_by() -> tuple[str, str]:
        status, headers, body = await ask(gw, key, name)
        assert status == 200, body
        return body["model"], headers["x-gateway-attempts"]

    assert await answered_by() == ("gpt-one", "2")
    assert await answered_by() == ("gpt-one", "2")  # 0 failed twice: rests 300 ms
    assert await answered_by() == ("gpt-one", "1")
    await wait(0.4)
    assert await answered_by() == ("gpt-one", "2")  # one failed probe: rests again at once
    assert await answered_by() == ("gpt-one", "1")
    a.clear(CHAT)
    await wait(0.4)
    assert await answered_by() == ("gpt-zero", "1")  # the probe succeeded: cooldown over
    assert await answered_by() == ("gpt-zero", "1")
    assert await cooldowns_of(gw, name) == {"0": 2}
    assert len(a.requests) == 5


@pytest_twisted.ensureDeferred
async def test_when_every_deployment_cools_down_they_are_tried_in_the_order_theirs_end(gw, ups):
    a, b, _ = ups
    program(a, 429, upstream_error("slow a", "rate_limit_exceeded"), **{"Retry-After": "30"})
    program(b, 429, upstream_error("slow b", "rate_limit_exceeded"), **{"Retry-After": "10"})
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert (status, error_of(body)["message"], headers["x-gateway-attempts"]) == (
        429,
        "slow b",
        "2",
    )
    assert await cooldowns_of(gw, name) == {"0": 1, "1": 1}
    a.clear(CHAT)
    b.clear(CHAT)
    # both rest: never refused untried, b's cooldown ends first, so b is tried first
    status, headers, body = await ask(gw, key, name)
    assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-one", "1")
    status, headers, body = await ask(gw, key, name)
    assert (status, body["model"]) == (200, "gpt-one")  # a still rests
    assert (len(a.requests), len(b.requests)) == (1, 3)


@upstream_error_table(500, 503, 429, 401, 403)
@pytest_twisted.ensureDeferred
async def test_retryable_upstream_status_is_retried_on_the_next_deployment(
    gw, ups, status, answer, expected_status, expected_code, expected_message
):
    a, b, _ = ups
    program(a, status, answer)
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    got, headers, body = await ask(gw, key, name)
    assert (got, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-one", "2")
    outcome = "auth" if status in (401, 403) else str(status)
    assert await attempts_of(gw, name) == {("0", outcome): 1, ("1", "ok"): 1}
    assert (len(a.requests), len(b.requests)) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_502_from_the_upstream_is_retried(gw, ups):
    a, b, _ = ups
    program(a, 502, upstream_error("bad gateway"))
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-one", "2")
    assert await attempts_of(gw, name) == {("0", "502"): 1, ("1", "ok"): 1}


@pytest.mark.parametrize(
    "status, answer, code, message",
    [
        (
            400,
            upstream_error("bad temperature", "invalid_value"),
            "invalid_value",
            "bad temperature",
        ),
        (404, upstream_error("no such model"), "provider_error", "no such model"),
        (422, None, "provider_error", "upstream returned status 422"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_upstream_client_error_is_answered_at_once_never_retried(
    gw, ups, status, answer, code, message
):
    a, b, _ = ups
    program(a, status, answer)
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    got, headers, body = await ask(gw, key, name)
    error = error_of(body)
    assert (got, error["code"], error["message"], error["type"]) == (
        status,
        code,
        message,
        "invalid_request_error",
    )
    assert headers["x-gateway-attempts"] == "1"
    assert (len(a.requests), b.requests) == (1, [])
    line = await logged(gw, headers)
    assert (line["attempts"], line["target"], line["end"]) == ("1", f"{name}#0", "upstream_error")
    assert await attempts_of(gw, name) == {("0", str(status)): 1}


# -- 2. timeouts ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_deployment_past_its_timeout_is_abandoned_and_its_connection_closed(gw, ups, fault):
    """The stalling deployment is a target with its own 300 ms (the model's is 5 s)."""
    _, b, _ = ups
    stalled = target(fault.base_url, "openai/gpt-stall", weight=HEAVY, timeout=300)
    name = await new_model(gw, b.base_url, timeout=5000, targets=[stalled])
    key = await gw.add_key([name])
    started = reactor.seconds()
    status, headers, body = await ask(gw, key, name, prompt=marker("stall", 1))
    assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-zero", "2")
    assert 0.3 <= reactor.seconds() - started < 2.0
    assert fault.seen["stall"] == 1
    await fault.wait_idle(2.0)  # the stalled exchange ended: the gateway hung up on it
    assert fault.client_gone["stall"] == 1
    await wait(0)  # the connection's own end is reported right after its exchange's
    assert fault.open_connections == 0
    assert await attempts_of(gw, name) == {("1", "timeout"): 1, ("0", "ok"): 1}


@pytest_twisted.ensureDeferred
async def test_a_target_without_a_timeout_uses_the_models(gw, refused, ups, fault):
    _, b, _ = ups
    targets = [
        target(fault.base_url, "openai/gpt-stall", priority=1),  # no timeout of its own
        target(b.base_url, "openai/gpt-two", priority=2, timeout=5000),
    ]
    name = await new_model(gw, refused, timeout=300, targets=targets)
    key = await gw.add_key([name])
    started = reactor.seconds()
    status, headers, body = await ask(gw, key, name, prompt=marker("stall", 2))
    assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-two", "3")
    assert reactor.seconds() - started < 2.0  # the model's 300 ms, not the gateway's 5 s
    assert await attempts_of(gw, name) == {
        ("0", "connect"): 1,
        ("1", "timeout"): 1,
        ("2", "ok"): 1,
    }
    await fault.wait_idle(2.0)
    assert fault.client_gone["stall"] == 1


@pytest_twisted.ensureDeferred
async def test_a_target_with_timeout_0_has_no_per_model_bound(gw, refused, ups):
    _, b, _ = ups
    b.set_delay(CHAT, 0.6)
    name = await new_model(
        gw, refused, timeout=300, targets=[target(b.base_url, priority=1, timeout=0)]
    )
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert (status, headers["x-gateway-attempts"]) == (200, "2"), body


# -- 3. streams ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stream_cut_before_its_first_chunk_is_retried(gw, ups):
    a, b, _ = ups
    a.set_sse(CHAT, [], end="cut")  # 200 headers, then the connection dies
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    result = await stream(gw, key, name)
    assert result.status == 200 and result.ended == "done"
    assert result.headers["content-type"] == "text/event-stream"
    assert result.headers["x-gateway-attempts"] == "2"
    assert result.data[-1] == "[DONE]"
    chunks = result.json_chunks
    assert {c["model"] for c in chunks} == {"gpt-one"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == DEFAULT_CONTENT
    assert chunks[-1]["usage"]["total_tokens"] == 7  # b's whole stream, its usage chunk too
    line = await logged(gw, result.headers)
    assert (line["attempts"], line["target"], line["end"]) == ("2", f"{name}#1", "done")
    assert await attempts_of(gw, name) == {("0", "connect"): 1, ("1", "ok"): 1}


@pytest_twisted.ensureDeferred
async def test_stream_held_past_its_timeout_before_the_first_chunk_is_retried(gw, ups, fault):
    _, b, _ = ups
    name = await new_model(
        gw, fault.base_url, timeout=300, targets=[target(b.base_url, priority=1, timeout=5000)]
    )
    key = await gw.add_key([name])
    result = await stream(gw, key, name, prompt=marker("hold_headers", 3))
    assert (result.status, result.headers["x-gateway-attempts"]) == (200, "2")
    assert result.data[-1] == "[DONE]"
    assert {c["model"] for c in result.json_chunks} == {"gpt-one"}
    await fault.wait_idle(2.0)
    assert fault.client_gone["hold_headers"] == 1
    await wait(0)
    assert fault.open_connections == 0
    assert await attempts_of(gw, name) == {("0", "timeout"): 1, ("1", "ok"): 1}


@pytest_twisted.ensureDeferred
async def test_stream_cut_after_its_first_chunk_ends_without_done_and_is_not_retried(gw, ups):
    a, b, _ = ups
    first = chat_chunk("partial", role="assistant", model="gpt-zero")
    a.set_sse(CHAT, [sse_event(first)], end="cut", end_delay=0.05)
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    result = await stream(gw, key, name)
    assert (result.status, result.headers["x-gateway-attempts"]) == (200, "1")
    assert result.json_chunks == [first]
    assert "[DONE]" not in result.data
    assert b.requests == []
    line = await logged(gw, result.headers)
    assert (line["attempts"], line["target"], line["end"]) == ("1", f"{name}#0", "upstream_cut")
    assert await attempts_of(gw, name) == {("0", "ok"): 1}


# -- 4. choice: priorities, weights, least busy --------------------------------------------


@pytest_twisted.ensureDeferred
async def test_lowest_priority_present_wins_over_weight(gw, refused, ups):
    a, b, c = ups
    targets = [
        target(c.base_url, "openai/gpt-one", priority=2, weight=HEAVY),
        target(b.base_url, "openai/gpt-two", priority=1),
    ]
    name = await new_model(gw, a.base_url, targets=targets)
    key = await gw.add_key([name])
    for _ in range(10):
        status, headers, body = await ask(gw, key, name)
        assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-zero", "1")
    # priority 0 down: priority 1 answers, priority 2 (however heavy) is never reached
    down = await new_model(gw, refused, targets=targets)
    key = await gw.add_key([down])
    status, headers, body = await ask(gw, key, down)
    assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-two", "2")
    assert (len(a.requests), len(b.requests), c.requests) == (10, 1, [])
    line = await logged(gw, headers)
    assert line["target"] == f"{down}#2"


@pytest_twisted.ensureDeferred
async def test_a_failed_attempt_tries_its_own_priority_before_the_next(gw, refused, ups):
    _, b, c = ups
    targets = [
        target(c.base_url, "openai/gpt-one", priority=1),
        target(refused, "openai/gpt-two", weight=1),  # priority 0, like deployment 0
        target(b.base_url, "openai/gpt-three", weight=1),
    ]
    name = await new_model(gw, refused, weight=HEAVY, targets=targets)
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert (status, body["model"]) == (200, "gpt-three")
    assert c.requests == []
    outcomes = await attempts_of(gw, name)
    assert outcomes[("3", "ok")] == 1 and outcomes[("0", "connect")] == 1
    assert sum(outcomes.values()) == int(headers["x-gateway-attempts"])


@pytest_twisted.ensureDeferred
async def test_weights_split_requests_in_proportion(gw, ups):
    a, b, _ = ups
    name = await new_model(gw, a.base_url, weight=1, targets=[target(b.base_url, weight=3)])
    key = await gw.add_key([name])
    total = 400
    for _ in range(total // 40):
        batch = [defer.ensureDeferred(ask(gw, key, name)) for _ in range(40)]
        for status, headers, _ in await defer.gatherResults(batch):
            assert (status, headers["x-gateway-attempts"]) == (200, "1")
    assert len(a.requests) + len(b.requests) == total
    # 1:3 is 25% of 400 = 100, sd 8.7: 60..140 is a 4.6 sigma bound
    assert 0.15 * total <= len(a.requests) <= 0.35 * total, (len(a.requests), len(b.requests))


async def _least_busy_split(gw, faults, hold: str, stream_it: bool) -> tuple[int, list[int]]:
    """Hold one request on whichever deployment least_busy gives it, then send
    12 more one at a time; (the holder's index, how many of the 12 each got)."""
    f0, f1 = faults
    name = await new_model(
        gw,
        f0.base_url,
        timeout=5000,
        targets=[target(f1.base_url)],
        routing={"strategy": "least_busy"},
    )
    key = await gw.add_key([name])
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    doc = chat_doc(name, stream_it, marker(hold, 7))
    relayed: defer.Deferred[None] = defer.Deferred()

    def arrived(body: bytes) -> bool:
        if b"data:" in body and not relayed.called:
            relayed.callback(None)
        return False

    held = defer.ensureDeferred(
        treq_stream("POST", gw.proxy + CHAT, headers=headers, json_body=doc, stop_when=arrived)
    )
    seen = [f.wait_seen(7) for f in faults]
    index = (await defer.DeferredList(seen, fireOnOneCallback=True, consumeErrors=True))[1]
    seen[1 - index].cancel()
    if stream_it:
        await relayed  # the first chunk reached the client: the stream is being relayed
    before = [f.seen["ok"] for f in faults]
    for _ in range(12):
        status, _, body = await ask(gw, key, name)
        assert status == 200, body
    held.cancel()
    with contextlib.suppress(defer.CancelledError, ResponseNeverReceived):
        await held  # the client walked away from it on purpose
    return index, [f.seen["ok"] - n for f, n in zip(faults, before, strict=True)]


@pytest.fixture
def two_faults():
    faults = [FaultUpstream(), FaultUpstream()]
    for f in faults:
        f.start()
    yield faults
    pytest_twisted.blockon(defer.gatherResults([f.stop() for f in faults]))


@pytest_twisted.ensureDeferred
async def test_least_busy_avoids_a_deployment_with_a_request_in_flight(gw, two_faults):
    holder, got = await _least_busy_split(gw, two_faults, "stall", stream_it=False)
    assert got[holder] == 0 and got[1 - holder] == 12, (holder, got)


@pytest_twisted.ensureDeferred
async def test_least_busy_counts_a_stream_being_relayed_as_in_flight(gw, two_faults):
    holder, got = await _least_busy_split(gw, two_faults, "stall_mid", stream_it=True)
    assert got[holder] == 0 and got[1 - holder] == 12, (holder, got)


# -- 5. fallbacks --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fallback_answers_when_the_model_failed_under_the_clients_model_name(
    gw, refused, ups
):
    _, b, _ = ups
    backup = await new_model(gw, b.base_url, "openai/gpt-backup")
    name = await new_model(gw, refused, fallbacks=["rt-no-such-model", backup])
    key = await gw.add_key([name, backup])
    status, headers, body = await ask(gw, key, name)
    assert status == 200, body
    assert body["model"] == "gpt-backup"  # chat keeps the upstream's model (CONTRACT 4.2)
    assert headers["x-gateway-attempts"] == "2"
    line = await logged(gw, headers)
    assert (line["model"], line["attempts"], line["target"]) == (name, "2", f"{backup}#0")
    assert await attempts_of(gw, name) == {("0", "connect"): 1, (f"{backup}#0", "ok"): 1}
    assert await series(gw, ATTEMPTS, backup) == []  # the metrics keep the client's model
    assert len(b.requests) == 1


@pytest_twisted.ensureDeferred
async def test_fallback_the_key_may_not_use_is_skipped(gw, refused, ups):
    _, b, _ = ups
    backup = await new_model(gw, b.base_url, "openai/gpt-backup")
    name = await new_model(gw, refused, fallbacks=[backup])
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    error = error_of(body)
    assert (status, error["code"], error["type"]) == (502, "provider_error", "server_error")
    assert error["message"].startswith("Provider error: ")
    assert headers["x-gateway-attempts"] == "1"
    assert b.requests == []


@pytest_twisted.ensureDeferred
async def test_fallback_over_its_own_rate_limit_is_skipped(gw, refused, ups):
    _, b, c = ups
    limited = await new_model(gw, b.base_url, "openai/gpt-limited", rate_limit={"rpm": 1})
    spare = await new_model(gw, c.base_url, "openai/gpt-spare")
    name = await new_model(gw, refused, fallbacks=[limited, spare])
    only = await new_model(gw, refused, fallbacks=[limited])
    key = await gw.add_key([name, only, limited, spare])
    status, _, _ = await ask(gw, key, limited)  # spends the fallback's rpm
    assert status == 200
    status, headers, body = await ask(gw, key, name)
    assert (status, body["model"], headers["x-gateway-attempts"]) == (200, "gpt-spare", "2")
    assert (await logged(gw, headers))["target"] == f"{spare}#0"
    status, headers, body = await ask(gw, key, only)
    assert (status, error_of(body)["code"], headers["x-gateway-attempts"]) == (
        502,
        "provider_error",
        "1",
    )
    assert (len(b.requests), len(c.requests)) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_fallbacks_do_not_chain(gw, refused, ups):
    _, _, c = ups
    last = await new_model(gw, c.base_url, "openai/gpt-last")
    middle = await new_model(gw, refused, fallbacks=[last])
    name = await new_model(gw, refused, fallbacks=[middle])
    key = await gw.add_key([name, middle, last])
    status, headers, body = await ask(gw, key, name)
    assert (status, error_of(body)["code"], headers["x-gateway-attempts"]) == (
        502,
        "provider_error",
        "2",
    )
    assert (await logged(gw, headers))["target"] == f"{middle}#0"
    assert c.requests == []


@pytest_twisted.ensureDeferred
async def test_fallback_does_not_follow_a_client_error(gw, ups):
    a, b, _ = ups
    program(a, 400, upstream_error("bad temperature", "invalid_value"))
    backup = await new_model(gw, b.base_url, "openai/gpt-backup")
    name = await new_model(gw, a.base_url, fallbacks=[backup])
    key = await gw.add_key([name, backup])
    status, headers, body = await ask(gw, key, name)
    assert (status, error_of(body)["code"], headers["x-gateway-attempts"]) == (
        400,
        "invalid_value",
        "1",
    )
    assert b.requests == []


@pytest_twisted.ensureDeferred
async def test_embeddings_through_a_fallback_carry_the_clients_model_name(gw, refused, ups):
    _, b, _ = ups
    backup = await new_model(gw, b.base_url, "openai/text-embedding-backup")
    name = await new_model(gw, refused, "openai/text-embedding-zero", fallbacks=[backup])
    key = await gw.add_key([name, backup])
    status, headers, raw = await gw.chat(key, {"model": name, "input": ["one", "two"]}, EMBEDDINGS)
    body = json.loads(raw)
    assert status == 200, body
    assert body["model"] == name and len(body["data"]) == 2
    assert headers["x-gateway-attempts"] == "2"
    (seen,) = b.requests
    assert (seen.path, seen.json["model"]) == (EMBEDDINGS, "text-embedding-backup")


# -- 6. everything failed ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_when_every_attempt_failed_the_last_error_is_answered(gw, ups):
    a, b, _ = ups
    program(a, 500, upstream_error("boom a"))
    program(b, 500, upstream_error("boom b"))
    name = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    error = error_of(body)
    assert (status, error["code"], error["type"], error["message"]) == (
        502,
        "provider_error",
        "server_error",
        "Provider error: upstream returned status 500: boom b",
    )
    assert headers["x-gateway-attempts"] == "2"  # default retries: each deployment once
    line = await logged(gw, headers)
    assert (line["status"], line["end"]) == ("502", "upstream_error")
    assert (line["attempts"], line["target"]) == ("2", f"{name}#1")
    assert await attempts_of(gw, name) == {("0", "500"): 1, ("1", "500"): 1}


@pytest_twisted.ensureDeferred
async def test_attempts_are_one_plus_retries(gw, ups):
    a, b, _ = ups
    program(a, 503, None)
    program(b, 500, upstream_error("boom b"))
    name = await new_model(
        gw, a.base_url, targets=[target(b.base_url, priority=1)], routing={"retries": 4}
    )
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert headers["x-gateway-attempts"] == "5"
    assert len(a.requests) + len(b.requests) == 5 and a.requests and b.requests
    line = await logged(gw, headers)
    last = {f"{name}#0": "status 503", f"{name}#1": "status 500: boom b"}[line["target"]]
    assert (status, error_of(body)["message"]) == (502, f"Provider error: upstream returned {last}")
    single = await new_model(gw, a.base_url, routing={"retries": 2})
    key = await gw.add_key([single])
    status, headers, body = await ask(gw, key, single)
    assert (status, headers["x-gateway-attempts"]) == (502, "3")
    assert await attempts_of(gw, single) == {("0", "503"): 3}


@pytest_twisted.ensureDeferred
async def test_a_request_refused_before_any_attempt_has_no_attempts_header(gw, ups):
    a, _, _ = ups
    name = await new_model(gw, a.base_url, rate_limit={"rpm": 1})
    key = await gw.add_key([name])
    status, headers, _ = await ask(gw, key, name)
    assert (status, headers["x-gateway-attempts"]) == (200, "1")
    status, headers, _ = await ask(gw, key, name)
    assert status == 429 and "x-gateway-attempts" not in headers
    status, headers, _ = await ask(gw, key, "rt-no-such-model")
    assert status == 400 and "x-gateway-attempts" not in headers


# -- 7. providers and clients --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_anthropic_deployment_backs_an_openai_one(gw, refused, ups):
    a, _, _ = ups
    claude = target(a.base_url, "anthropic/claude-test-20250101", priority=1)
    name = await new_model(gw, refused, targets=[claude])
    key = await gw.add_key([name])
    status, headers, body = await ask(gw, key, name)
    assert (status, headers["x-gateway-attempts"]) == (200, "2"), body
    assert body["object"] == "chat.completion"
    assert (body["id"], body["model"]) == ("msg_mock", "claude-test-20250101")
    assert body["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 7
    (seen,) = a.requests
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == claude["provider_config"]["api_key"]
    result = await stream(gw, key, name)
    assert (result.status, result.headers["x-gateway-attempts"]) == (200, "2")
    assert result.data[-1] == "[DONE]"
    chunks = result.json_chunks
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == DEFAULT_CONTENT


@pytest_twisted.ensureDeferred
async def test_the_openai_sdk_sees_a_normal_answer_when_deployment_0_fails(gw, refused, ups):
    a, b, _ = ups
    name = await new_model(gw, refused, targets=[target(b.base_url, priority=1)])
    cut = await new_model(gw, a.base_url, targets=[target(b.base_url, priority=1)])
    a.set_sse(CHAT, [], end="cut")
    key = await gw.add_key([name, cut])
    client = openai.OpenAI(api_key=key, base_url=gw.proxy + "/v1", max_retries=0, timeout=10)
    messages = [{"role": "user", "content": "hi"}]
    raw = await threads.deferToThread(
        client.chat.completions.with_raw_response.create, model=name, messages=messages
    )
    assert raw.headers["x-gateway-attempts"] == "2"
    completion = raw.parse()
    assert completion.model == "gpt-one"
    assert completion.choices[0].message.content == DEFAULT_CONTENT

    def streamed() -> tuple[str, str]:
        response = client.chat.completions.with_raw_response.create(
            model=cut, messages=messages, stream=True
        )
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
        return response.headers["x-gateway-attempts"], text

    assert await threads.deferToThread(streamed) == ("2", DEFAULT_CONTENT)
    assert len(a.requests) == 1 and len(b.requests) == 2


# -- 8. the Admin API ----------------------------------------------------------------------


def schema_error(pointer: str, text: str) -> dict[str, str]:
    return {
        "error_msg": f'JSON schema validation error: property "{pointer}" validation failed: {text}'
    }


async def stored(gw, id: str) -> tuple[int, str, Any]:
    """GET of a model by id: (status, its key, its document as stored)."""
    status, body = await gw.aadmin("GET", f"/aisix/admin/models/{id}")
    assert set(body) == {"key", "value", "created_index", "modified_index"}, body
    return status, body["key"], body["value"]


GOOD_TARGET = {"model": "mock/t", "provider_config": {}}

INVALID = [
    ({"routing": {"retries": 11}}, "/routing/retries", "11 is greater than the maximum of 10"),
    ({"weight": 0}, "/weight", "0 is less than the minimum of 1"),
    (
        {"targets": [{**GOOD_TARGET, "weight": 0}]},
        "/targets/0/weight",
        "0 is less than the minimum of 1",
    ),
    (
        {"targets": [{**GOOD_TARGET, "priority": 101}]},
        "/targets/0/priority",
        "101 is greater than the maximum of 100",
    ),
    (
        {"routing": {"strategy": "random"}},
        "/routing/strategy",
        '"random" is not one of ["weighted","least_busy"]',
    ),
    (
        {"routing": {"retry_on": [400]}},
        "/routing/retry_on/0",
        "400 is a client error, which is never retried",
    ),
    ({"targets": [{"model": "mock/t"}]}, "/targets/0", '"provider_config" is a required property'),
    (
        {"targets": [{**GOOD_TARGET, "colour": "red"}]},
        "/targets/0",
        "Additional properties are not allowed ('colour' was unexpected)",
    ),
    (
        {"targets": [{"model": "openai/gpt", "provider_config": {}}]},
        "/targets/0/provider_config",
        '"api_key" is a required property',
    ),
    (
        {"routing": {"cooldown": {"failures": 0}}},
        "/routing/cooldown/failures",
        "0 is less than the minimum of 1",
    ),
    ({"fallbacks": [""]}, "/fallbacks/0", '"" is shorter than 1 character'),
]


@pytest.mark.parametrize("fields, pointer, text", INVALID, ids=[c[1] for c in INVALID])
@pytest_twisted.ensureDeferred
async def test_invalid_routing_fields_are_a_400_schema_error(gw, fields, pointer, text):
    doc = {"name": f"rt-bad-{uuid.uuid4().hex[:8]}", "model": "mock/x", "provider_config": {}}
    status, body = await gw.aadmin("POST", "/aisix/admin/models", {**doc, **fields})
    assert (status, body) == (400, schema_error(pointer, text))
    _, models = await gw.aadmin("GET", "/aisix/admin/models")
    assert doc["name"] not in json.dumps(models)


@pytest_twisted.ensureDeferred
async def test_a_model_is_stored_and_read_back_with_its_routing_fields(gw, ups):
    a, _, _ = ups
    doc = {
        "name": f"rt-{uuid.uuid4().hex[:8]}",
        "model": "openai/gpt-4.1-mini",
        "provider_config": pc(a.base_url),
        "timeout": 30000,
        "targets": [
            {**target(a.base_url, "openai/gpt-4.1-mini"), "weight": 3},
            {**target(a.base_url, "anthropic/claude-sonnet-4-5"), "priority": 1, "timeout": 60000},
        ],
        "weight": 1,
        "routing": {
            "strategy": "weighted",
            "retries": 2,
            "retry_on": ["connect", "timeout", "auth", 429, 500, 502, 503, 504],
            "cooldown": {"failures": 3, "window_ms": 60000, "duration_ms": 30000},
        },
        "fallbacks": ["gpt-backup"],
    }
    status, body = await gw.aadmin("POST", "/aisix/admin/models", doc)
    assert status == 201, body
    assert body["value"] == doc
    id = body["key"].split("/")[-1]
    assert await stored(gw, id) == (200, f"/models/{id}", doc)


@pytest_twisted.ensureDeferred
async def test_a_model_without_routing_fields_is_stored_and_served_as_before(gw, ups):
    a, _, _ = ups
    doc = {"name": f"rt-{uuid.uuid4().hex[:8]}", "model": "openai/gpt-plain"}
    doc["provider_config"] = pc(a.base_url)
    status, body = await gw.aadmin("POST", "/aisix/admin/models", doc)
    assert status == 201, body
    id = body["key"].split("/")[-1]
    assert await stored(gw, id) == (200, f"/models/{id}", doc)
    key = await gw.add_key([doc["name"]])
    status, headers, answer = await ask(gw, key, doc["name"])
    assert (status, answer["model"], headers["x-gateway-attempts"]) == (200, "gpt-plain", "1")
    line = await logged(gw, headers)
    assert (line["attempts"], line["target"]) == ("1", f"{doc['name']}#0")
