"""What the request ledger (issue 17) costs a request on the reactor thread.

Run by hand: ``PYTHONPATH=. python bench/ledger_cost.py``. Two numbers:

1. the finalize hook alone (the row tuple and the buffer append, on a
   ``task.Clock`` that never fires, so no batch is written): the cost on
   the request's own path;
2. the reactor thread's CPU time (``time.thread_time``) per row for 50,000
   requests finalized 100 a turn into the real SQLite writer until every row
   is written: finalize, batches, the thread hand-offs and their Deferreds
   (the SQL itself runs on the ledger's thread and is not counted).
"""

from __future__ import annotations

import os
import tempfile
import time
import timeit

from twisted.internet import defer, task

from twisted_gw.config.entities import ApiKey
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.hooks.context import RequestContext
from twisted_gw.ledger.database import SqliteDatabase
from twisted_gw.ledger.hook import LedgerHook
from twisted_gw.ledger.writer import LedgerWriter

KEY = ApiKey("team-a", "sk", frozenset({"gpt"}), None, {})
SNAPSHOT = Snapshot()


class _NullDatabase:
    name = "null"

    def start(self) -> None:
        pass

    def create_schema(self) -> defer.Deferred:
        return defer.succeed(None)

    def insert(self, rows: list) -> defer.Deferred:
        return defer.succeed(None)


def _ctx() -> RequestContext:
    c = RequestContext(
        "rid-1", 1.0, "POST", "/v1/chat/completions", "/v1/chat/completions", "-", SNAPSHOT
    )
    c.api_key, c.model_name, c.target, c.status, c.end_reason = KEY, "gpt", "gpt#0", 200, "ok"
    c.usage = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
    c.finished_at = 1.2
    return c


def finalize_only(n: int = 200_000) -> float:
    clock = task.Clock()
    writer = LedgerWriter(_NullDatabase(), clock, max_buffer=10**9, retention_days=0)
    hook = LedgerHook(writer, clock)
    contexts = iter([_ctx() for _ in range(n)])
    return timeit.timeit(lambda: hook.finalize(next(contexts)), number=n) / n


def with_sqlite(n: int = 50_000) -> tuple[float, float]:
    from twisted.internet import reactor

    db = SqliteDatabase(os.path.join(tempfile.mkdtemp(), "ledger.sqlite3"), reactor)
    db.check()
    writer = LedgerWriter(db, reactor, max_buffer=10**6, retention_days=0)
    hook = LedgerHook(writer, reactor)
    contexts = [_ctx() for _ in range(n)]
    result: dict[str, float] = {}

    def run() -> None:
        writer.start()
        cpu, wall = time.thread_time(), time.perf_counter()
        for i in range(0, n, 100):
            reactor.callLater(
                i / 100_000, lambda i=i: [hook.finalize(c) for c in contexts[i : i + 100]]
            )

        def check() -> None:
            if writer.written >= n:
                result["cpu"] = time.thread_time() - cpu
                result["wall"] = time.perf_counter() - wall
                writer.close().addBoth(lambda _: reactor.stop())
            else:
                reactor.callLater(0.01, check)

        reactor.callLater(0.01, check)

    reactor.callWhenRunning(run)
    reactor.run()
    return result["cpu"] / n, result["wall"]


if __name__ == "__main__":
    print(f"finalize hook (row + append): {finalize_only() * 1e6:.2f} us a request")
    cpu, wall = with_sqlite()
    print(
        f"reactor thread, SQLite writer end to end: {cpu * 1e6:.2f} us a row (all in {wall:.2f} s)"
    )
