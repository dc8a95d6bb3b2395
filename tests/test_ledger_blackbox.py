"""Issue 17, black-box: the real gateway writes exactly one ledger row per
request that got past authentication, on every way a request ends (200,
4xx after auth, 429, upstream 502, stream cut, client gone; none for a
401), to SQLite (the default, next to the store) and to a real PostgreSQL
started by the test; ``GET /aisix/admin/spend`` answers the sums of those
rows; SIGTERM flushes the rows still buffered.

The ways a request ends are the access log's cases
(tests/test_metrics_and_access_log.py), run again here against a gateway
with a ledger; the test-only finalize counter tells when a request has
finalized (the ledger hook runs before it), then the row is awaited in the
database, where it must land within about a second.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.conftest import start_gateway
from tests.streamcheck import (
    finalize_records,
    no_unhandled_errors,
    wait_finalized,
    wait_new_finalized,
)
from tests.support.gateway import treq_json
from tests.test_metrics_and_access_log import CASES, chat_doc, new_key, new_model

COLUMNS = (
    "request_id, key_id, model, deployment, status, end_reason,"
    " prompt_tokens, cached_tokens, completion_tokens, cost_usd, cost_estimated, latency_ms, ts"
)


class Ledger:
    """Reads a gateway's ledger table the way an operator's SQL would."""

    def __init__(self, connect: Callable[[], Any], placeholder: str) -> None:
        self._connect = connect
        self._p = placeholder

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        connection = self._connect()
        try:
            cursor = connection.cursor()
            cursor.execute(sql.replace("?", self._p), args)
            return [tuple(r) for r in cursor.fetchall()]
        finally:
            connection.close()

    def rows(self, rid: str) -> list[dict[str, Any]]:
        names = [c.strip() for c in COLUMNS.split(",")]
        found = self.query(f"SELECT {COLUMNS} FROM ledger WHERE request_id = ?", (rid,))
        return [dict(zip(names, r, strict=True)) for r in found]

    def count(self) -> int:
        return self.query("SELECT COUNT(*) FROM ledger")[0][0]

    async def wait_rows(self, rid: str, timeout: float = 3.0) -> list[dict[str, Any]]:
        """The rows of ``rid`` once there is one (the writer is at most ~1 s behind)."""
        deadline = time.monotonic() + timeout
        while not (found := self.rows(rid)):
            assert time.monotonic() < deadline, f"no ledger row for {rid}"
            await task.deferLater(reactor, 0.05, lambda: None)
        return found

    async def wait_count(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (have := self.count()) != n:
            assert have < n, f"{have} ledger rows, expected {n}"
            assert time.monotonic() < deadline, f"{have} ledger rows after {timeout} s, not {n}"
            await task.deferLater(reactor, 0.05, lambda: None)


def sqlite_ledger(path: Path) -> Ledger:
    return Ledger(lambda: sqlite3.connect(path), "?")


def postgres_ledger(url: str) -> Ledger:
    import psycopg2

    return Ledger(lambda: psycopg2.connect(url), "%s")


def counted(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "hooks": ["tests.support.finalize_counter.FinalizeCounter"],
        "server": {"proxy": {"upstream_timeout": 2}},
    }
    doc.update(extra or {})
    return doc


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"ledger-{request.param}")
    if request.param == "sqlite":
        gateway = start_gateway(directory, extra=counted())
        gateway.ledger = sqlite_ledger(directory / "ledger.sqlite3")  # next to the store
    else:
        server = request.getfixturevalue("postgres")
        url = server.create_database(f"ledger_cases_{int(time.time() * 1000)}")
        gateway = start_gateway(directory, extra=counted({"deployment": {"ledger": {"url": url}}}))
        gateway.ledger = postgres_ledger(url)
        assert not (directory / "ledger.sqlite3").exists()
    gateway.backend = request.param
    yield gateway
    gateway.process.stop()
    no_unhandled_errors(gateway.process)


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


async def marker(gw, env) -> str:
    """One more request whose row is awaited: rows are written in order, so
    once it is there every earlier row that was ever going to be is too."""
    status, headers, _ = await gw.chat(env["key"], chat_doc(env["mock"]))
    assert status == 200
    rid = headers["x-request-id"]
    await gw.ledger.wait_rows(rid)
    return rid


@pytest.mark.parametrize("case", list(CASES))
@pytest_twisted.ensureDeferred
async def test_every_request_past_auth_has_exactly_one_ledger_row(gw, env, fresh_upstream, case):
    before = set(finalize_records(gw.process))
    ended = await CASES[case](gw, fresh_upstream, env)
    if ended.rid is None:  # the client left before it saw an id
        rid, _ = await wait_new_finalized(gw.process, before)
    else:
        rid = ended.rid
        await wait_finalized(gw.process, rid)
    if ended.status == 401:
        await marker(gw, env)
        assert gw.ledger.rows(rid) == []  # a 401 is no one's spend
        return
    (row,) = await gw.ledger.wait_rows(rid)
    await marker(gw, env)
    assert len(gw.ledger.rows(rid)) == 1  # and never a second one
    key_id = env["limited_key_id"] if case == "rejected-429-stream" else env["key_id"]
    assert row["key_id"] == key_id
    assert row["status"] == ended.status
    assert row["end_reason"] == ended.end
    assert row["model"] == ended.model
    if ended.end in ("ok", "done", "upstream_cut", "client_gone", "upstream_error", "empty"):
        assert row["deployment"] == f"{ended.model}#0"
    else:
        assert row["deployment"] is None  # refused before any attempt
    assert row["cost_usd"] is None and not row["cost_estimated"]  # no price without budgets
    assert row["latency_ms"] >= 0
    assert abs(row["ts"] - time.time()) < 30


@pytest_twisted.ensureDeferred
async def test_a_row_has_the_request_s_tokens(gw, env):
    _, headers, body = await gw.chat(env["key"], chat_doc(env["mock"], prompt="count me"))
    usage = json.loads(body)["usage"]
    (row,) = await gw.ledger.wait_rows(headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        0,
    )


async def spend(gw, query: str = "", key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key or gw.admin_key}"}
    status, _, body = await treq_json(
        "GET", gw.admin + "/aisix/admin/spend" + query, headers=headers
    )
    return status, json.loads(body) if body else None


@pytest.mark.parametrize("group_by", ["key", "model"])
@pytest_twisted.ensureDeferred
async def test_the_spend_report_is_the_sum_of_the_ledger_s_rows(gw, env, group_by):
    for _ in range(2):
        await gw.chat(env["key"], chat_doc(env["up"]))  # the mock upstream's tokens
    await marker(gw, env)
    column = {"key": "key_id", "model": "model"}[group_by]
    expected = {
        id: (n, prompt, completion)
        for id, n, prompt, completion in gw.ledger.query(
            f"SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens)"
            f" FROM ledger GROUP BY {column}"
        )
    }
    assert sum(n for n, _, _ in expected.values()) >= 3
    status, doc = await spend(gw, f"?group_by={group_by}&from=2000-01-01T00:00:00Z")
    assert status == 200, doc
    assert doc["group_by"] == group_by and doc["from"] == "2000-01-01T00:00:00.000Z"
    got = {
        r["id"]: (r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in doc["rows"]
    }
    assert got == expected
    assert all(r["cost_usd"] is None for r in doc["rows"])  # nothing priced the requests


@pytest_twisted.ensureDeferred
async def test_the_spend_report_defaults_to_keys_over_the_last_30_days(gw, env):
    status, doc = await spend(gw)
    assert status == 200
    assert doc["group_by"] == "key"
    start = doc["from"].replace("Z", "+00:00")
    end = doc["to"].replace("Z", "+00:00")
    from datetime import datetime

    span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    assert span.total_seconds() == 30 * 86400
    assert env["key_id"] in {r["id"] for r in doc["rows"]}
    # a range in the past holds nothing
    status, doc = await spend(gw, "?from=2001-01-01T00:00:00Z&to=2001-02-01T00:00:00%2B02:00")
    assert (status, doc["rows"]) == (200, [])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?group_by=team", "group_by must be 'key' or 'model', got 'team'"),
        ("?from=yesterday", "from must be an RFC 3339 date-time"),
        ("?to=2026-12-01T00:00:00", "to must be an RFC 3339 date-time with its offset"),
        ("?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from must not be after to"),
        ("?groupby=key", "unknown parameter 'groupby'"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_report_parameters_are_400_in_the_admin_error_shape(gw, query, message):
    status, doc = await spend(gw, query)
    assert status == 400
    assert list(doc) == ["error_msg"] and message in doc["error_msg"]


@pytest_twisted.ensureDeferred
async def test_the_spend_report_needs_the_admin_key(gw):
    status, doc = await spend(gw, key="not-the-admin-key")
    assert (status, doc) == (401, {"error_msg": "Invalid API key"})
    status, _, body = await treq_json("GET", gw.admin + "/aisix/admin/spend")
    assert (status, json.loads(body)) == (401, {"error_msg": "Missing API key"})


# -- shutdown -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sigterm_flushes_the_rows_still_buffered(tmp_path):
    extra = counted({"deployment": {"ledger": {"flush_interval": 60}}})
    gateway = start_gateway(tmp_path, extra=extra)
    ledger = sqlite_ledger(tmp_path / "ledger.sqlite3")
    model = await new_model(gateway)
    key, _ = await new_key(gateway, [model])
    rids = []
    for _ in range(5):
        status, headers, _ = await gateway.chat(key, chat_doc(model))
        assert status == 200
        rids.append(headers["x-request-id"])
    for rid in rids:
        await wait_finalized(gateway.process, rid)
    assert ledger.count() == 0  # buffered: the batch is a minute away
    assert gateway.process.stop() == 0  # SIGTERM
    assert sorted(r for (r,) in ledger.query("SELECT request_id FROM ledger")) == sorted(rids)
    no_unhandled_errors(gateway.process)


def test_a_ledger_file_the_gateway_cannot_make_fails_start_up(tmp_path):
    from tests.support.gateway import GatewayProcess, free_port, write_config

    (tmp_path / "missing").write_text("a file, so no directory can be made there")
    config = write_config(
        tmp_path,
        free_port(),
        free_port(),
        extra={"deployment": {"ledger": {"path": "missing/ledger.sqlite3"}}},
    )
    code, out, _, _ = GatewayProcess(config).run_to_exit(timeout=10)
    assert code == 1
    assert "ledger: cannot use SQLite file" in out and "cannot make directory" in out


def test_the_ledger_can_be_turned_off(tmp_path):
    gateway = start_gateway(tmp_path, extra={"deployment": {"ledger": {"enabled": False}}})
    try:
        status, body = gateway.admin_call("GET", "/aisix/admin/spend")
        assert status == 404 and "ledger is off" in body["error_msg"]
        assert not (tmp_path / "ledger.sqlite3").exists()
    finally:
        gateway.process.stop()


# -- the database goes away ---------------------------------------------------------------


async def metric(gateway, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = await treq_json("GET", gateway.admin + "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no {name} on /metrics")


async def timed_chats(gateway, key: str, model: str, n: int) -> list[float]:
    """``n`` chats one after the other; each one's seconds (all must be 200)."""
    took = []
    for _ in range(n):
        start = time.monotonic()
        status, _, body = await gateway.chat(key, chat_doc(model))
        took.append(time.monotonic() - start)
        assert status == 200, body
    return took


@pytest_twisted.ensureDeferred
async def test_postgresql_stopped_mid_run_delays_no_request_and_rows_resume(tmp_path, postgres):
    url = postgres.create_database(f"ledger_outage_{int(time.time() * 1000)}")
    ledger = postgres_ledger(url)
    extra = counted({"deployment": {"ledger": {"url": url, "max_buffer": 10, "timeout": 2}}})
    gateway = start_gateway(tmp_path, extra=extra)
    try:
        model = await new_model(gateway)
        key, _ = await new_key(gateway, [model])
        normal = await timed_chats(gateway, key, model, 3)
        await ledger.wait_count(3, timeout=3)

        postgres.stop()  # fast shutdown: the gateway's connection is cut
        try:
            during = await timed_chats(gateway, key, model, 15)
            # normal speed: the mock answers in a millisecond or two; the database is not waited for
            assert max(during) < max(0.5, 10 * max(normal)), (normal, during)
            status, doc = await spend(gateway)
            assert status == 503 and "ledger database unavailable" in doc["error_msg"]
            # 10 rows held (the bound, the batch being retried included), 5 dropped and counted
            await wait_metric(gateway, "twisted_gw_ledger_rows_dropped_total", 5)
            assert await metric(gateway, "twisted_gw_ledger_rows_buffered") == 10
            deadline = time.monotonic() + 3
            while await metric(gateway, "twisted_gw_ledger_write_errors_total") < 1:
                assert time.monotonic() < deadline, "no failed write was counted"
                await task.deferLater(reactor, 0.05, lambda: None)
        finally:
            postgres.start()

        await ledger.wait_count(13, timeout=20)  # retried with backoff (at most 10 s apart)
        assert await metric(gateway, "twisted_gw_ledger_rows_buffered") == 0
        await timed_chats(gateway, key, model, 2)  # and new rows go on as before
        await ledger.wait_count(15, timeout=3)
        status, doc = await spend(gateway, "?group_by=model&from=2000-01-01T00:00:00Z")
        assert status == 200 and [(r["id"], r["requests"]) for r in doc["rows"]] == [(model, 15)]
        assert await metric(gateway, "twisted_gw_ledger_rows_dropped_total") == 5
    finally:
        gateway.process.stop()
    output = gateway.process.output
    assert "ledger: buffer full" in output and "resumed" in output
    assert output.count("ledger: buffer full") == 1  # once a minute at most
    assert "Traceback" not in output


async def wait_metric(gateway, name: str, value: float, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while (have := await metric(gateway, name)) != value:
        assert time.monotonic() < deadline, f"{name} is {have}, not {value}"
        await task.deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_two_gateways_share_one_postgresql_ledger(tmp_path, postgres):
    url = postgres.create_database(f"ledger_shared_{int(time.time() * 1000)}")
    ledger = postgres_ledger(url)
    extra = counted({"deployment": {"ledger": {"url": url}}})
    gateways = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        gateways.append(start_gateway(tmp_path / name, extra=extra))
    try:
        for n, gateway in enumerate(gateways, start=1):
            # each has its own embedded store: the same model name and key id on both
            assert gateway.admin_call(
                "PUT",
                "/aisix/admin/models/shared",
                {"name": "shared-echo", "model": "mock/echo", "provider_config": {}},
            )[0] in (200, 201)
            key = f"sk-shared-{uuid.uuid4().hex}"
            assert gateway.admin_call(
                "PUT", "/aisix/admin/apikeys/team", {"key": key, "allowed_models": ["shared-echo"]}
            )[0] in (200, 201)
            await timed_chats(gateway, key, "shared-echo", n)
        await ledger.wait_count(3, timeout=3)
        for gateway in gateways:  # either one reports what both wrote
            status, doc = await spend(gateway, "?group_by=key")
            assert status == 200
            assert [(r["id"], r["requests"]) for r in doc["rows"]] == [("team", 3)]
    finally:
        for gateway in gateways:
            gateway.process.stop()


# -- several workers ----------------------------------------------------------------------


def test_every_worker_writes_the_one_sqlite_ledger(tmp_path):
    """``server.workers: 2``: each worker writes its rows to the same SQLite
    file (WAL: one writer at a time, readers never wait); the report read
    through either worker counts them all, and /metrics sums the buffers."""
    from tests.test_workers_blackbox import chat_on, pinned, start

    gateway = start(tmp_path, workers=2)
    try:
        conns = list(pinned(gateway).values())  # a demo request per worker, at least
        rids = []
        for i in range(20):
            status, headers, body = chat_on(conns[i % 2], "sk-demo-key")
            assert status == 200, body
            rids.append(headers["x-request-id"])
        ledger = sqlite_ledger(tmp_path / "ledger.sqlite3")
        deadline = time.monotonic() + 5
        while not set(rids) <= {r for (r,) in ledger.query("SELECT request_id FROM ledger")}:
            assert time.monotonic() < deadline, "the workers' rows never all came"
            time.sleep(0.05)
        time.sleep(0.2)  # a second row of any request would be there by now
        every = [r for (r,) in ledger.query("SELECT request_id FROM ledger")]
        assert len(every) == len(set(every)) >= 22  # one row each, the pins' included
        with_pins = len(every)
        status, body = gateway.admin_call("GET", "/aisix/admin/spend?from=2000-01-01T00:00:00Z")
        assert status == 200
        assert [(r["id"], r["requests"]) for r in body["rows"]] == [("demo", with_pins)]
        from tests.support.gateway import http

        status, _, metrics = http("GET", gateway.admin + "/metrics")
        assert b"twisted_gw_ledger_rows_buffered 0.0" in metrics
    finally:
        gateway.process.stop()
