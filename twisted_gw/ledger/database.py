"""The ledger's databases: SQLite (a file, the default) and PostgreSQL
(shared by several gateways), each on a thread of its own.

Why a thread of its own and not ``adbapi.ConnectionPool``: every call runs
on one dedicated thread (``deferToThreadPool`` on a one-thread pool), so a
database that is slow or down holds that thread only, never the reactor's
shared pool (where DNS lookups of upstream calls run), and one connection
serves every call in order (SQLite wants exactly one writer). The
connection is opened on first use and dropped after any error, so the next
call reconnects: when PostgreSQL comes back, writes resume on their own,
without the traceback per failed rollback that adbapi's reconnect logs.

The schema is one table and three indexes, the same on both (see
:data:`SCHEMA`); the SQL is written with ``?`` placeholders, turned into
``%s`` for psycopg2.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from twisted_gw.ledger.interfaces import ILedgerDatabase
from twisted_gw.ledger.rows import COLUMNS, Row

TABLE = "ledger"

#: the table: ``{id}`` is each database's auto-increment key
SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id {{id}},
    ts DOUBLE PRECISION NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT,
    deployment TEXT,
    status INTEGER NOT NULL,
    end_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE PRECISION,
    cost_estimated BOOLEAN NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL
)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_key_ts ON {TABLE} (key_id, ts)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_model_ts ON {TABLE} (model, ts)",
)

INSERT = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
DELETE = f"DELETE FROM {TABLE} WHERE ts < ?"
#: the report's groups: the column each ``group_by`` names
GROUPS = {"key": "key_id", "model": "model"}
SPEND = (
    "SELECT {column}, COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
    " COALESCE(SUM(completion_tokens), 0), SUM(cost_usd)"
    f" FROM {TABLE} WHERE ts >= ? AND ts < ? GROUP BY {{column}}"
)


def spend_sql(group_by: str) -> str:
    """The report's query for ``group_by`` (``key`` or ``model``; anything
    else is a KeyError, so no text of a request reaches the SQL)."""
    column = GROUPS[group_by]
    return SPEND.format(column=column)


@implementer(ILedgerDatabase)
class ThreadedDatabase:
    """One connection on one thread; subclasses say how to connect and write."""

    name = "database"
    #: the auto-increment key column's type in :data:`SCHEMA`
    id_column = "INTEGER PRIMARY KEY"
    placeholder = "?"

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="twisted-gw-ledger")
        self._connection: Any = None
        self._started = False
        self._closed = False

    # -- the thread --------------------------------------------------------------

    def start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._pool.start()

    def close(self) -> defer.Deferred:
        """Stop the thread after the call it runs (each is bounded by the
        database's timeout), off the reactor, then close the connection."""
        self._closed = True
        if not self._started:
            return defer.succeed(None)
        self._started = False
        pool = self._pool
        d = threads.deferToThreadPool(self.reactor, pool, self._disconnect)
        d.addBoth(lambda _: threads.deferToThread(pool.stop))
        return d

    def _run(self, work: Callable[..., Any], *args: Any) -> defer.Deferred:
        if self._closed:
            return defer.fail(RuntimeError("the ledger database is closed"))
        self.start()
        return threads.deferToThreadPool(self.reactor, self._pool, self._transaction, work, *args)

    def _transaction(self, work: Callable[..., Any], *args: Any) -> Any:
        """On the thread: ``work(cursor, *args)`` in a transaction; any error
        drops the connection (the next call opens a new one)."""
        if self._connection is None:
            self._connection = self.connect()
        connection = self._connection
        try:
            cursor = connection.cursor()
            try:
                result = work(cursor, *args)
            finally:
                cursor.close()
            connection.commit()
            return result
        except BaseException:
            self._disconnect()
            raise

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001, S110 - it is being dropped because it failed
                pass

    # -- what subclasses provide -------------------------------------------------

    def connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _insert_rows(self, cursor: Any, rows: Sequence[Row]) -> None:
        cursor.executemany(self._sql(INSERT), rows)

    # -- ILedgerDatabase ---------------------------------------------------------

    def create_schema(self) -> defer.Deferred:
        return self._run(self._create)

    def _create(self, cursor: Any) -> None:
        for statement in SCHEMA:
            cursor.execute(statement.format(id=self.id_column))

    def insert(self, rows: Sequence[Row]) -> defer.Deferred:
        return self._run(self._insert_rows, list(rows))

    def delete_before(self, ts: float) -> defer.Deferred:
        def delete(cursor: Any) -> int:
            cursor.execute(self._sql(DELETE), (ts,))
            return max(cursor.rowcount, 0)

        return self._run(delete)

    def spend(self, group_by: str, start: float, end: float) -> defer.Deferred:
        sql = self._sql(spend_sql(group_by))

        def query(cursor: Any) -> list[tuple]:
            cursor.execute(sql, (start, end))
            return [tuple(r) for r in cursor.fetchall()]

        return self._run(query)


class SqliteDatabase(ThreadedDatabase):
    """A SQLite file: one gateway's ledger, with no server to run.

    WAL journal, so the report's reads and the writer's batches do not wait
    on each other, and an ``sqlite3`` shell can read the file while the
    gateway writes it; ``synchronous=NORMAL`` (a power cut may lose the last
    batches, never corrupt the file)."""

    id_column = "INTEGER PRIMARY KEY"

    def __init__(self, path: str, reactor: Any, timeout: float = 5.0) -> None:
        super().__init__(reactor)
        self.path = path
        self.timeout = timeout
        self.name = f"sqlite {path}"

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
        try:
            set_wal(connection, self.timeout)
            connection.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            connection.close()
            raise
        return connection

    def check(self) -> None:
        """At build, before the reactor runs: make the file's directory (as
        the embedded store does), open the file and create the schema, so a
        place the gateway cannot write fails start-up with one line instead
        of dropping every row later."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot make directory '{directory}': {e.strerror or e}") from None
        connection = self.connect()
        try:
            for statement in SCHEMA:
                connection.execute(statement.format(id=self.id_column))
            connection.commit()
        finally:
            connection.close()


def set_wal(
    connection: sqlite3.Connection, timeout: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the file is locked, for up to
    ``timeout`` seconds. Why: switching a new file to WAL takes an exclusive
    lock and SQLite answers "database is locked" at once instead of calling
    the busy handler (the time is the sum of the waits: the switch itself is
    instant), so processes opening one new file together (workers,
    gateways started side by side) failed start-up, about 1 start in 6 with
    two. ``sleep`` is where the waiting goes (a thread, or start-up before
    the reactor runs; never the reactor)."""
    waited, delay = 0.0, 0.002
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or waited + delay > timeout:
                raise
        sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.1)


class PostgresDatabase(ThreadedDatabase):
    """A PostgreSQL database (psycopg2), which several gateways share.

    ``connect_timeout`` and ``statement_timeout`` are the ledger's
    ``timeout``, so a call never holds the thread longer; rows go in with
    ``execute_values`` (one statement a batch, not one a row)."""

    id_column = "BIGSERIAL PRIMARY KEY"
    placeholder = "%s"
    name = "postgresql"

    def __init__(self, url: str, reactor: Any, timeout: float = 5.0) -> None:
        super().__init__(reactor)
        self._url = url
        self.timeout = timeout

    def connect(self) -> Any:
        import psycopg2

        seconds = max(1, round(self.timeout))
        return psycopg2.connect(
            self._url,
            connect_timeout=seconds,
            options=f"-c statement_timeout={seconds * 1000}",
            application_name="twisted-gw-ledger",
        )

    def _insert_rows(self, cursor: Any, rows: Sequence[Row]) -> None:
        from psycopg2.extras import execute_values

        head = INSERT.split(" VALUES ")[0]
        execute_values(cursor, head + " VALUES %s", rows, page_size=max(len(rows), 1))


def open_database(path: str, url: str | None, reactor: Any, timeout: float) -> ThreadedDatabase:
    """The configured database: PostgreSQL for a URL, else the SQLite file,
    checked at once (its directory must exist and be writable)."""
    if url is not None:
        return PostgresDatabase(url, reactor, timeout)
    database = SqliteDatabase(path, reactor, timeout)
    database.check()
    return database
