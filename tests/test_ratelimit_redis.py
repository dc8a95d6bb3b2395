"""CONTRACT 4.5 on several nodes: the Redis store against a real redis-server.

In-process: the store applies plans with the same semantics as the memory
store (atomic check-and-consume, token settle, concurrency slots), and fails
open when Redis is away. Black-box: two gateway processes share one limit,
and a gateway keeps serving when Redis is killed, limiting again once it is
back."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from zope.interface.verify import verifyObject

from tests.conftest import SESSION_LOGS, start_gateway
from tests.support.gateway import free_port
from tests.support.redis_server import RedisServer
from twisted_gw.config.entities import parse_apikey, parse_model
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.rate_limit import RateLimitHook
from twisted_gw.observability.metrics import GatewayMetrics
from twisted_gw.ratelimit.interfaces import IRateLimitStore
from twisted_gw.ratelimit.limits import headers, plan_for, rejection
from twisted_gw.ratelimit.redis import RedisRateLimitStore, parse_redis_url


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


def plan(key_limits=None, model_limits=None, key_id="k1"):
    k = {"key": "sk-x", "allowed_models": ["m"]}
    m = {"name": "m", "model": "mock/x", "provider_config": {}}
    if key_limits:
        k["rate_limit"] = key_limits
    if model_limits:
        m["rate_limit"] = model_limits
    return plan_for(parse_apikey(key_id, k), parse_model("m1", m))


def test_redis_url_parsing():
    assert parse_redis_url("redis://:p%40ss@10.0.0.1:6380/2") == {
        "host": "10.0.0.1",
        "port": 6380,
        "dbid": 2,
        "password": "p@ss",
        "username": None,
        "ssl": False,
    }
    assert parse_redis_url("rediss://h")["ssl"] is True
    with pytest.raises(ValueError):
        parse_redis_url("http://h")


@pytest_twisted.ensureDeferred
async def test_store_semantics_match_the_memory_store(redis):
    store = RedisRateLimitStore(reactor, url=redis.url, prefix="unit-a", timeout=2)
    try:
        p = plan({"rpm": 2, "tpm": 50, "concurrency": 2}, {"rpm": 100})
        first = await store.acquire(p, "r1")
        assert first.allowed and first.in_flight == [1]
        h = headers(p, first)
        assert (
            h["x-ratelimit-remaining-requests"] == "1" and h["x-ratelimit-remaining-tokens"] == "50"
        )
        second = await store.acquire(p, "r2")
        assert second.allowed and second.in_flight == [2]
        third = await store.acquire(p, "r3")
        assert third.rejected_window == 0
        assert rejection(p, third).message.startswith(
            "Rate limit exceeded for API key ID: k1. Limited on rpm"
        )
        # nothing was consumed by the rejection: the model's window counted 2
        assert third.used[2] == 2
        await store.settle(p, "r1", 38)
        await store.settle(p, "r2", 20)
        tokens_only = plan({"tpm": 50})
        over = await store.acquire(tokens_only, "r4")
        assert over.rejected_window == 0 and over.used == [58]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_concurrency_slots_are_released_by_member(redis):
    store = RedisRateLimitStore(reactor, url=redis.url, prefix="unit-b", timeout=2)
    try:
        p = plan({"concurrency": 1})
        assert (await store.acquire(p, "a")).allowed
        blocked = await store.acquire(p, "b")
        assert (
            rejection(p, blocked).message
            == "Concurrency limit exceeded for resource ID: k1. Limit: 1, current: 1"
        )
        await store.settle(p, "a", 0)
        assert (await store.acquire(p, "c")).allowed
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_slots_of_a_dead_gateway_expire(redis):
    store = RedisRateLimitStore(reactor, url=redis.url, prefix="unit-c", timeout=2, slot_ttl=0.3)
    try:
        p = plan({"concurrency": 1})
        assert (await store.acquire(p, "never-settled")).allowed
        assert not (await store.acquire(p, "x")).allowed
        await task.deferLater(reactor, 0.4, lambda: None)
        assert (await store.acquire(p, "y")).allowed
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_redis_away_fails_open_within_the_timeout_and_counts_errors():
    metrics = GatewayMetrics()
    store = RedisRateLimitStore(
        reactor, url=f"redis://127.0.0.1:{free_port()}/0", timeout=0.3, metrics=metrics
    )
    try:
        started = reactor.seconds()
        outcome = await store.acquire(plan({"rpm": 1}), "r")
        assert outcome.allowed and outcome.used == [] and reactor.seconds() - started < 1.0
        await store.settle(plan({"rpm": 1}), "r", 5)  # never raises
        assert metrics.ratelimit_store_errors._value.get() == 2
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_redis_away_can_be_configured_to_reject():
    from twisted_gw.errors import GatewayError

    store = RedisRateLimitStore(
        reactor, url=f"redis://127.0.0.1:{free_port()}/0", timeout=0.3, fail_open=False
    )
    try:
        with pytest.raises(GatewayError) as info:
            await store.acquire(plan({"rpm": 1}), "r")
        assert (info.value.status, info.value.code) == (503, "rate_limit_unavailable")
    finally:
        await store.close()


# -- black-box: several gateways -------------------------------------------------------


def redis_gateway(tmp_path_factory, url, name, **server):
    return start_gateway(
        tmp_path_factory.mktemp(name),
        extra={
            "deployment": {"redis": {"url": url, "prefix": "bb", "timeout": 0.5}},
            "server": server,
        },
    )


async def chat(gw, key):
    status, headers_, body = await gw.chat(
        key, {"model": "shared", "messages": [{"role": "user", "content": "x"}]}
    )
    return status, headers_, body


@pytest_twisted.ensureDeferred
async def test_two_gateways_share_one_limit(tmp_path_factory, redis):
    a = redis_gateway(tmp_path_factory, redis.url, "gw-a")
    b = redis_gateway(tmp_path_factory, redis.url, "gw-b")
    try:
        # each gateway has its own embedded store: give both the same ids
        for gw in (a, b):
            status, _ = await gw.aadmin(
                "PUT",
                "/aisix/admin/models/shared-id",
                {"name": "shared", "model": "mock/x", "provider_config": {}},
            )
            assert status == 201
            status, _ = await gw.aadmin(
                "PUT",
                "/aisix/admin/apikeys/shared-key",
                {"key": "sk-shared-redis", "allowed_models": ["shared"], "rate_limit": {"rpm": 3}},
            )
            assert status == 201
        results = [await chat(gw, "sk-shared-redis") for gw in (a, b, a, b)]
        assert [s for s, _, _ in results] == [200, 200, 200, 429]
        assert [h.get("x-ratelimit-remaining-requests") for _, h, _ in results[:3]] == [
            "2",
            "1",
            "0",
        ]
        assert json.loads(results[3][2])["error"]["message"].startswith(
            "Rate limit exceeded for API key ID: shared-key."
        )
    finally:
        a.process.stop()
        b.process.stop()


@pytest_twisted.ensureDeferred
async def test_gateway_keeps_serving_when_redis_dies_and_limits_again_after(tmp_path_factory):
    server = RedisServer().start()
    gw = redis_gateway(tmp_path_factory, server.url, "gw-kill")
    try:
        await gw.add_model("shared", "mock/x", {})
        key = "sk-redis-kill-test"
        doc = {"key": key, "allowed_models": ["shared"], "rate_limit": {"rpm": 100}}
        status, _ = await gw.aadmin("PUT", "/aisix/admin/apikeys/kill-key", doc)
        assert status == 201
        status, h, _ = await chat(gw, key)
        assert status == 200 and h["x-ratelimit-remaining-requests"] == "99"

        server.kill()
        for _ in range(3):  # fail open: served, without limit headers, within the timeout
            started = reactor.seconds()
            status, h, _ = await chat(gw, key)
            assert status == 200 and "x-ratelimit-remaining-requests" not in h
            assert reactor.seconds() - started < 1.5
        # one warning for the whole outage so far (at most one a minute)
        assert gw.process.output.count("rate-limit store (Redis)") == 1

        server = RedisServer(port=server.port).start()  # back on the same port, empty
        for _ in range(100):  # txredisapi reconnects on its own
            status, h, _ = await chat(gw, key)
            if "x-ratelimit-remaining-requests" in h:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        assert h.get("x-ratelimit-remaining-requests") == "99"
    finally:
        gw.process.stop()
        server.stop()
    assert any(p is gw.process for p in SESSION_LOGS)


@pytest_twisted.ensureDeferred
async def test_a_check_cancelled_because_the_client_left_gives_its_slot_back(redis):
    store = RedisRateLimitStore(reactor, url=redis.url, prefix="unit-cancel", timeout=0.3)
    try:
        p = plan({"concurrency": 1})
        d = store.acquire(p, "client-gone")
        d.cancel()  # Klein cancels the request's chain when the client goes
        with pytest.raises(defer.CancelledError):
            await d  # a cancellation, not "allowed without limits"
        await task.deferLater(reactor, 0.5, lambda: None)  # the script ran anyway...
        assert (await store.acquire(p, "next")).allowed  # ...and its slot was released
    finally:
        await store.close()


def redis_zcard(server: RedisServer, key: str) -> int:
    import socket as _socket

    with _socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
        s.sendall(f"*2\r\n$5\r\nZCARD\r\n${len(key)}\r\n{key}\r\n".encode())
        reply = s.recv(64)
    assert reply.startswith(b":"), reply
    return int(reply[1:].strip())


@pytest_twisted.ensureDeferred
async def test_a_shutdown_gives_back_the_shared_slots_of_requests_in_flight(
    tmp_path_factory, redis, fresh_upstream
):
    from tests.support.gateway import treq_stream
    from tests.support.mock_upstream import chat_chunk, sse_event

    # the stream never ends: the shutdown's grace (CONTRACT 5.2) cuts it
    gw = redis_gateway(tmp_path_factory, redis.url, "gw-shutdown", shutdown_grace=0.3)
    stopped = False
    try:
        await gw.add_model(
            "held", "openai/x", {"api_key": "sk-up", "api_base": fresh_upstream.base_url}
        )
        status, _ = await gw.aadmin(
            "PUT",
            "/aisix/admin/apikeys/held-key",
            {"key": "sk-held-slot", "allowed_models": ["held"], "rate_limit": {"concurrency": 5}},
        )
        assert status == 201
        fresh_upstream.set_sse("/v1/chat/completions", [sse_event(chat_chunk("x"))], end="hang")
        streaming = treq_stream(
            "POST",
            gw.proxy + "/v1/chat/completions",
            headers={"Authorization": "Bearer sk-held-slot"},
            json_body={
                "model": "held",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
            timeout=10,
        )
        pending = defer.ensureDeferred(streaming)
        await fresh_upstream.wait_for_requests(1, timeout=5)
        await task.deferLater(reactor, 0.2, lambda: None)  # the stream is open
        assert redis_zcard(redis, "bb:apikey:held-key:concurrency") == 1
        await defer.ensureDeferred(_stop_in_thread(gw))  # SIGTERM, while the stream is open
        stopped = True
        result = await pending
        assert "[DONE]" not in result.data  # the client was cut, not told it was complete
        assert redis_zcard(redis, "bb:apikey:held-key:concurrency") == 0
    finally:
        if not stopped:
            gw.process.stop()


async def _stop_in_thread(gw):
    from twisted.internet import threads

    return await threads.deferToThread(gw.process.stop)


@pytest_twisted.ensureDeferred
async def test_the_redis_store_provides_IRateLimitStore_and_every_check_asks_redis(redis):
    store = RedisRateLimitStore(reactor, url=redis.url, prefix="unit-iface", timeout=2)
    try:
        assert verifyObject(IRateLimitStore, store)
        p = plan({"rpm": 5})
        assert store.acquire_now(p, "r0") is None  # nothing decided, nothing consumed
        k = parse_apikey("k1", {"key": "sk-x", "allowed_models": ["m"], "rate_limit": {"rpm": 5}})
        m = parse_model("m1", {"name": "m", "model": "mock/x", "provider_config": {}})
        ctx = RequestContext("r1", 0.0, "POST", "/v1/chat/completions", "-", "-", Snapshot())
        ctx.api_key, ctx.model, ctx.model_name = k, m, "m"
        checked = RateLimitHook(store).pre_call(ctx)
        assert isinstance(checked, defer.Deferred)  # the hook waited for Redis
        await checked
        assert ctx.response_headers["x-ratelimit-remaining-requests"] == "4"  # r0 took none
    finally:
        await store.close()
