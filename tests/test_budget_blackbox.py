"""Issue 17 black-box: prices and budgets against the real gateway process,
a real mock upstream that reports usage, and (for two gateways) a real Redis.

The remaining budget is read the way a client can: ``x-budget-remaining-usd``
of a probe request too dear to fit (its 429 says what is left, nothing
reserved), and the settled spend from ``twisted_gw_spend_usd_total`` of
``GET /metrics``; after every way a request can end, the two add up to the
budget."""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet import reactor as the_reactor

from tests.conftest import secret, start_gateway
from tests.streamcheck import counted_gateway, wait_finalized
from tests.support.gateway import treq_json, treq_stream
from tests.support.mock_upstream import chat_chunk, chunks_json, sse_event
from tests.support.redis_server import RedisServer

CHAT = "/v1/chat/completions"
# USD per million tokens, dear enough that one request moves the micro-USD digits
PRICE = {"input_per_mtok": 1000, "output_per_mtok": 2000}
# the gateway's prompt estimate of one user message "hi" (twisted_gw.tokens): 12 tokens
PROMPT = 12
MAX_TOKENS = 50
# a request's reservation: 12 * 1000 + 50 * 2000 USD/Mtok*tokens = 0.112 USD
RESERVATION = (PROMPT * 1000 + MAX_TOKENS * 2000) / 1e6


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from counted_gateway(tmp_path_factory, "budget", upstream_timeout=5)


@pytest.fixture(scope="module")
def models(gw, upstream):
    async def build():
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        await gw.add_model("b-gpt", "openai/gpt-b", pc, pricing=PRICE)
        await gw.add_model("b-fast", "openai/gpt-b", pc, pricing=PRICE, timeout=300)
        await gw.add_model("b-free", "openai/gpt-b", pc)

    pytest_twisted.blockon(defer.ensureDeferred(build()))


async def budget_key(gw, max_usd: float, period: str = "month", **extra) -> str:
    key = secret()
    doc = {
        "key": key,
        "allowed_models": ["b-gpt", "b-fast", "b-free"],
        "budget": {"max_usd": max_usd, "period": period},
        **extra,
    }
    status, body = await gw.aadmin("POST", "/aisix/admin/apikeys", doc)
    assert status == 201, body
    return key


def chat_doc(model: str = "b-gpt", stream: bool = False, max_tokens: int = MAX_TOKENS) -> dict:
    return {
        "model": model,
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hi"}],
    }


def usage(completion: int = MAX_TOKENS) -> dict:
    return {
        "prompt_tokens": PROMPT,
        "completion_tokens": completion,
        "total_tokens": PROMPT + completion,
    }


def cost(completion: int = MAX_TOKENS) -> float:
    return (PROMPT * 1000 + completion * 2000) / 1e6


def answer(completion: int = MAX_TOKENS) -> dict:
    return {
        "id": "chatcmpl-b",
        "object": "chat.completion",
        "model": "gpt-b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": usage(completion),
    }


def stream_events(completion: int = MAX_TOKENS, gap_chunks: int = 3) -> list[bytes]:
    chunks = [chat_chunk(role="assistant", content="")]
    chunks += [chat_chunk("word ") for _ in range(gap_chunks)]
    chunks += [chat_chunk(finish_reason="stop"), chat_chunk(usage=usage(completion))]
    return [sse_event(c) for c in chunks]


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def sample(gw, series: str) -> float | None:
    """One sample of ``GET /metrics`` (the series with its labels); None if absent."""
    _, _, body = await treq_json("GET", gw.admin + "/metrics")
    match = re.search("^" + re.escape(series) + r" (\S+)$", body.decode(), re.MULTILINE)
    return float(match.group(1)) if match else None


async def spent(gw, model: str = "b-gpt") -> float:
    """``twisted_gw_spend_usd_total{model}`` now."""
    return await sample(gw, f'twisted_gw_spend_usd_total{{model="{model}"}}') or 0.0


async def remaining(gw, key: str) -> float:
    """What the key has left, read from the 429 of a request too dear to fit."""
    status, h, body = await gw.chat(key, chat_doc(max_tokens=2_000_000_000))
    assert status == 429, body
    assert json.loads(body)["error"]["code"] == "budget_exceeded"
    return float(h["x-budget-remaining-usd"])


async def assert_budget_adds_up(gw, key: str, budget: float, spent_before: float) -> float:
    """Remaining == budget - what this key's requests settled (micro-USD
    rounding of the header aside); the settled spend."""
    settled = await spent(gw) - spent_before
    assert await sample(gw, "twisted_gw_budget_reservations_held") == 0  # none leaked
    left = await remaining(gw, key)
    assert abs(left - max(budget - settled, 0)) <= 1.5e-6, (left, budget, settled)
    return settled


# -- the header, the 403 and the 429 ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_budgeted_200_carries_what_is_left_after_its_reservation(gw, models, fresh_upstream):
    fresh_upstream.set_json(CHAT, answer())
    key = await budget_key(gw, 10)
    before = await spent(gw)
    status, h, body = await gw.chat(key, chat_doc())
    assert status == 200, body
    assert h["x-budget-remaining-usd"] == f"{10 - RESERVATION:.6f}" == "9.888000"
    await wait_finalized(gw.process, h["x-request-id"])
    assert await assert_budget_adds_up(gw, key, 10, before) == pytest.approx(cost())


@pytest_twisted.ensureDeferred
async def test_key_without_budget_is_unaffected_and_its_spend_is_still_counted(
    gw, models, fresh_upstream
):
    fresh_upstream.set_json(CHAT, answer())
    key = await gw.add_key(["b-gpt", "b-free"])
    before = await spent(gw)
    for model in ("b-gpt", "b-free"):
        status, h, _ = await gw.chat(key, chat_doc(model, max_tokens=2_000_000_000))
        assert status == 200 and "x-budget-remaining-usd" not in h
        await wait_finalized(gw.process, h["x-request-id"])
    assert await spent(gw) - before == pytest.approx(cost())
    assert await spent(gw, "b-free") == 0


@pytest_twisted.ensureDeferred
async def test_model_without_a_price_is_refused_403_for_a_budgeted_key(gw, models, fresh_upstream):
    key = await budget_key(gw, 3)
    status, h, body = await gw.chat(key, chat_doc("b-free", stream=True))
    assert status == 403 and h["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert (error["code"], error["type"]) == ("model_price_missing", "invalid_request_error")
    assert error["message"].startswith("Model 'b-free' has no pricing; API key ID: ")
    assert h["x-budget-remaining-usd"] == "3.000000"
    assert fresh_upstream.requests == []


@pytest_twisted.ensureDeferred
async def test_exhausted_budget_is_429_with_retry_after_and_what_is_left(
    gw, models, fresh_upstream
):
    key = await budget_key(gw, 0.1, period="day")
    status, h, body = await gw.chat(key, chat_doc(stream=True))  # 0.112 > 0.1
    assert status == 429 and h["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "rate_limit_error")
    assert error["message"].endswith(
        "Limited on day budget, current limit: 0.100000 USD, remaining: 0.100000 USD,"
        " this request may cost up to 0.112000 USD"
    )
    assert h["x-budget-remaining-usd"] == "0.100000"
    assert 0 < int(h["retry-after"]) <= 86400
    assert fresh_upstream.requests == []
    status, h, _ = await gw.chat(await budget_key(gw, 0, period="total"), chat_doc())
    assert status == 429 and "retry-after" not in h


# -- every way a request ends gives its reservation back ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stream_cut_before_its_usage_settles_an_estimate(gw, models, fresh_upstream):
    events = [sse_event(c) for c in chunks_json("abcdefgh", usage=False)[:2]]
    fresh_upstream.set_sse(CHAT, events, end="cut")
    key = await budget_key(gw, 5)
    before = await spent(gw)
    result = await treq_stream(
        "POST", gw.proxy + CHAT, headers=headers(key), json_body=chat_doc(stream=True)
    )
    assert result.status == 200 and "[DONE]" not in result.data
    assert result.headers["x-budget-remaining-usd"] == f"{5 - RESERVATION:.6f}"
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[0] == "upstream_cut"
    # estimated: the prompt (12 tokens) and 8 relayed characters (2 tokens), never 0
    settled = await assert_budget_adds_up(gw, key, 5, before)
    assert settled == pytest.approx((PROMPT * 1000 + 2 * 2000) / 1e6)


@pytest_twisted.ensureDeferred
async def test_timeout_before_the_answer_settles_the_prompt_estimate(gw, models, fresh_upstream):
    fresh_upstream.set_delay(CHAT, 2)
    key = await budget_key(gw, 5)
    before = await spent(gw, "b-fast")
    status, h, body = await gw.chat(key, chat_doc("b-fast"))
    assert status == 504 and "x-budget-remaining-usd" in h, body
    await wait_finalized(gw.process, h["x-request-id"])
    settled = await spent(gw, "b-fast") - before
    assert settled == pytest.approx(PROMPT * 1000 / 1e6)
    assert await remaining(gw, key) == pytest.approx(5 - settled, abs=1.5e-6)


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_stream_settles_an_estimate(gw, models, fresh_upstream):
    fresh_upstream.set_sse(CHAT, stream_events(gap_chunks=20), gap=0.1, end="hang")
    key = await budget_key(gw, 5)
    before = await spent(gw)
    gone = fresh_upstream.wait_for_disconnect(timeout=5)
    result = await treq_stream(
        "POST",
        gw.proxy + CHAT,
        headers=headers(key),
        json_body=chat_doc(stream=True),
        stop_when=lambda body: body.count(b"data:") >= 3,
    )
    assert result.ended == "stopped"
    await gone
    assert (await wait_finalized(gw.process, result.headers["x-request-id"]))[0] == "client_gone"
    settled = await assert_budget_adds_up(gw, key, 5, before)
    assert 0 < settled < RESERVATION


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_upstream_error_releases_the_whole_reservation(gw, models, fresh_upstream, stream):
    fresh_upstream.set_json(CHAT, {"error": {"message": "down", "type": "x"}}, status=500)
    key = await budget_key(gw, 5)
    before = await spent(gw)
    status, h, _ = await gw.chat(key, chat_doc(stream=stream))
    assert status == 502 and h["x-budget-remaining-usd"] == f"{5 - RESERVATION:.6f}"
    await wait_finalized(gw.process, h["x-request-id"])
    assert await assert_budget_adds_up(gw, key, 5, before) == 0


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.parametrize("completion", [MAX_TOKENS, MAX_TOKENS + 10])
@pytest_twisted.ensureDeferred
async def test_budget_holds_under_64_concurrent_streams(gw, models, fresh_upstream, completion):
    """64 streams at once on a budget of 1 USD, each reserving 0.112 USD; the
    upstream reports the cap (the honest worst case) or 10 tokens over it
    (an upstream that ignores max_tokens). The settled spend exceeds the
    budget by at most one reservation (with honest usage: not at all)."""
    fresh_upstream.set_sse(CHAT, stream_events(completion), gap=0.05)
    budget = 1.0
    key = await budget_key(gw, budget)
    before = await spent(gw)

    async def one() -> tuple[int, dict]:
        result = await treq_stream(
            "POST",
            gw.proxy + CHAT,
            headers=headers(key),
            json_body=chat_doc(stream=True),
            timeout=30,
        )
        return result.status, result.headers

    results = await defer.gatherResults([defer.ensureDeferred(one()) for _ in range(64)])
    statuses = [s for s, _ in results]
    ok = statuses.count(200)
    assert statuses.count(429) == 64 - ok and ok == 8  # 8 * 0.112 = 0.896 fits, 9 do not
    for _, h in results:
        assert float(h["x-budget-remaining-usd"]) >= 0
    waited = 0.0  # the last finalize may land just after its client saw the end
    while await spent(gw) - before < ok * cost(completion) - 1e-9 and waited < 5:
        await task.deferLater(the_reactor, 0.05, lambda: None)
        waited += 0.05
    settled = await assert_budget_adds_up(gw, key, budget, before)
    overspend = settled - budget
    print(
        f"\n64 concurrent streams, completion {completion}: {ok} served, settled"
        f" {settled:.6f} USD of {budget:.6f}, overspend {overspend:+.6f} USD"
        f" (one reservation: {RESERVATION:.6f})"
    )
    assert settled == pytest.approx(ok * cost(completion))
    assert overspend <= RESERVATION
    if completion <= MAX_TOKENS:
        assert overspend <= 0


# -- the Admin API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"pricing": {"input_per_mtok": 1}},
            'property "/pricing" validation failed: "output_per_mtok" is a required property',
        ),
        (
            {"pricing": {"input_per_mtok": -1, "output_per_mtok": 1}},
            'property "/pricing/input_per_mtok" validation failed: -1 is less than the minimum of 0',
        ),
        (
            {
                "pricing": {
                    "input_per_mtok": 1,
                    "output_per_mtok": 1,
                    "cached_input_per_mtok": 2000000,
                }
            },
            (
                'property "/pricing/cached_input_per_mtok" validation failed: 2000000 is greater than'
                " the maximum of 1000000"
            ),
        ),
        (
            {"pricing": {"input_per_mtok": "1", "output_per_mtok": 1}},
            'property "/pricing/input_per_mtok" validation failed: "1" is not of type "number"',
        ),
        (
            {"pricing": {"input_per_mtok": 1, "output_per_mtok": 1, "currency": "EUR"}},
            (
                'property "/pricing" validation failed: Additional properties are not allowed'
                " ('currency' was unexpected)"
            ),
        ),
        (
            {
                "targets": [
                    {"model": "mock/y", "provider_config": {}, "pricing": {"output_per_mtok": 1}}
                ]
            },
            'property "/targets/0/pricing" validation failed: "input_per_mtok" is a required property',
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_admin_api_refuses_bad_pricing(gw, doc, message):
    status, body = await gw.aadmin(
        "POST",
        "/aisix/admin/models",
        {"name": secret("m"), "model": "mock/x", "provider_config": {}, **doc},
    )
    assert (status, body) == (400, {"error_msg": "JSON schema validation error: " + message})


@pytest_twisted.ensureDeferred
async def test_admin_api_refuses_bad_pricing_on_the_provider_wire(gw):
    status, body = await gw.aadmin(
        "POST",
        "/aisix/admin/models",
        {"name": secret("m"), "provider_id": "p", "model": "x", "pricing": {"input_per_mtok": 1}},
    )
    assert (status, body) == (
        400,
        {
            "error_msg": "JSON schema validation error: "
            'property "/pricing" validation failed: "output_per_mtok" is a required property'
        },
    )


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({}, 'property "/budget" validation failed: "max_usd" is a required property'),
        (
            {"max_usd": 10**10},
            (
                'property "/budget/max_usd" validation failed: 10000000000 is greater than the'
                " maximum of 1000000000"
            ),
        ),
        (
            {"max_usd": 5, "period": "year"},
            (
                'property "/budget/period" validation failed: "year" is not one of'
                ' ["day","week","month","total"]'
            ),
        ),
        (
            {"max_usd": -0.5},
            'property "/budget/max_usd" validation failed: -0.5 is less than the minimum of 0',
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_admin_api_refuses_bad_budgets(gw, budget, message):
    status, body = await gw.aadmin(
        "POST", "/aisix/admin/apikeys", {"key": secret(), "allowed_models": [], "budget": budget}
    )
    assert (status, body) == (400, {"error_msg": "JSON schema validation error: " + message})


@pytest_twisted.ensureDeferred
async def test_documents_with_pricing_and_budget_are_stored_as_written(gw):
    model = {
        "name": secret("m"),
        "model": "mock/x",
        "provider_config": {},
        "pricing": {"input_per_mtok": 0.15, "output_per_mtok": 0.6, "cached_input_per_mtok": 0.075},
    }
    status, body = await gw.aadmin("POST", "/aisix/admin/models", model)
    assert status == 201 and body["value"] == model
    key = {"key": secret(), "allowed_models": [], "budget": {"max_usd": 25}}
    status, body = await gw.aadmin("POST", "/aisix/admin/apikeys", key)
    assert status == 201 and body["value"] == key


# -- two gateways, one budget -------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest_twisted.ensureDeferred
async def test_two_gateways_share_one_budget_through_redis(tmp_path_factory, redis, upstream):
    upstream.reset()
    upstream.set_json(CHAT, answer())
    gateways = [
        start_gateway(
            tmp_path_factory.mktemp(name),
            extra={
                "deployment": {"redis": {"url": redis.url, "prefix": "bb-budget", "timeout": 1}}
            },
        )
        for name in ("budget-a", "budget-b")
    ]
    a, b = gateways
    try:
        key = secret()
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        for g in gateways:  # each has its own embedded store: the same ids on both
            status, _ = await g.aadmin(
                "PUT",
                "/aisix/admin/models/shared-model",
                {"name": "b-gpt", "model": "openai/gpt-b", "provider_config": pc, "pricing": PRICE},
            )
            assert status == 201
            status, _ = await g.aadmin(
                "PUT",
                "/aisix/admin/apikeys/shared-budget",
                {
                    "key": key,
                    "allowed_models": ["b-gpt"],
                    "budget": {"max_usd": 0.25, "period": "week"},
                },
            )
            assert status == 201
        seen = []
        for g in (a, b, a, b):
            status, h, body = await g.chat(key, chat_doc())
            seen.append((status, h.get("x-budget-remaining-usd")))
        # 0.25 - 0.112 reserved; then 0.112 settled, 0.112 more reserved; then
        # 0.224 settled and 0.026 left, which no 0.112 request fits in
        assert seen == [
            (200, "0.138000"),
            (200, "0.026000"),
            (429, "0.026000"),
            (429, "0.026000"),
        ]
        assert json.loads(body)["error"]["message"].startswith(
            "Budget exceeded for API key ID: shared-budget. Limited on week budget"
        )
        assert 0 < int(h["retry-after"]) <= 7 * 86400
    finally:
        for g in gateways:
            g.process.stop()


@pytest_twisted.ensureDeferred
async def test_two_gateways_hold_one_budget_under_64_concurrent_streams(
    tmp_path_factory, redis, upstream
):
    upstream.reset()
    upstream.set_sse(CHAT, stream_events(), gap=0.05)
    gateways = [
        start_gateway(
            tmp_path_factory.mktemp(name),
            extra={"deployment": {"redis": {"url": redis.url, "prefix": "bb-budget-c"}}},
        )
        for name in ("budget-c", "budget-d")
    ]
    try:
        key = secret()
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        for g in gateways:
            for path, doc in (
                (
                    "/aisix/admin/models/shared-model",
                    {
                        "name": "b-gpt",
                        "model": "openai/gpt-b",
                        "provider_config": pc,
                        "pricing": PRICE,
                    },
                ),
                (
                    "/aisix/admin/apikeys/shared-budget-c",
                    {"key": key, "allowed_models": ["b-gpt"], "budget": {"max_usd": 1}},
                ),
            ):
                status, _ = await g.aadmin("PUT", path, doc)
                assert status == 201

        async def one(g) -> int:
            result = await treq_stream(
                "POST",
                g.proxy + CHAT,
                headers=headers(key),
                json_body=chat_doc(stream=True),
                timeout=30,
            )
            return result.status

        statuses = await defer.gatherResults(
            [defer.ensureDeferred(one(gateways[i % 2])) for i in range(64)]
        )
        assert statuses.count(200) == 8 and statuses.count(429) == 56
        waited = 0.0
        while waited < 5:
            settled = sum([await spent(g) for g in gateways])
            if settled >= 8 * cost() - 1e-9:
                break
            await task.deferLater(the_reactor, 0.05, lambda: None)
            waited += 0.05
        print(f"\ntwo gateways, 64 concurrent streams: settled {settled:.6f} USD of 1.000000")
        assert settled == pytest.approx(8 * cost())
        for g in gateways:
            assert await remaining(g, key) == pytest.approx(1 - settled, abs=1.5e-6)
    finally:
        for g in gateways:
            g.process.stop()
