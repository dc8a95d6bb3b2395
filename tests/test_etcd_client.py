"""The etcd v3 client (twisted_gw.config.etcd_client) against a real etcd.

What the store builds on: KV calls and transactions as etcd defines them,
watches that deliver every change from a revision on and say when they end,
calls that never outlive their timeout, fail-over between hosts, auth tokens
renewed when etcd forgets them, and https. Checked against what etcd itself
reports through its own HTTP API (tests/support/etcd.py)."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol

from tests.conftest import SESSION_SECRETS
from tests.support.etcd import EtcdServer
from tests.support.gateway import free_port, make_self_signed_cert
from twisted_gw._outbound import tls_policy
from twisted_gw.config.etcd_client import EtcdClient
from twisted_gw.config.etcd_wire import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdServerError,
    EtcdUnavailable,
    compare,
    prefix_range_end,
    put_op,
    range_op,
)


def unique_prefix() -> str:
    return f"/client-test-{uuid.uuid4().hex[:8]}/"


async def pause(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def until(check, timeout: float = 5.0) -> None:
    """Wait for something this reactor itself makes true (events arriving)."""
    waited = 0.0
    while not check():
        assert waited < timeout, "condition not reached in time"
        await pause(0.01)
        waited += 0.01


@pytest.fixture
def client(etcd):
    c = EtcdClient([etcd.url], timeout=2.0)
    yield c
    pytest_twisted.blockon(c.close())


def test_prefix_range_end_follows_etcds_rule():
    assert prefix_range_end("/aisix/") == b"/aisix0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


@pytest_twisted.ensureDeferred
async def test_put_range_delete_round_trip_as_etcd_stores_it(client, etcd):
    p = unique_prefix()
    first = await client.put(p + "models/ü", '{"name": "ü"}', prev_kv=True)
    assert first.prev_kv is None
    second = await client.put(p + "models/ü", '{"name": "ä"}', prev_kv=True)
    assert second.prev_kv.value == '{"name": "ü"}'.encode()
    assert second.revision == first.revision + 1
    # etcd itself holds what we wrote, with the revisions we were told
    stored = etcd.get(p + "models/ü")
    assert stored == {"value": {"name": "ä"}, "create_revision": first.revision,
                      "mod_revision": second.revision}  # fmt: skip
    await client.put(p + "models/b", "2")
    await client.put(p.rstrip("/") + "x/outside", "3")  # shares the text prefix, not the dir
    got = await client.range(p, prefix=True)
    assert [kv.key.decode() for kv in got.kvs] == [p + "models/b", p + "models/ü"]
    assert got.count == 2 and got.revision >= second.revision
    assert got.kvs[1].create_revision == first.revision
    assert got.kvs[1].mod_revision == second.revision and got.kvs[1].version == 2
    gone = await client.delete(p + "models/b", prev_kv=True)
    assert gone.deleted == 1 and gone.prev_kvs[0].value == b"2"
    assert etcd.get(p + "models/b") is None
    assert (await client.delete(p + "models/b")).deleted == 0
    assert (await client.range(p + "nothing")).kvs == ()


@pytest_twisted.ensureDeferred
async def test_txn_range_compare_fails_after_any_write_to_the_range(client):
    p = unique_prefix()
    await client.put(p + "a", "1")
    read = await client.range(p, prefix=True)
    guard = compare(p, "MOD", "<", read.revision + 1, prefix_range_end(p))
    ok = await client.txn([guard], [put_op(p + "b", "2", prev_kv=True)], [range_op(p + "a")])
    assert ok.succeeded and ok.responses[0].prev_kv is None
    # the put above changed the range: the same guard now fails, and the
    # failure branch ran instead
    again = await client.txn([guard], [put_op(p + "c", "3")], [range_op(p + "a")])
    assert not again.succeeded
    assert again.responses[0].kvs[0].value == b"1"
    assert (await client.range(p + "c")).kvs == ()
    # an empty range compares as "no revision at all"
    empty = unique_prefix()
    fresh = compare(empty, "MOD", "<", 1, prefix_range_end(empty))
    assert (await client.txn([fresh], [put_op(empty + "x", "1")])).succeeded


@pytest_twisted.ensureDeferred
async def test_watch_delivers_every_change_from_its_start_revision_in_order(client, etcd):
    p = unique_prefix()
    start = etcd.put(p + "a", "1")  # before the watch: seen because we start there
    seen = []
    watch = await client.watch(
        p, prefix=True, start_revision=start, on_response=lambda r: seen.extend(r.events)
    )
    etcd.put(p + "b", "2")
    etcd.delete(p + "a")
    etcd.put(p.rstrip("/") + "x", "not ours")
    await until(lambda: len(seen) >= 3)
    assert [(e.type, e.kv.key.decode(), e.kv.value) for e in seen] == [
        ("PUT", p + "a", b"1"),
        ("PUT", p + "b", b"2"),
        ("DELETE", p + "a", b""),
    ]
    assert seen[0].kv.mod_revision == start
    watch.cancel()
    assert await watch.done is None


@pytest_twisted.ensureDeferred
async def test_watch_from_a_compacted_revision_says_so(client, etcd):
    p = unique_prefix()
    old = etcd.put(p + "a", "1")
    etcd.put(p + "a", "2")
    etcd.compact()
    with pytest.raises(EtcdCompacted) as caught:
        watch = await client.watch(p, prefix=True, start_revision=old, on_response=print)
        await watch.done  # etcd may confirm the watch first, then cancel it
    assert caught.value.compact_revision > old


@pytest_twisted.ensureDeferred
async def test_fails_over_to_the_next_host_and_stays_there(etcd):
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    dead = f"http://127.0.0.1:{free_port()}"
    client = EtcdClient([dead, etcd.url], timeout=1.0)
    try:
        assert (await client.range("/")).revision > 0  # the refused host is skipped at once
        # a host that accepts but never answers uses up the call's budget ...
        hung = EtcdClient([f"http://127.0.0.1:{silent.getHost().port}", etcd.url], timeout=0.3)
        started = reactor.seconds()
        with pytest.raises(EtcdUnavailable, match="no answer in time"):
            await hung.range("/")
        assert reactor.seconds() - started < 0.6
        # ... and the next call starts with the next host
        assert (await hung.range("/")).revision > 0
        await hung.close()
    finally:
        await client.close()
        await silent.stopListening()


@pytest_twisted.ensureDeferred
async def test_unreachable_etcd_fails_within_the_timeout_naming_each_host():
    hosts = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    client = EtcdClient(hosts, timeout=0.5)
    started = reactor.seconds()
    with pytest.raises(EtcdUnavailable) as caught:
        await client.put("/x", "1")
    assert reactor.seconds() - started < 1.0
    assert all(f"{h}: connection refused" in str(caught.value) for h in hosts)
    with pytest.raises(EtcdUnavailable):
        await client.watch("/x", prefix=True, on_response=print)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_watch_ends_with_an_error_when_etcd_dies(tmp_path):
    server = EtcdServer(tmp_path / "etcd").start()
    client = EtcdClient([server.url], timeout=1.0)
    try:
        watch = await client.watch("/w/", prefix=True, on_response=print)
        server.kill()
        with pytest.raises(EtcdUnavailable):
            await defer.Deferred.fromCoroutine(_within(watch.done, 2.0))
    finally:
        server.stop()
        await client.close()


async def _within(d, seconds):
    return await d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_auth_with_a_token_renewed_when_etcd_forgets_it(tmp_path):
    password = f"pw-{uuid.uuid4().hex}"
    SESSION_SECRETS.add(password)
    # tokens expire 1-2 s after their last use (etcd sweeps once a second)
    args = ("--auth-token-ttl", "1", "--bcrypt-cost", "4")
    server = EtcdServer(tmp_path / "etcd", extra_args=args).start()
    server.enable_auth(password)
    anonymous = EtcdClient([server.url], timeout=1.0)
    wrong = EtcdClient([server.url], timeout=1.0, user="root", password="wrong")
    reader = EtcdClient([server.url], timeout=1.0, user="root", password=password)
    watcher = EtcdClient([server.url], timeout=1.0, user="root", password=password)
    try:
        with pytest.raises(EtcdServerError, match="user name is empty"):
            await anonymous.range("/a")
        with pytest.raises(EtcdAuthError, match="authentication failed") as caught:
            await wrong.range("/a")
        assert password not in str(caught.value)
        await reader.put("/a/k", "1")
        await watcher.range("/a/k")
        old_token = server.token(password)
        await pause(2.2)
        status, body = server._http("POST", "/v3/kv/range", {"key": "L2E="}, token=old_token)
        assert status != 200 and b"invalid auth token" in body
        # both clients hold expired tokens now: each authenticates again, once
        assert (await reader.range("/a/k")).kvs[0].value == b"1"
        seen = []
        watch = await watcher.watch("/a/", prefix=True, on_response=lambda r: seen.extend(r.events))
        await reader.put("/a/k", "2")
        await until(lambda: seen)
        assert seen[0].kv.value == b"2"
        watch.cancel()
    finally:
        server.stop()
        for c in (anonymous, wrong, reader, watcher):
            await c.close()


@pytest_twisted.ensureDeferred
async def test_https_with_a_given_trust_root(tmp_path):
    cert, key = make_self_signed_cert(tmp_path, "127.0.0.1")
    server = EtcdServer(tmp_path / "etcd", tls=(cert, key)).start()
    trusted = EtcdClient([server.url], timeout=1.0, tls_policy=tls_policy(str(cert)))
    system = EtcdClient([server.url], timeout=1.0)
    unchecked = EtcdClient([server.url], timeout=1.0, tls_policy=tls_policy(verify=False))
    try:
        assert server.url.startswith("https://")
        await trusted.put("/tls/k", "1")
        assert server.get("/tls/k")["value"] == 1
        with pytest.raises(EtcdUnavailable, match="TLS"):
            await system.range("/tls/k")
        assert (await unchecked.range("/tls/k")).count == 1
    finally:
        server.stop()
        for c in (trusted, system, unchecked):
            await c.close()
