"""The Responses history in Redis (CONTRACT-NEXT 3.4 **[ours]**): shared by
the gateways, bounded by count and age, owned by the key that created it;
against a real redis-server started here, then two real gateway processes
continuing one conversation across each other."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor, task

from tests.conftest import start_gateway
from tests.support.redis_server import RedisServer
from twisted_gw.errors import GatewayError
from twisted_gw.proxy.history import RedisResponseHistory
from twisted_gw.ratelimit.redis import parse_redis_url


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


def connect(url: str):
    args = parse_redis_url(url)
    args.pop("ssl")
    return txredisapi.lazyConnectionPool(poolsize=1, connectTimeout=2, replyTimeout=2, **args)


async def put(history: RedisResponseHistory, *args) -> None:
    history.put(*args)
    await history.redis.ping()  # the same connection: the put's reply came first


@pytest_twisted.ensureDeferred
async def test_kept_for_its_owner_bounded_by_count(redis):
    conn = connect(redis.url)
    try:
        history = RedisResponseHistory(conn, reactor, prefix="h-count", max_entries=2, max_age=60)
        for n in range(3):
            await put(history, f"r{n}", "key-a", [{"role": "user", "content": str(n)}])
        assert await history.get("r0", "key-a") is None  # the oldest went past the count
        assert await history.get("r2", "key-a") == [{"role": "user", "content": "2"}]
        assert await history.get("r2", "key-b") is None  # another key's: it does not exist
        assert await conn.zcard("h-count:responses") == 2
    finally:
        await conn.disconnect()


@pytest_twisted.ensureDeferred
async def test_an_entry_expires_with_its_age(redis):
    conn = connect(redis.url)
    try:
        history = RedisResponseHistory(conn, reactor, prefix="h-age", max_age=0.2)
        await put(history, "r", "key-a", [{"role": "user", "content": "x"}])
        ttl = await conn.execute_command("PTTL", "h-age:response:r")
        assert 0 < ttl <= 200
    finally:
        await conn.disconnect()


@pytest_twisted.ensureDeferred
async def test_a_lookup_redis_cannot_answer_is_a_503_not_a_wrong_not_found():
    conn = connect("redis://127.0.0.1:1")  # nothing listens there
    history = RedisResponseHistory(conn, reactor, prefix="h-down", timeout=0.2)
    with pytest.raises(GatewayError) as info:
        await history.get("r", "key-a")
    assert (info.value.status, info.value.code) == (503, "history_unavailable")
    conn.disconnect()  # stops its reconnecting; nothing to wait for


@pytest.fixture(scope="module")
def gateways(redis, tmp_path_factory):
    extra = {"deployment": {"redis": {"url": redis.url, "prefix": "hist", "timeout": 1}}}
    started = [start_gateway(tmp_path_factory.mktemp(f"hist{n}"), extra=extra) for n in (1, 2)]
    yield started
    for gw in started:
        gw.process.stop()


@pytest_twisted.ensureDeferred
async def test_a_conversation_started_on_one_gateway_continues_on_another(gateways, upstream):
    first, second = gateways
    # each gateway has its own embedded store: the model and the key are created on each
    for gw in gateways:
        await gw.add_model("m", "openai/up", {"api_key": "sk-up", "api_base": upstream.base_url})
    key = await first.add_key(["m"])
    status, _ = await second.aadmin(
        "POST", "/aisix/admin/apikeys", {"key": key, "allowed_models": ["m"]}
    )
    assert status == 201
    status, _, raw = await first.chat(key, {"model": "m", "input": "hi"}, path="/v1/responses")
    assert status == 200, raw
    response_id = json.loads(raw)["id"]
    upstream.reset()
    body = {"model": "m", "input": "and then?", "previous_response_id": response_id}
    for _ in range(50):  # the first gateway's put is fire-and-forget: wait until it landed
        status, _, raw = await second.chat(key, body, path="/v1/responses")
        if status == 200:
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    assert status == 200, raw
    sent = upstream.requests[-1].json["messages"]
    assert sent[0] == {"role": "user", "content": "hi"} and sent[-1] == {
        "role": "user",
        "content": "and then?",
    }
    assert len(sent) == 3
