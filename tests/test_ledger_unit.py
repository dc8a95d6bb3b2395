"""Issue 17, in memory: the ledger's rows, its writer's batching, bounds,
retries, retention and shutdown flush on a ``task.Clock``, the real SQLite
table (schema, insert, retention delete, the report's query), and the
report's parameters."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, task

from twisted_gw.config.entities import ApiKey
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.manager import HookManager
from twisted_gw.ledger.database import SCHEMA, TABLE, SqliteDatabase, set_wal, spend_sql
from twisted_gw.ledger.hook import LedgerHook
from twisted_gw.ledger.report import (
    DEFAULT_SPAN,
    ReportError,
    SpendQuery,
    parse_query,
    parse_time,
    spend_document,
)
from twisted_gw.ledger.rows import COLUMNS, row_of
from twisted_gw.ledger.writer import LOG_INTERVAL, LedgerWriter

T0 = 1_796_000_000.0


class FakeDatabase:
    """An ILedgerDatabase whose every call waits for the test to answer it."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, defer.Deferred]] = []
        self.rows: list[tuple] = []
        self.started = False
        self.closed = False

    def _call(self, what: str, arg: Any = None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((what, arg, d))
        return d

    def start(self) -> None:
        self.started = True

    def create_schema(self) -> defer.Deferred:
        return self._call("schema")

    def insert(self, rows: list) -> defer.Deferred:
        d = self._call("insert", list(rows))
        d.addCallback(lambda r: self.rows.extend(rows) or r)
        return d

    def delete_before(self, ts: float) -> defer.Deferred:
        return self._call("delete", ts)

    def spend(self, group_by: str, start: float, end: float) -> defer.Deferred:
        return self._call("spend", (group_by, start, end))

    def close(self) -> defer.Deferred:
        self.closed = True
        return defer.succeed(None)

    # the test's side
    def pending(self) -> list[str]:
        return [what for what, _, d in self.calls if not d.called]

    def answer(self, ok: bool = True, result: Any = None) -> None:
        """Answer the oldest pending call (and let the schema's follow-up run)."""
        for _, _, d in self.calls:
            if not d.called:
                if ok:
                    d.callback(result)
                else:
                    d.errback(RuntimeError("connection refused"))
                return
        raise AssertionError("no pending call")

    def write_all(self) -> None:
        while self.pending():
            self.answer()


@pytest.fixture
def capture_log():
    """``capture_log(text)``: the writer's log lines so far that hold ``text``."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "twisted_gw.ledger.writer":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lambda text: [line for line in lines if text in line]
    globalLogPublisher.removeObserver(observe)


def row(n: int) -> tuple:
    return (T0 + n, f"r-{n}", "k", "m", "m#0", 200, "ok", 1, 0, 1, None, False, 1.0)


def writer(clock: task.Clock, db: FakeDatabase, **kw: Any) -> LedgerWriter:
    kw.setdefault("retention_days", 0)
    return LedgerWriter(db, clock, **kw)


# -- batching ---------------------------------------------------------------------------


def test_a_row_is_written_at_most_one_second_after_it_came():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db)
    w.append(row(1))
    clock.advance(0.5)
    w.append(row(2))
    assert db.pending() == []  # nothing on the request path
    clock.advance(0.5)  # a second after the first row: one batch with both
    assert db.pending() == ["schema"]
    db.write_all()
    assert [r[1] for r in db.rows] == ["r-1", "r-2"]
    assert w.written == 2 and w.held == 0


def test_a_full_batch_goes_at_once_and_the_rest_within_the_second():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db, batch_size=3)
    for n in range(4):
        w.append(row(n))
    clock.advance(0)
    db.write_all()  # schema, then the first three
    assert len(db.rows) == 3
    assert db.pending() == []
    clock.advance(1.0)
    db.write_all()
    assert len(db.rows) == 4


def test_rows_that_came_during_a_write_go_in_the_next_batch():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db)
    w.append(row(1))
    clock.advance(1.0)
    db.answer()  # the schema; the insert of row 1 is in flight
    w.append(row(2))
    assert db.pending() == ["insert"]
    clock.advance(0.6)
    db.answer()  # row 1 written; row 2 has waited 0.6 s
    clock.advance(0.39)
    assert db.pending() == []
    clock.advance(0.01)
    assert db.pending() == ["insert"]
    db.answer()
    assert [r[1] for r in db.rows] == ["r-1", "r-2"]


# -- bounds -----------------------------------------------------------------------------


def test_rows_beyond_the_buffer_are_dropped_and_counted():
    clock, db, registry = task.Clock(), FakeDatabase(), CollectorRegistry()
    w = writer(clock, db, max_buffer=5, batch_size=2, metrics=registry)
    for n in range(3):
        w.append(row(n))
    clock.advance(0)  # a full batch of two goes: schema call in flight
    for n in range(3, 10):
        w.append(row(n))  # 2 in flight + 1 buffered + 2 more fit; 5 dropped
    assert w.held == 5
    assert w.dropped == 5
    assert registry.get_sample_value("twisted_gw_ledger_rows_dropped_total") == 5
    assert registry.get_sample_value("twisted_gw_ledger_rows_buffered") == 5
    while db.pending() or w.held:
        db.write_all()
        clock.advance(1.0)
    assert [r[1] for r in db.rows] == ["r-0", "r-1", "r-2", "r-3", "r-4"]
    assert registry.get_sample_value("twisted_gw_ledger_rows_written_total") == 5


def test_drops_are_logged_at_most_once_a_minute(capture_log):
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db, max_buffer=1)
    w.append(row(0))
    for n in range(1, 50):
        w.append(row(n))
    clock.advance(LOG_INTERVAL / 2)
    w.append(row(50))
    assert len(capture_log("buffer full")) == 1
    clock.advance(LOG_INTERVAL / 2)
    w.append(row(51))
    lines = capture_log("buffer full")
    assert len(lines) == 2
    assert "dropped 50 rows" in lines[1]  # those since the last line
    assert w.dropped == 51


# -- failures ---------------------------------------------------------------------------


def test_a_failed_batch_is_retried_with_backoff_and_keeps_its_place(capture_log):
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db, max_backoff=2.0)
    w.append(row(1))
    clock.advance(1.0)
    db.answer(ok=False)  # the schema fails: the database is down
    assert w.held == 1 and db.pending() == []
    w.append(row(2))
    clock.advance(0.49)
    assert db.pending() == []
    clock.advance(0.01)  # first retry after 0.5 s
    db.answer(ok=False)
    clock.advance(1.0)  # then 1 s
    db.answer(ok=False)
    clock.advance(2.0)  # then 2 s, the cap
    db.answer(ok=False)
    clock.advance(1.99)
    assert db.pending() == []
    clock.advance(0.01)
    db.write_all()  # it came back: the schema is created again, then the rows
    assert [what for what, _, _ in db.calls][-2:] == ["schema", "insert"]
    assert [r[1] for r in db.rows] == ["r-1", "r-2"]  # the failed batch kept its place
    assert len(capture_log("failed: RuntimeError: connection refused")) == 1  # once a minute
    assert len(capture_log("resumed")) == 1


def test_the_schema_is_created_once_while_writes_succeed():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db)
    for n in range(3):
        w.append(row(n))
        clock.advance(1.0)
        db.write_all()
    assert [what for what, _, _ in db.calls] == ["schema", "insert", "insert", "insert"]


# -- retention and shutdown -------------------------------------------------------------


def test_retention_deletes_rows_older_than_its_days_every_interval():
    clock, db = task.Clock(), FakeDatabase()
    clock.advance(T0)
    w = LedgerWriter(db, clock, retention_days=7, retention_interval=3600)
    w.start()
    assert db.started
    assert [(what, arg) for what, arg, _ in db.calls] == [
        ("schema", None),  # created at start
        ("delete", T0 - 7 * 86400),
    ]
    db.write_all()
    clock.advance(3600)
    assert [(what, arg) for what, arg, _ in db.calls][-1] == ("delete", T0 + 3600 - 7 * 86400)


def test_no_retention_delete_with_zero_days():
    clock, db = task.Clock(), FakeDatabase()
    LedgerWriter(db, clock, retention_days=0).start()
    clock.advance(86400)
    assert [what for what, _, _ in db.calls] == ["schema"]


def test_the_schema_made_at_start_is_not_made_again_for_the_first_write():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db)
    w.start()
    db.answer()
    w.append(row(1))
    clock.advance(1.0)
    db.write_all()
    assert [what for what, _, _ in db.calls] == ["schema", "insert"]


def test_close_flushes_what_is_buffered():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db, batch_size=2, flush_interval=30.0)
    for n in range(5):
        w.append(row(n))
    clock.advance(0)
    closing = w.close(timeout=2.0)
    db.write_all()
    db.write_all()
    db.write_all()
    assert len(db.rows) == 5
    assert closing.called and db.closed


def test_close_gives_up_after_its_bound_and_counts_the_rest_dropped(capture_log):
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db, flush_interval=30.0)
    for n in range(3):
        w.append(row(n))
    closing = w.close(timeout=2.0)
    assert db.pending() == ["schema"]  # the database does not answer
    w.append(row(3))  # a request the drain ended, after the batch went
    clock.advance(2.0)
    assert closing.called and db.closed
    assert capture_log("4 rows not written at shutdown")
    assert w.dropped == 1  # the buffered one; the batch in flight counts when it ends
    db.answer(ok=False)  # the database refuses it late: dropped, never retried
    assert w.dropped == 4 and db.pending() == []


def test_a_batch_the_database_takes_after_shutdown_s_bound_counts_as_written():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db, flush_interval=30.0)
    w.append(row(1))
    w.close(timeout=2.0)
    clock.advance(2.0)
    db.write_all()  # late, but written
    assert (w.written, w.dropped) == (1, 0)


def test_close_stops_at_the_first_refused_batch():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db)
    w.append(row(1))
    closing = w.close(timeout=2.0)
    db.answer(ok=False)
    assert closing.called and w.dropped == 1


# -- rows and the hook ------------------------------------------------------------------


def ctx(**kw: Any) -> RequestContext:
    c = RequestContext(
        "rid-1", T0, "POST", "/v1/chat/completions", "/v1/chat/completions", "-", Snapshot()
    )
    for name, value in kw.items():
        setattr(c, name, value)
    return c


KEY = ApiKey("team-a", "sk-secret", frozenset({"gpt"}), None, {})


def test_a_request_that_never_got_past_auth_has_no_row():
    assert row_of(ctx(status=401, end_reason="rejected"), T0 + 1) is None


def test_a_row_holds_what_the_request_did():
    c = ctx(
        api_key=KEY,
        model_name="gpt",
        target="gpt#1",
        status=200,
        end_reason="done",
        finished_at=T0 + 0.25,
        usage={
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 6},
        },
    )
    r = row_of(c, T0 + 9)
    assert dict(zip(COLUMNS, r, strict=True)) == {
        "ts": T0 + 0.25,
        "request_id": "rid-1",
        "key_id": "team-a",
        "model": "gpt",
        "deployment": "gpt#1",
        "status": 200,
        "end_reason": "done",
        "prompt_tokens": 10,
        "cached_tokens": 6,
        "completion_tokens": 4,
        "cost_usd": None,  # no budget hook ran
        "cost_estimated": False,
        "latency_ms": 250.0,
    }


def test_a_row_takes_the_budget_hook_s_cost_and_ignores_junk_usage():
    c = ctx(api_key=KEY, status=200, usage={"prompt_tokens": "9", "completion_tokens": -1})
    c.cost_usd = 0.0123  # what the budget hook sets at finalize
    c.cost_estimated = True
    r = dict(zip(COLUMNS, row_of(c, T0 + 1), strict=True))
    assert (r["cost_usd"], r["cost_estimated"]) == (0.0123, True)
    assert (r["prompt_tokens"], r["completion_tokens"], r["cached_tokens"]) == (0, 0, 0)
    assert r["model"] is None and r["ts"] == T0 + 1


def test_the_hook_writes_exactly_one_row_per_finalize():
    clock, db = task.Clock(), FakeDatabase()
    w = writer(clock, db)
    hooks = HookManager([LedgerHook(w, clock)])
    c = ctx(api_key=KEY, status=200)
    assert hooks.finalize(c, "ok")
    assert not hooks.finalize(c, "ok")
    hooks.finalize(ctx(status=401), "rejected")  # no key: no row
    assert w.held == 1


# -- the report's parameters ------------------------------------------------------------


def test_report_defaults_are_by_key_over_the_last_30_days():
    assert parse_query({}, T0) == SpendQuery("key", T0 - DEFAULT_SPAN, T0)


def test_report_reads_rfc3339_with_offsets_and_fractions():
    q = parse_query(
        {
            "group_by": ["model"],
            "from": ["2026-12-01T00:00:00Z"],
            "to": ["2026-12-01T02:30:00.5+02:00"],
        },
        T0,
    )
    assert q.group_by == "model"
    assert q.end - q.start == 30 * 60 + 0.5
    assert parse_time("to", "2026-12-01t00:00:00z") == q.start
    # a '+' left unescaped in a query string arrives as a space
    assert parse_time("to", "2026-12-01T02:00:00 02:00") == q.start


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"group_by": ["team"]}, "group_by must be 'key' or 'model', got 'team'"),
        ({"from": ["yesterday"]}, "from must be an RFC 3339 date-time"),
        ({"to": ["2026-12-01T00:00:00"]}, "to must be an RFC 3339 date-time with its offset"),
        ({"to": ["2026-13-01T00:00:00Z"]}, "to must be an RFC 3339"),
        (
            {"from": ["2026-12-02T00:00:00Z"], "to": ["2026-12-01T00:00:00Z"]},
            "from must not be after to",
        ),
        ({"groupby": ["key"]}, "unknown parameter 'groupby' (known: group_by, from, to)"),
        ({"group_by": ["key", "model"]}, "parameter 'group_by' must be given once"),
    ],
)
def test_report_parameters_that_do_not_parse_say_why(args, message):
    with pytest.raises(ReportError) as raised:
        parse_query(args, T0)
    assert message in str(raised.value)


def test_report_groups_by_cost_then_requests_with_unpriced_last():
    q = SpendQuery("key", T0, T0 + 60)
    doc = spend_document(q, [("a", 1, 1, 1, None), ("b", 5, 10, 2, 0.5), ("c", 9, 3, 3, 0.5)])
    assert [r["id"] for r in doc["rows"]] == ["c", "b", "a"]
    assert doc["from"] == "2026-11-30T00:53:20.000Z" and doc["group_by"] == "key"
    assert doc["rows"][2] == {
        "id": "a",
        "requests": 1,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cost_usd": None,
    }


def test_only_the_two_groups_reach_the_sql():
    assert "GROUP BY key_id" in spend_sql("key")
    assert "GROUP BY model" in spend_sql("model")
    with pytest.raises(KeyError):
        spend_sql("key_id; DROP TABLE ledger")


# -- the real SQLite table --------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path):
    from twisted.internet import reactor

    db = SqliteDatabase(str(tmp_path / "ledger.sqlite3"), reactor)
    db.check()
    yield db
    pytest_twisted.blockon(db.close())


def test_the_schema_is_a_table_with_indexes_on_time_key_and_model(sqlite_db):
    con = sqlite3.connect(sqlite_db.path)
    names = {n for (n,) in con.execute("SELECT name FROM sqlite_master")}
    assert {TABLE, f"{TABLE}_ts", f"{TABLE}_key_ts", f"{TABLE}_model_ts"} <= names
    columns = [r[1] for r in con.execute(f"PRAGMA table_info({TABLE})")]
    assert columns == ["id", *COLUMNS]
    sqlite_db.check()  # IF NOT EXISTS: again is fine
    assert len(SCHEMA) == 4


@pytest_twisted.ensureDeferred
async def test_rows_go_in_the_report_sums_them_and_retention_deletes_the_old(sqlite_db):
    await sqlite_db.create_schema()
    rows = [
        (T0 - 10 * 86400, "old", "k1", "m1", "m1#0", 200, "ok", 100, 0, 100, 1.0, False, 1.0),
        (T0 + 1, "r1", "k1", "m1", "m1#0", 200, "ok", 10, 2, 5, 0.25, False, 3.0),
        (T0 + 2, "r2", "k1", "m2", "m2#0", 502, "upstream_error", 0, 0, 0, None, False, 2.0),
        (T0 + 3, "r3", "k2", "m1", "m1#1", 200, "done", 7, 0, 3, 0.125, True, 9.0),
        (T0 + 4, "r4", "k2", None, None, 400, "rejected", 0, 0, 0, None, False, 0.5),
    ]
    await sqlite_db.insert(rows)
    by_key = await sqlite_db.spend("key", T0, T0 + 60)
    assert sorted(by_key) == [("k1", 2, 10, 5, 0.25), ("k2", 2, 7, 3, 0.125)]
    by_model = await sqlite_db.spend("model", T0, T0 + 60)
    assert sorted(by_model, key=str) == sorted(
        [("m1", 2, 17, 8, 0.375), ("m2", 1, 0, 0, None), (None, 1, 0, 0, None)], key=str
    )
    assert await sqlite_db.spend("key", T0 + 3, T0 + 4) == [("k2", 1, 7, 3, 0.125)]  # to excluded
    assert await sqlite_db.delete_before(T0 - 86400) == 1
    assert len(await sqlite_db.spend("key", 0, T0 + 60)) == 2
    everything = sqlite3.connect(sqlite_db.path).execute(f"SELECT COUNT(*) FROM {TABLE}")
    assert everything.fetchone() == (4,)


def test_the_check_makes_the_directory_or_says_why_it_cannot(tmp_path):
    from twisted.internet import reactor

    SqliteDatabase(str(tmp_path / "new" / "ledger.sqlite3"), reactor).check()
    assert (tmp_path / "new" / "ledger.sqlite3").is_file()
    (tmp_path / "afile").write_text("")
    with pytest.raises(OSError, match="cannot make directory"):
        SqliteDatabase(str(tmp_path / "afile" / "ledger.sqlite3"), reactor).check()


class _LockedAtFirst:
    """A connection whose WAL switch answers "database is locked" ``times``
    times (what SQLite answers at once when another process opens the new
    file at the same moment), then succeeds."""

    def __init__(self, times: int, message: str = "database is locked") -> None:
        self.left, self.message, self.calls = times, message, 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise sqlite3.OperationalError(self.message)


def test_the_wal_switch_is_retried_while_another_process_holds_the_file():
    waits: list[float] = []
    connection = _LockedAtFirst(4)
    set_wal(connection, 5.0, waits.append)  # type: ignore[arg-type]
    assert connection.calls == 5
    assert waits == [0.002, 0.004, 0.008, 0.016]  # backing off, never the reactor's time


def test_the_wal_switch_gives_up_after_the_timeout_and_other_errors_at_once():
    waits: list[float] = []
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        set_wal(_LockedAtFirst(10**6), 0.3, waits.append)  # type: ignore[arg-type]
    assert waits and sum(waits) <= 0.3 and max(waits) <= 0.1
    broken = _LockedAtFirst(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        set_wal(broken, 5.0, waits.append)  # type: ignore[arg-type]
    assert broken.calls == 1


def _check_at_once(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        SqliteDatabase(path, None).check()
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the test
        results.put(repr(e))


def test_workers_opening_a_new_ledger_file_together_all_succeed(tmp_path):
    # Before: 4 or 5 rounds in 30 of two processes failed ("database is locked").
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    for round_ in range(6):
        path = str(tmp_path / f"ledger-{round_}.sqlite3")
        barrier, results = spawn.Barrier(4), spawn.Queue()
        processes = [
            spawn.Process(target=_check_at_once, args=(path, barrier, results)) for _ in range(4)
        ]
        for process in processes:
            process.start()
        answers = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(30)
        assert answers == ["ok"] * 4, answers
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


# -- the config keys --------------------------------------------------------------------


def _config(tmp_path, doc: dict) -> Any:
    import yaml

    from twisted_gw.config.file import load_config

    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(str(path), environ={})


def test_the_ledger_is_sqlite_next_to_the_store_by_default(tmp_path):
    config = _config(tmp_path, {"deployment": {"store": {"path": "data/store.json"}}})
    assert config.ledger.path == str(tmp_path / "data" / "ledger.sqlite3")
    assert config.ledger.url is None
    assert (config.ledger.retention_days, config.ledger.max_buffer) == (90, 10_000)
    assert (config.ledger.batch_size, config.ledger.flush_interval) == (500, 1.0)


def test_with_etcd_the_ledger_file_is_next_to_the_config_file(tmp_path):
    config = _config(tmp_path, {"deployment": {"etcd": {"host": "http://127.0.0.1:1"}}})
    assert config.ledger.path == str(tmp_path / "ledger.sqlite3")


def test_ledger_keys_are_read_and_checked(tmp_path):
    from twisted_gw.config.file import ConfigError

    doc = {
        "deployment": {
            "ledger": {
                "url": "postgresql://u:p@db:5432/llm",
                "retention_days": 0,
                "max_buffer": 5,
                "path": "l.db",
            }
        }
    }
    config = _config(tmp_path, doc)
    assert config.ledger.url == "postgresql://u:p@db:5432/llm"
    assert config.ledger.retention_days == 0 and config.ledger.max_buffer == 5
    assert config.ledger.path == str(tmp_path / "l.db")
    assert "u:p" not in repr(config.ledger)  # a password never reaches a log line
    assert _config(tmp_path, {"deployment": {"ledger": {"enabled": False}}}).ledger is None
    for bad, message in [
        (
            {"url": "mysql://db"},
            "deployment.ledger.url must start with postgresql:// or postgres://",
        ),
        ({"retention_days": -1}, "deployment.ledger.retention_days must be a non-negative integer"),
        ({"max_buffer": 0}, "deployment.ledger.max_buffer must be a positive integer, got 0"),
        (
            {"flush_interval": "soon"},
            "deployment.ledger.flush_interval must be a number of seconds",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            _config(tmp_path, {"deployment": {"ledger": bad}})
    warned = _config(tmp_path, {"deployment": {"ledger": {"retention": 3}}}).warnings
    assert warned == (
        "unknown config key 'deployment.ledger.retention' (did you mean 'retention_days'?)",
    )
