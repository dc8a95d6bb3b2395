"""CONTRACT 4.5 in-process: the limiter's arithmetic with a fake clock.

Window edges (epoch-aligned minutes and days), request quotas consumed only
when every check passes, token post-accounting at finalize, concurrency
release, the strictest-limit header choice, the reset text, the 429 texts."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from twisted_gw.config.entities import parse_apikey, parse_model
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.errors import GatewayError
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.rate_limit import RateLimitHook, total_tokens
from twisted_gw.ratelimit.interfaces import IRateLimitStore
from twisted_gw.ratelimit.limits import format_reset, headers, plan_for, rejection
from twisted_gw.ratelimit.memory import MemoryRateLimitStore

DAY = 86400


def key(rate_limit=None, id="key-1"):
    doc = {"key": "sk-secret-value", "allowed_models": ["m"]}
    if rate_limit:
        doc["rate_limit"] = rate_limit
    return parse_apikey(id, doc)


def model(rate_limit=None, id="model-1"):
    doc = {"name": "m", "model": "mock/x", "provider_config": {}}
    if rate_limit:
        doc["rate_limit"] = rate_limit
    return parse_model(id, doc)


def clock_at(t):
    clock = Clock()
    clock.advance(t)
    return clock


def ctx(api_key, mdl, rid="r1"):
    c = RequestContext(
        rid, 0.0, "POST", "/v1/chat/completions", "/v1/chat/completions", "-", Snapshot()
    )
    c.api_key, c.model, c.model_name = api_key, mdl, mdl.name
    return c


@pytest.mark.parametrize(
    "seconds, text",
    [(55, "55s"), (120, "2m"), (65, "1m5s"), (DAY, "1440m"), (0, "0s"), (0.3, "1s"), (59.01, "1m")],
)
def test_reset_text(seconds, text):
    assert format_reset(seconds) == text


def test_rpm_window_is_aligned_to_the_epoch_minute():
    clock = clock_at(60 * 1000 + 50)  # 10 s before the minute ends
    store = MemoryRateLimitStore(clock)
    plan = plan_for(key({"rpm": 2}), model())
    assert store.acquire_now(plan).allowed
    assert store.acquire_now(plan).allowed
    third = store.acquire_now(plan)
    assert not third.allowed and third.rejected_window == 0
    error = rejection(plan, third)
    assert error.status == 429 and error.code == "rate_limit_exceeded"
    assert (
        error.message
        == "Rate limit exceeded for API key ID: key-1. Limited on rpm, current limit: 2, remaining: 0"
    )
    assert error.headers == {"Retry-After": "10"}
    clock.advance(9.999)
    assert not store.acquire_now(plan).allowed  # same window
    clock.advance(0.001)  # the next minute starts
    assert store.acquire_now(plan).allowed


def test_rpd_window_is_the_utc_day():
    clock = clock_at(DAY * 20000 + DAY - 5)
    store = MemoryRateLimitStore(clock)
    plan = plan_for(key(), model({"rpd": 1}))
    outcome = store.acquire_now(plan)
    assert headers(plan, outcome)["x-ratelimit-reset-requests"] == "5s"
    rejected = store.acquire_now(plan)
    assert rejection(plan, rejected).message.startswith(
        "Rate limit exceeded for model ID: model-1. Limited on rpd"
    )
    clock.advance(5)
    outcome = store.acquire_now(plan)
    assert outcome.allowed and headers(plan, outcome)["x-ratelimit-reset-requests"] == "1440m"


def test_request_quota_is_spent_only_when_every_check_passes():
    clock = clock_at(1000 * 60)
    store = MemoryRateLimitStore(clock)
    plan = plan_for(key({"rpm": 5}), model({"rpm": 1}))
    assert store.acquire_now(plan).allowed
    for _ in range(3):
        outcome = store.acquire_now(plan)
        assert outcome.rejected_window == 1  # the model's window
    # the key spent 1 of 5: the model's rejections took nothing from it
    other_model = plan_for(key({"rpm": 5}), model({"rpm": 100}, id="model-2"))
    outcome = store.acquire_now(other_model)
    assert headers(other_model, outcome)["x-ratelimit-remaining-requests"] == "3"


def test_tokens_are_checked_before_and_spent_at_settle():
    clock = clock_at(60 * 500)
    store = MemoryRateLimitStore(clock)
    plan = plan_for(key({"tpm": 50}), model())
    first = store.acquire_now(plan)
    assert first.allowed and headers(plan, first)["x-ratelimit-remaining-tokens"] == "50"
    second = store.acquire_now(plan)  # the first one has not settled: still 50 left
    assert second.allowed
    store.settle(plan, "r1", 38)
    store.settle(plan, "r2", 38)
    third = store.acquire_now(plan)
    assert not third.allowed
    assert rejection(plan, third).message.endswith(
        "Limited on tpm, current limit: 50, remaining: 0"
    )


def test_concurrency_is_counted_and_released():
    store = MemoryRateLimitStore(clock_at(0))
    plan = plan_for(key({"concurrency": 2}), model({"concurrency": 5}))
    a, b = store.acquire_now(plan), store.acquire_now(plan)
    assert a.allowed and b.allowed and b.in_flight == [2, 2]
    assert headers(plan, b)["x-ratelimit-remaining-concurrent"] == "0"
    c = store.acquire_now(plan)
    assert c.rejected_concurrency == 0
    error = rejection(plan, c)
    assert (error.status, error.code) == (429, "concurrency_limit_exceeded")
    assert (
        error.message == "Concurrency limit exceeded for resource ID: key-1. Limit: 2, current: 2"
    )
    assert "Retry-After" not in error.headers
    store.settle(plan, "a", 0)
    assert store.acquire_now(plan).allowed
    assert store.in_flight("apikey:key-1:concurrency") == 2


def test_strictest_limit_wins_ties_go_to_the_earlier_reset():
    clock = clock_at(DAY * 100 + 30)  # 30 s into a minute, the day has 86370 s left
    store = MemoryRateLimitStore(clock)
    plan = plan_for(key({"rpm": 10, "rpd": 3}), model({"rpm": 4, "tpm": 1000, "tpd": 1000}))
    outcome = store.acquire_now(plan)
    h = headers(plan, outcome)
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("3", "2")
    assert h["x-ratelimit-reset-requests"] == format_reset(DAY - 30)
    # tokens: tpm and tpd both have 1000 left: the minute resets first
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-reset-tokens"]) == ("1000", "30s")
    assert "x-ratelimit-limit-concurrent" not in h


def test_header_groups_appear_only_for_configured_kinds():
    store = MemoryRateLimitStore(clock_at(0))
    plan = plan_for(key({"concurrency": 3}), model())
    h = headers(plan, store.acquire_now(plan))
    assert h == {"x-ratelimit-limit-concurrent": "3", "x-ratelimit-remaining-concurrent": "2"}


def test_hook_sets_headers_rejects_and_settles_exactly_what_finalize_reports():
    clock = clock_at(60 * 7)
    store = MemoryRateLimitStore(clock)
    hook = RateLimitHook(store)
    k, m = key({"rpm": 1, "tpm": 100, "concurrency": 1}), model()
    first = ctx(k, m, "r1")
    assert hook.pre_call(first) is None  # the memory store answers synchronously
    assert first.response_headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(GatewayError) as info:
        hook.pre_call(ctx(k, m, "r2"))
    assert info.value.status == 429
    first.usage = {"total_tokens": 60}
    hook.finalize(first)
    assert store.in_flight("apikey:key-1:concurrency") == 0
    clock.advance(60)
    nxt = ctx(k, m, "r3")
    hook.pre_call(nxt)
    assert nxt.response_headers["x-ratelimit-remaining-tokens"] == "100"  # a new minute


def test_missing_or_odd_usage_counts_zero_tokens():
    assert total_tokens(None) == 0
    assert total_tokens({}) == 0
    assert total_tokens({"total_tokens": "12"}) == 0
    assert total_tokens({"total_tokens": -3}) == 0
    assert total_tokens({"total_tokens": True}) == 0
    assert total_tokens({"total_tokens": 12}) == 12


def test_no_limits_no_work():
    hook = RateLimitHook(MemoryRateLimitStore(clock_at(0)))
    c = ctx(key(), model())
    assert hook.pre_call(c) is None and c.response_headers == {}
    hook.finalize(c)


def test_429_names_ids_never_the_key():
    store = MemoryRateLimitStore(clock_at(0))
    plan = plan_for(key({"rpm": 0}), model())
    error = rejection(plan, store.acquire_now(plan))
    assert "sk-secret-value" not in error.message and "key-1" in error.message


def test_the_memory_store_provides_IRateLimitStore_and_decides_at_once():
    store = MemoryRateLimitStore(clock_at(0))
    assert verifyObject(IRateLimitStore, store)
    plan = plan_for(key({"rpm": 1}), model())
    assert store.acquire_now(plan, "r1").allowed  # an Outcome, never None: no round trip
    assert not store.acquire_now(plan, "r2").allowed
    closed = []
    store.close().addCallback(closed.append)
    assert closed == [None]
