"""Issue 17 in memory: prices and costs, UTC windows, the in-memory budget
store, and the budget hook in the real pipeline (twisted_gw.testing) on a
Clock, with an upstream the test answers by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from twisted_gw.config.entities import Pricing, parse_apikey, parse_model
from twisted_gw.errors import provider_error
from twisted_gw.spend.memory import MemoryBudgetStore
from twisted_gw.spend.prices import (
    content_chars,
    cost_nano,
    estimated_prompt,
    max_output,
    usage_counts,
    usd_text,
    worst_case_nano,
)
from twisted_gw.spend.windows import window
from twisted_gw.testing import MemoryGateway

CHAT = "/v1/chat/completions"
PRICE = {"input_per_mtok": 1, "output_per_mtok": 2}
# chat_doc's prompt estimate: ceil(len('[{"role":"user","content":"hi"}]') / 4) + 4
PROMPT_ESTIMATE = 12
# its worst case on PRICE with the default 4096 output tokens: (12 * 1 + 4096 * 2) * 1000 nano-USD
WORST = (PROMPT_ESTIMATE * 1 + 4096 * 2) * 1000


def at(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# -- prices and cost -------------------------------------------------------------------


def test_cached_prompt_tokens_cost_the_cached_price_or_else_the_input_price():
    priced = Pricing(2, 8, 0.5)
    # 600 uncached * 2 + 400 cached * 0.5 + 100 * 8 = 2200 USD/Mtok*tokens = 0.0022 USD
    assert cost_nano(priced, 1000, 100, cached=400) == 2_200_000
    assert cost_nano(Pricing(2, 8), 1000, 100, cached=400) == 2_800_000
    assert cost_nano(priced, 10, 0, cached=50) == 5_000  # never more cached than prompt


def test_a_priced_token_is_never_free_and_free_prices_cost_nothing():
    assert cost_nano(Pricing(0.15, 0.6), 1, 0) == 150
    assert cost_nano(Pricing(0.0000001, 0), 1, 0) == 1  # rounded up to a nano-USD
    assert cost_nano(Pricing(0, 0), 10**6, 10**6) == 0


def test_usage_counts_read_openai_and_anthropic_cached_tokens():
    openai = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    assert usage_counts(openai) == (1000, 100, 0)
    openai["prompt_tokens_details"] = {"cached_tokens": 400}
    assert usage_counts(openai) == (1000, 100, 400)
    # the native Messages path's counts (twisted_gw.providers.anthropic.native_usage)
    native = {"prompt_tokens": 1000, "completion_tokens": 100, "cache_read_input_tokens": 400}
    assert usage_counts(native) == (1000, 100, 400)
    assert usage_counts({"prompt_tokens": 7, "total_tokens": 7}) == (7, 0, 0)  # embeddings
    assert usage_counts(None) is None and usage_counts({"output_tokens": 3}) is None


def test_worst_case_is_the_dearest_deployment_at_the_output_cap():
    model = parse_model(
        "m",
        {
            "name": "m",
            "model": "mock/a",
            "provider_config": {},
            "pricing": PRICE,
            "targets": [
                {"model": "mock/b", "provider_config": {}},  # inherits PRICE
                {
                    "model": "mock/c",
                    "provider_config": {},
                    "pricing": {"input_per_mtok": 3, "output_per_mtok": 1},
                },
            ],
        },
    )
    assert [d.pricing for d in model.deployments] == [Pricing(1, 2), Pricing(1, 2), Pricing(3, 1)]
    # 100 prompt + 1000 output: 1*100 + 2*1000 = 2100 vs 3*100 + 1*1000 = 1300
    assert worst_case_nano(model.deployments, 100, 1000) == 2_100_000
    assert worst_case_nano(model.deployments, 10_000, 10) == 30_010_000


def test_output_cap_and_prompt_estimate_of_each_wire():
    assert max_output({"max_completion_tokens": 7, "max_tokens": 9}, 4096) == 7
    assert max_output({"max_tokens": 9}, 4096) == 9  # chat and the Messages API
    assert max_output({"max_tokens": 0}, 4096) == 4096 and max_output({}, 50) == 50
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert estimated_prompt(chat) == PROMPT_ESTIMATE
    assert estimated_prompt({"input": "abcdefgh"}, embeddings=True) == 2


def test_relayed_characters_of_chat_and_anthropic_chunks():
    chunk = {
        "choices": [
            {
                "delta": {
                    "content": "abcd",
                    "tool_calls": [{"function": {"arguments": '{"a":1}'}}],
                }
            }
        ]
    }
    assert content_chars(chunk) == 4 + 7
    assert content_chars({"type": "content_block_delta", "delta": {"text": "xyz"}}) == 3
    assert content_chars({"choices": [], "usage": {}}) == 0


def test_remaining_text_is_micro_usd_rounded_down_and_clamped_at_zero():
    assert usd_text(12_345_678_999) == "12.345678"
    assert usd_text(0) == "0.000000" and usd_text(-5_000_000) == "0.000000"
    assert usd_text(10**18) == "1000000000.000000"


# -- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", at(2024, 2, 29, 23, 59, 59), at(2024, 2, 29), at(2024, 3, 1)),
        ("day", at(2024, 3, 1), at(2024, 3, 1), at(2024, 3, 2)),
        # ISO weeks start on Monday 00:00 UTC, across a year's end too
        ("week", at(2024, 12, 29, 23, 0), at(2024, 12, 23), at(2024, 12, 30)),
        ("week", at(2024, 12, 30), at(2024, 12, 30), at(2025, 1, 6)),
        ("week", at(2025, 1, 5, 23, 59, 59), at(2024, 12, 30), at(2025, 1, 6)),
        ("week", at(1970, 1, 1), at(1969, 12, 29), at(1970, 1, 5)),
        ("month", at(2024, 12, 31, 23, 59, 59), at(2024, 12, 1), at(2025, 1, 1)),
        ("month", at(2025, 1, 1), at(2025, 1, 1), at(2025, 2, 1)),
        ("month", at(2024, 2, 15), at(2024, 2, 1), at(2024, 3, 1)),
        ("month", at(2023, 2, 28, 12), at(2023, 2, 1), at(2023, 3, 1)),
        ("month", at(2024, 4, 30, 23, 59), at(2024, 4, 1), at(2024, 5, 1)),
    ],
)
def test_windows_are_utc_calendar_day_iso_week_and_month(period, now, start, end):
    w = window(period, now)
    assert (w.start, w.end) == (start, end)
    assert datetime.fromtimestamp(w.start, UTC).weekday() == 0 or period != "week"


def test_retry_after_counts_whole_seconds_to_the_window_end():
    month = window("month", at(2024, 12, 31, 23, 59, 59) + 0.5)
    assert month.retry_after(at(2024, 12, 31, 23, 59, 59) + 0.5) == 1
    day = window("day", at(2024, 6, 1, 12))
    assert day.retry_after(at(2024, 6, 1, 12)) == 12 * 3600
    total = window("total", at(2024, 6, 1))
    assert total.retry_after(at(2024, 6, 1)) is None and total.ttl(0) == 0
    assert day.ttl(at(2024, 6, 1, 12)) == 12 * 3600 + 86400


def test_a_window_that_rolled_over_is_a_new_name():
    assert window("day", at(2024, 6, 1, 23, 59)).name != window("day", at(2024, 6, 2)).name
    assert window("total", 0).name == window("total", at(2030, 1, 1)).name == "total:0"


# -- the in-memory store ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def seconds(self) -> float:
        return self.now


def test_store_reserves_within_the_limit_and_settles_each_member_once():
    store = MemoryBudgetStore(FakeClock())
    first = store.reserve_now("k:month:0", "r1", 600, 1000, 100)
    assert (first.ok, first.remaining) == (True, 400)
    refused = store.reserve_now("k:month:0", "r2", 500, 1000, 100)
    assert (refused.ok, refused.remaining) == (False, 400)  # a refusal holds nothing
    assert store.reserved("k:month:0") == 600
    store.settle("k:month:0", "r1", 250, 100)
    assert (store.spent("k:month:0"), store.reserved("k:month:0")) == (250, 0)
    store.settle("k:month:0", "r1", 250, 100)  # a second settle finds nothing
    assert store.spent("k:month:0") == 250 and store.remaining("k:month:0", 1000) == 750
    assert store.held() == 0


def test_store_released_member_costs_nothing_and_top_ups_add_to_a_member():
    store = MemoryBudgetStore(FakeClock())
    store.reserve_now("s", "r", 100, 1000, 0)
    assert store.reserve_now("s", "r", 50, 1000, 0).remaining == 850  # a fallback's top-up
    store.settle("s", "r", 0, 0)  # released: an upstream error
    assert store.remaining("s", 1000) == 1000 and store.reserved("s") == 0


def test_an_exhausted_window_refuses_even_a_free_request_and_never_goes_below_zero():
    store = MemoryBudgetStore(FakeClock())
    store.reserve_now("s", "a", 900, 1000, 0)
    store.settle("s", "a", 1500, 0)  # the upstream ran over its cap
    refused = store.reserve_now("s", "b", 0, 1000, 0)
    assert not refused.ok and refused.remaining == -500
    assert usd_text(refused.remaining) == "0.000000"
    store.settle("s", "never-reserved", 99, 0)
    assert store.reserved("s") == 0 and store.spent("s") == 1500


def test_ended_windows_are_dropped_when_nothing_is_held():
    clock = FakeClock()
    store = MemoryBudgetStore(clock)
    store.reserve_now("old", "a", 10, 100, 50)
    store.settle("old", "a", 10, 50)
    store.reserve_now("held", "b", 10, 100, 50)
    clock.now = 120
    store.reserve_now("new", "c", 1, 100, 50)  # sweeps
    assert store.spent("old") == 0 and store.reserved("held") == 10


# -- the hook in the pipeline ----------------------------------------------------------


@pytest.fixture
def gw() -> MemoryGateway:
    return MemoryGateway()


def chat_doc(model: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def answer(prompt: int = 10, completion: int = 20, cached: int | None = None) -> dict:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
        "usage": usage,
    }


def chunk(content: str) -> dict:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}}],
    }


def budget_key(gw: MemoryGateway, allowed: list[str], max_usd: float = 1, period: str = "month"):
    key = gw.add_key(allowed, budget={"max_usd": max_usd, "period": period})
    api_key = gw.store.snapshot.keys_by_key[key]
    return key, api_key


def left(gw: MemoryGateway, api_key: Any) -> int:
    """The key's nano-USD left in its window now."""
    w = window(api_key.budget.period, gw.clock.seconds())
    return gw.budgets.remaining(f"{api_key.id}:{w.name}", api_key.budget.max_nano)


def last(gw: MemoryGateway):
    return gw.recorder.finalized[-1]


def test_budgeted_request_reserves_its_worst_case_and_settles_to_the_usage(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"])
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    assert left(gw, api_key) == 10**9 - WORST  # held while the upstream works
    gw.provider.calls[-1].answer(answer(10, 20))
    response = gw.result(pending)
    assert response.code == 200
    assert response.headers["x-budget-remaining-usd"] == usd_text(10**9 - WORST) == "0.991796"
    cost = (10 * 1 + 20 * 2) * 1000
    assert left(gw, api_key) == 10**9 - cost
    assert (last(gw).cost_usd, last(gw).cost_estimated) == (cost / 1e9, False)
    assert gw.sample("twisted_gw_spend_usd_total", model="gpt") == pytest.approx(cost / 1e9)


def test_output_cap_of_the_request_bounds_its_reservation(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"])
    pending = gw.post(CHAT, chat_doc("gpt", max_tokens=100), key)
    gw.flush()
    assert left(gw, api_key) == 10**9 - (PROMPT_ESTIMATE + 200) * 1000
    gw.provider.calls[-1].answer(answer())
    gw.result(pending)


def test_cached_tokens_are_charged_at_the_cached_price(gw):
    gw.add_model("gpt", pricing={**PRICE, "cached_input_per_mtok": 0.25})
    key = gw.add_key(["gpt"])
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.provider.calls[-1].answer(answer(1000, 100, cached=800))
    response = gw.result(pending)
    assert "x-budget-remaining-usd" not in response.headers  # no budget: no header
    assert last(gw).cost_usd == pytest.approx((200 * 1 + 800 * 0.25 + 100 * 2) / 1e6)


def test_unpriced_model_costs_nothing_and_has_no_cost(gw):
    gw.add_model("free")
    key = gw.add_key(["free"])
    pending = gw.post(CHAT, chat_doc("free"), key)
    gw.flush()
    gw.provider.calls[-1].answer(answer())
    assert gw.result(pending).code == 200
    ctx = last(gw)
    assert (ctx.cost_usd, ctx.cost_estimated, ctx.priced) == (None, False, False)
    assert gw.sample("twisted_gw_spend_usd_total", model="free") == 0


@pytest.mark.parametrize(
    "fields",
    [
        {},  # no price at all
        {"targets": [{"model": "openai/y", "provider_config": {"api_key": "k"}, "pricing": PRICE}]},
    ],
)
def test_budgeted_key_may_not_use_a_model_without_a_price(gw, fields):
    gw.add_model("free", **fields)
    key, api_key = budget_key(gw, ["free"], max_usd=5)
    response = gw.result(gw.post(CHAT, chat_doc("free"), key))
    assert response.code == 403
    assert response.json()["error"] == {
        "message": f"Model 'free' has no pricing; API key ID: {api_key.id} has a budget and"
        " may only use priced models",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_price_missing",
    }
    assert response.headers["x-budget-remaining-usd"] == "5.000000"
    assert gw.provider.calls == [] and last(gw).cost_usd is None


def test_exhausted_budget_is_a_json_429_with_retry_after_even_for_a_stream(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"], max_usd=0.008, period="day")
    gw.clock.advance(at(1970, 1, 2, 18) - gw.clock.seconds())  # 6 h before the day ends
    response = gw.result(gw.post(CHAT, chat_doc("gpt", stream=True), key))
    assert response.code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == str(6 * 3600)
    assert response.headers["x-budget-remaining-usd"] == "0.008000"
    assert response.json()["error"] == {
        "message": f"Budget exceeded for API key ID: {api_key.id}. Limited on day budget, current"
        " limit: 0.008000 USD, remaining: 0.008000 USD, this request may cost up to 0.008204 USD",
        "type": "rate_limit_error",
        "param": None,
        "code": "budget_exceeded",
    }
    assert gw.provider.calls == [] and last(gw).cost_usd is None
    assert gw.budgets.held() == 0


def test_total_budget_429_has_no_retry_after(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, _ = budget_key(gw, ["gpt"], max_usd=0, period="total")
    response = gw.result(gw.post(CHAT, chat_doc("gpt"), key))
    assert response.code == 429 and "retry-after" not in response.headers
    assert response.headers["x-budget-remaining-usd"] == "0.000000"


def test_request_refused_by_a_rate_limit_reserves_nothing(gw):
    gw.add_model("gpt", pricing=PRICE)
    key = gw.add_key(["gpt"], rate_limit={"rpm": 1}, budget={"max_usd": 1})
    api_key = gw.store.snapshot.keys_by_key[key]
    first = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    second = gw.result(gw.post(CHAT, chat_doc("gpt"), key))
    assert second.code == 429 and second.json()["error"]["code"] == "rate_limit_exceeded"
    assert gw.budgets.held() == 1  # the first request's only
    gw.provider.calls[-1].answer(answer())
    gw.result(first)
    assert gw.budgets.held() == 0 and left(gw, api_key) == 10**9 - 50_000


def stream_started(gw: MemoryGateway, key: str, model: str = "gpt"):
    pending = gw.post(CHAT, chat_doc(model, stream=True), key)
    gw.flush()
    source = gw.provider.calls[-1].stream()
    source.push(chunk("abcdefgh"))  # 8 characters: 2 tokens
    gw.flush()
    return pending, source


def test_stream_cut_before_its_usage_is_an_estimate_and_settles(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"])
    pending, source = stream_started(gw, key)
    source.end(clean=False, detail="connection lost")
    response = gw.result(pending)
    assert response.code == 200 and response.headers["x-budget-remaining-usd"] == "0.991796"
    ctx = last(gw)
    estimate = (PROMPT_ESTIMATE * 1 + 2 * 2) * 1000
    assert (ctx.end_reason, ctx.cost_estimated) == ("upstream_cut", True)
    assert ctx.cost_usd == estimate / 1e9 and left(gw, api_key) == 10**9 - estimate
    assert gw.budgets.held() == 0


def test_stream_with_its_usage_chunk_is_exact(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"])
    pending, source = stream_started(gw, key)
    source.push({"id": "c", "object": "chat.completion.chunk", "choices": [], **answer(3, 4)})
    source.end()
    gw.result(pending)
    assert (last(gw).cost_usd, last(gw).cost_estimated) == ((3 + 8) * 1000 / 1e9, False)
    assert left(gw, api_key) == 10**9 - 11_000


def test_client_gone_mid_stream_is_an_estimate_and_releases_the_rest(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"])
    pending, _ = stream_started(gw, key)
    gw.disconnect()
    with pytest.raises(Exception):  # noqa: B017 - the client's side only sees a lost connection
        gw.result(pending)
    ctx = last(gw)
    assert ctx.end_reason == "client_gone" and ctx.cost_estimated
    assert left(gw, api_key) == 10**9 - (PROMPT_ESTIMATE + 4) * 1000 and gw.budgets.held() == 0


def test_timeout_before_the_answer_charges_the_prompt_estimate(gw):
    gw.add_model("gpt", pricing=PRICE, timeout=1000)
    key, api_key = budget_key(gw, ["gpt"])
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.clock.advance(1.0)
    response = gw.result(pending)
    assert response.code == 504 and "x-budget-remaining-usd" in response.headers
    ctx = last(gw)
    assert ctx.cost_estimated and ctx.cost_usd == PROMPT_ESTIMATE * 1000 / 1e9
    assert left(gw, api_key) == 10**9 - PROMPT_ESTIMATE * 1000 and gw.budgets.held() == 0


def test_upstream_error_costs_nothing_and_releases_the_reservation(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"])
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.provider.calls[-1].fail(provider_error("boom", "connect"))
    response = gw.result(pending)
    assert response.code == 502 and response.headers["x-budget-remaining-usd"] == "0.991796"
    assert (last(gw).cost_usd, last(gw).cost_estimated) == (0.0, False)
    assert left(gw, api_key) == 10**9 and gw.budgets.held() == 0


def test_non_stream_answer_without_usage_is_estimated_from_its_content(gw):
    gw.add_model("gpt", pricing=PRICE)
    key = gw.add_key(["gpt"])
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    doc = answer()
    del doc["usage"]
    gw.provider.calls[-1].answer(doc)
    gw.result(pending)
    # "hello": 5 characters, 2 tokens
    assert last(gw).cost_estimated and last(gw).cost_usd == (PROMPT_ESTIMATE + 4) * 1000 / 1e9


def test_the_deployment_that_answered_decides_the_price(gw):
    dear = {"input_per_mtok": 10, "output_per_mtok": 20}
    gw.add_model(
        "gpt",
        pricing=PRICE,
        targets=[
            {"model": "openai/t1", "provider_config": {"api_key": "k"}, "priority": 1},
            {
                "model": "openai/t2",
                "provider_config": {"api_key": "k"},
                "priority": 2,
                "pricing": dear,
            },
        ],
    )
    key, api_key = budget_key(gw, ["gpt"])
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    # the worst case is the dearest deployment's
    assert left(gw, api_key) == 10**9 - (PROMPT_ESTIMATE * 10 + 4096 * 20) * 1000
    gw.provider.calls[-1].refuse(503)
    gw.flush()
    assert gw.provider.calls[-1].model.index == 1  # inherits the model's price
    gw.provider.calls[-1].refuse(503)
    gw.flush()
    gw.provider.calls[-1].answer(answer(10, 20))
    assert gw.result(pending).code == 200
    assert last(gw).cost_usd == (10 * 10 + 20 * 20) * 1000 / 1e9


def test_fallback_needs_a_price_for_a_budgeted_key_and_tops_up_its_reservation(gw):
    dear = {"input_per_mtok": 10, "output_per_mtok": 20}
    gw.add_model("gpt", pricing=PRICE, fallbacks=["unpriced", "backup"])
    gw.add_model("unpriced")
    gw.add_model("backup", pricing=dear)
    key, api_key = budget_key(gw, ["gpt", "unpriced", "backup"])
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.provider.calls[-1].refuse(503)
    gw.flush()
    assert len(gw.provider.calls) == 2 and gw.provider.calls[-1].model.upstream_model == "x"
    assert left(gw, api_key) == 10**9 - (PROMPT_ESTIMATE * 10 + 4096 * 20) * 1000
    gw.provider.calls[-1].answer(answer(10, 20))
    gw.result(pending)
    assert last(gw).target == "backup#0"
    assert last(gw).cost_usd == 500_000 / 1e9 and left(gw, api_key) == 10**9 - 500_000


def test_budget_too_small_for_a_fallback_skips_it(gw):
    gw.add_model("gpt", pricing=PRICE, fallbacks=["backup"])
    gw.add_model("backup", pricing={"input_per_mtok": 1000, "output_per_mtok": 1000})
    key, api_key = budget_key(gw, ["gpt", "backup"], max_usd=1)
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.provider.calls[-1].refuse(503)
    response = gw.result(pending)
    assert response.code == 502 and len(gw.provider.calls) == 1
    assert left(gw, api_key) == 10**9 and gw.budgets.held() == 0


def test_budget_window_rolls_over_to_a_fresh_budget(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, _ = budget_key(gw, ["gpt"], max_usd=0.009, period="day")
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.provider.calls[-1].answer(answer(1000, 3000))  # 0.007 USD
    gw.result(pending)
    assert gw.result(gw.post(CHAT, chat_doc("gpt"), key)).code == 429
    gw.clock.advance(86400)
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.provider.calls[-1].answer(answer())
    response = gw.result(pending)
    assert response.code == 200 and response.headers["x-budget-remaining-usd"] == "0.000796"


def test_key_documents_with_and_without_budget_round_trip():
    plain = {"key": "sk", "allowed_models": ["a"]}
    assert parse_apikey("k", plain).doc == plain and parse_apikey("k", plain).budget is None
    doc = {**plain, "budget": {"max_usd": 2.5, "period": "week"}}
    assert parse_apikey("k", doc).doc == doc


def test_usage_of_the_anthropic_paths_counts_cache_reads_as_cached():
    from twisted_gw.providers.anthropic import native_usage
    from twisted_gw.providers.anthropic_translate import openai_usage

    anthropic = {"input_tokens": 100, "cache_read_input_tokens": 800, "output_tokens": 50}
    # translated to chat (an anthropic deployment behind /v1/chat/completions)
    assert usage_counts(openai_usage(anthropic)) == (900, 50, 800)
    # native (a Messages client on an anthropic deployment)
    assert usage_counts(native_usage(anthropic)) == (900, 50, 800)


def test_embeddings_reserve_their_input_only_and_cost_their_usage(gw):
    gw.add_model("emb", pricing=PRICE)
    key, api_key = budget_key(gw, ["emb"])
    pending = gw.post("/v1/embeddings", {"model": "emb", "input": "abcdefgh"}, key)
    gw.flush()
    assert left(gw, api_key) == 10**9 - 2 * 1000  # 8 characters, no output
    gw.provider.calls[-1].answer({"object": "list", "data": [], "usage": {"prompt_tokens": 3}})
    assert gw.result(pending).code == 200
    assert left(gw, api_key) == 10**9 - 3000 and last(gw).cost_usd == 3000 / 1e9


@pytest.mark.parametrize(
    ("path", "doc", "cap"),
    [
        (
            "/v1/messages",
            {"max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]},
            30,
        ),
        ("/v1/responses", {"input": "hi", "max_output_tokens": 40}, 40),
    ],
)
def test_messages_and_responses_reserve_their_own_output_caps(gw, path, doc, cap):
    gw.add_model("gpt", pricing=PRICE)
    key, api_key = budget_key(gw, ["gpt"])
    pending = gw.post(path, {"model": "gpt", **doc}, key)
    gw.flush()
    body = gw.provider.calls[-1].body
    assert left(gw, api_key) == 10**9 - (estimated_prompt(body) + 2 * cap) * 1000
    gw.provider.calls[-1].answer(answer())
    assert gw.result(pending).code == 200
    assert left(gw, api_key) == 10**9 - 50_000


def test_counting_tokens_is_free_and_never_refused_by_a_budget(gw):
    gw.add_model("gpt", pricing=PRICE)
    key, _ = budget_key(gw, ["gpt"], max_usd=0)
    doc = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    response = gw.result(gw.post("/v1/messages/count_tokens", doc, key))
    assert response.code == 200 and "x-budget-remaining-usd" not in response.headers
    assert (last(gw).cost_usd, last(gw).cost_estimated) == (0.0, False)


def test_messages_clients_get_the_budget_errors_in_anthropic_s_shape(gw):
    gw.add_model("free")
    gw.add_model("gpt", pricing=PRICE)
    key, _ = budget_key(gw, ["free", "gpt"], max_usd=0)
    doc = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    refused = gw.result(gw.post("/v1/messages", {"model": "free", **doc}, key))
    assert refused.code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert refused.json()["error"]["message"].startswith("Model 'free' has no pricing")
    exhausted = gw.result(gw.post("/v1/messages", {"model": "gpt", **doc}, key))
    assert exhausted.code == 429 and exhausted.json()["error"]["type"] == "rate_limit_error"
    assert exhausted.json()["error"]["message"].startswith("Budget exceeded for API key ID: ")
    assert exhausted.headers["retry-after"] and exhausted.headers["x-budget-remaining-usd"]


def test_a_model_of_the_provider_wire_is_priced_and_its_targets_inherit(gw):
    provider = gw._put("providers", {"name": "p", "type": "mock", "config": {}})
    gw._put(
        "models",
        {
            "name": "nm",
            "provider_id": provider,
            "model": "echo",
            "pricing": PRICE,
            "targets": [{"provider_id": provider, "model": "other"}],
        },
    )
    model = gw.store.snapshot.models_by_name["nm"]
    assert [d.pricing for d in model.deployments] == [Pricing(1, 2), Pricing(1, 2)]
    key, api_key = budget_key(gw, ["nm"])
    response = gw.result(gw.post(CHAT, chat_doc("nm"), key))
    assert response.code == 200 and response.headers["x-budget-remaining-usd"] == "0.991796"
    assert last(gw).cost_usd > 0 and left(gw, api_key) == 10**9 - round(last(gw).cost_usd * 1e9)


def test_a_fallback_the_budget_refuses_spends_none_of_its_rate_limit(gw):
    gw.add_model("gpt", pricing=PRICE, fallbacks=["backup"])
    dear = {"input_per_mtok": 1000, "output_per_mtok": 1000}
    gw.add_model("backup", pricing=dear, rate_limit={"rpm": 1})
    key, _ = budget_key(gw, ["gpt", "backup"], max_usd=1)
    pending = gw.post(CHAT, chat_doc("gpt"), key)
    gw.flush()
    gw.provider.calls[-1].refuse(503)
    assert gw.result(pending).code == 502  # the fallback did not fit the budget
    # the budget is asked first: the fallback's one request a minute is still there
    other = gw.add_key(["backup"])
    pending = gw.post(CHAT, chat_doc("backup"), other)
    gw.flush()
    gw.provider.calls[-1].answer(answer())
    assert gw.result(pending).code == 200
