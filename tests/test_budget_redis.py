"""Issue 17 on several nodes: the Redis budget store against a real
redis-server has the in-memory store's semantics (reserve within the limit,
settle each member once, a refusal holds nothing), gives back the
reservation of a gateway that died, expires old windows, and follows the
limiter's on_error policy when Redis is away. Two gateways sharing one
budget: tests/test_budget_blackbox.py."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.support.gateway import free_port
from tests.support.redis_server import RedisServer
from twisted_gw.errors import GatewayError
from twisted_gw.observability.metrics import GatewayMetrics
from twisted_gw.spend.interfaces import IBudgetStore
from twisted_gw.spend.memory import MemoryBudgetStore
from twisted_gw.spend.redis import RedisBudgetStore


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


def connect(url: str, timeout: float = 2.0):
    import txredisapi

    from twisted_gw.ratelimit.redis import parse_redis_url

    args = parse_redis_url(url)
    args.pop("ssl")
    return txredisapi.lazyConnectionPool(
        poolsize=2, reconnect=True, connectTimeout=timeout, replyTimeout=timeout, **args
    )


@pytest.fixture
def make(redis):
    made = []

    def build(prefix: str, url: str | None = None, **kw):
        connection = connect(url or redis.url, kw.get("timeout", 2.0))
        store = RedisBudgetStore(connection, reactor, prefix=prefix, **kw)
        made.append(store)
        return store

    yield build
    for store in made:
        pytest_twisted.blockon(store.close())
        pytest_twisted.blockon(store.redis.disconnect())


def test_both_stores_provide_the_interface():
    from zope.interface.verify import verifyObject

    assert verifyObject(IBudgetStore, MemoryBudgetStore(reactor))
    assert verifyObject(IBudgetStore, RedisBudgetStore(None, reactor))


@pytest_twisted.ensureDeferred
async def test_redis_store_semantics_match_the_memory_store(make):
    store = make("unit-a")
    first = await store.reserve("k:month:0", "r1", 600, 1000, 100)
    assert (first.ok, first.remaining) == (True, 400)
    refused = await store.reserve("k:month:0", "r2", 500, 1000, 100)
    assert (refused.ok, refused.remaining) == (False, 400)
    assert (await store.reserve("k:month:0", "r1", 100, 1000, 100)).remaining == 300  # top-up
    await store.settle("k:month:0", "r1", 250, 100)
    await store.settle("k:month:0", "r1", 0, 100)  # the member holds nothing any more
    assert await store.remaining("k:month:0", 1000) == 750
    other_window = await store.reserve("k:month:99", "r3", 1000, 1000, 100)
    assert other_window.ok and other_window.remaining == 0  # a new window starts at 0


@pytest_twisted.ensureDeferred
async def test_an_exhausted_window_refuses_and_big_amounts_stay_exact(make):
    """Sums are Redis integers (exact); Lua compares in doubles, exact to 2^53
    nano-USD (9e6 USD) and within 128 nano-USD of it up to 10^9 USD."""
    store = make("unit-b")
    limit = 2**53 - 1
    assert (await store.reserve("s", "a", limit - 10, limit, 0)).remaining == 10
    await store.settle("s", "a", limit + 5, 0)  # ran over
    refused = await store.reserve("s", "b", 0, limit, 0)
    assert not refused.ok and refused.remaining == -5
    largest = 10**18  # the largest budget: 10^9 USD
    held = await store.reserve("t", "a", 10**17, largest, 0)
    assert held.ok and abs(held.remaining - 9 * 10**17) <= 128


@pytest_twisted.ensureDeferred
async def test_reservations_of_a_dead_gateway_are_given_back(make):
    store = make("unit-c", reservation_ttl=0.3)
    assert (await store.reserve("s", "never-settled", 900, 1000, 0)).ok
    assert not (await store.reserve("s", "x", 200, 1000, 0)).ok
    await task.deferLater(reactor, 0.4, lambda: None)
    assert (await store.reserve("s", "y", 200, 1000, 0)).ok


@pytest_twisted.ensureDeferred
async def test_windows_expire_a_ttl_after_they_end(make, redis):
    store = make("unit-d")
    await store.reserve("k:day:0", "r", 10, 1000, 1)
    await store.settle("k:day:0", "r", 10, 1)
    await task.deferLater(reactor, 1.2, lambda: None)
    assert await store.remaining("k:day:0", 1000) == 1000


@pytest_twisted.ensureDeferred
async def test_redis_away_fails_open_or_rejects_within_the_timeout():
    url = f"redis://127.0.0.1:{free_port()}/0"
    metrics = GatewayMetrics()
    store = RedisBudgetStore(connect(url, 0.3), reactor, timeout=0.3, metrics=metrics)
    strict = RedisBudgetStore(connect(url, 0.3), reactor, timeout=0.3, fail_open=False)
    try:
        started = reactor.seconds()
        assert await store.reserve("s", "r", 1, 10, 0) is None  # unchecked
        assert reactor.seconds() - started < 1.0
        await store.settle("s", "r", 5, 0)  # never raises
        assert metrics.ratelimit_store_errors._value.get() >= 2
        with pytest.raises(GatewayError) as info:
            await strict.reserve("s", "r", 1, 10, 0)
        assert (info.value.status, info.value.code) == (503, "budget_unavailable")
    finally:
        for s in (store, strict):
            await s.close()
            await task.deferLater(reactor, 0.35, lambda: None)  # the late release ran
            s.redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_a_reservation_cancelled_because_the_client_left_is_given_back(make):
    store = make("unit-e", timeout=0.3)
    d = store.reserve("s", "client-gone", 900, 1000, 0)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        await d
    await task.deferLater(reactor, 0.5, lambda: None)  # the script ran anyway, then was undone
    assert await store.remaining("s", 1000) == 1000
