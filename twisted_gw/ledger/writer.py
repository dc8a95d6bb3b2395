"""The ledger's writer: a bounded buffer between the requests' finalize and
the database, written in batches off the request path.

What it guarantees (issue 17):

- a request never waits for the database: :meth:`LedgerWriter.append` puts a
  row in memory and at most arms a timer;
- a row is written at most ``flush_interval`` (1 s) after it was appended
  while the database keeps up (a full batch goes at once);
- the memory is bounded: at most ``max_buffer`` rows are held, the batch
  being written included; what does not fit is dropped, counted in
  ``twisted_gw_ledger_rows_dropped_total`` and logged at most once a minute;
- a batch that failed goes back to the front of the buffer (it was counted
  in the bound, so it always fits) and is retried after a backoff that
  doubles from 0.5 s up to ``max_backoff``; the next write creates the
  schema again first, in case the database came back empty;
- retention: every ``retention_interval`` a delete of the rows older than
  ``retention_days`` runs on the database's thread (0 days: kept forever);
- :meth:`close` flushes what is buffered for at most ``timeout`` seconds.

Time is the ``clock`` (the reactor, or a ``task.Clock`` in tests).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_gw.ledger.interfaces import ILedgerDatabase
from twisted_gw.ledger.rows import Row

log = Logger()

DEFAULT_MAX_BUFFER = 10_000
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_RETENTION_DAYS = 90
#: seconds between retention deletes
RETENTION_INTERVAL = 3600.0
#: the longest pause between retries of a failed write
MAX_BACKOFF = 10.0
FIRST_BACKOFF = 0.5
#: seconds between two log lines about the same trouble (drops, failed writes)
LOG_INTERVAL = 60.0
DAY = 86_400.0


class _Throttle:
    """Says yes at most once per ``interval`` seconds of ``clock``."""

    def __init__(self, clock: Any, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._last: float | None = None

    def ready(self) -> bool:
        now = self.clock.seconds()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


class LedgerWriter:
    """Buffers rows and writes them in batches to an :class:`ILedgerDatabase`."""

    def __init__(
        self,
        database: ILedgerDatabase,
        clock: Any,
        metrics: Any = None,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        retention_interval: float = RETENTION_INTERVAL,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.database = database
        self.clock = clock
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retention_days = retention_days
        self.retention_interval = retention_interval
        self.max_backoff = max_backoff
        self._buffer: deque[Row] = deque()
        #: when the oldest row of the buffer came (None: empty)
        self._oldest: float | None = None
        self._timer: Any = None
        self._writing = 0  # rows of the write in flight (0: none)
        self._waiters: list[defer.Deferred] = []
        self._backoff = 0.0
        self._schema_ok = False
        self._failing = False
        self._closed = False
        #: shutdown's flush ran out of time: nothing is retried any more
        self._gave_up = False
        self._retention: task.LoopingCall | None = None
        self._drop_log = _Throttle(clock, LOG_INTERVAL)
        self._error_log = _Throttle(clock, LOG_INTERVAL)
        self._dropped_since_log = 0
        self.dropped = 0
        self.written = 0
        self._counters: tuple[Any, Any, Any] | None = None
        if metrics is not None:
            self._counters = _register(metrics, self)

    # -- the request path ------------------------------------------------------------

    @property
    def held(self) -> int:
        """Rows in memory: buffered, and being written."""
        return len(self._buffer) + self._writing

    def append(self, row: Row) -> None:
        """Keep ``row`` for the next batch, or drop it when the buffer is full.

        O(1) and never blocks: a deque append, and a timer armed when the
        buffer was empty."""
        if len(self._buffer) + self._writing >= self.max_buffer:
            self._drop(1)
            return
        buffer = self._buffer
        buffer.append(row)
        if self._oldest is None:
            self._oldest = self.clock.seconds()
        if self._writing or self._failing:
            return  # the write's end, or the retry, schedules the next
        if len(buffer) >= self.batch_size:
            self._schedule(0.0)
        elif self._timer is None:
            self._schedule(self.flush_interval)

    # -- batches ---------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.getTime() <= self.clock.seconds() + delay:
                return
            timer.cancel()
        self._timer = self.clock.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._writing or not self._buffer:
            return
        buffer = self._buffer
        batch = [buffer.popleft() for _ in range(min(self.batch_size, len(buffer)))]
        self._oldest = self.clock.seconds() if buffer else None
        self._writing = len(batch)
        d = self._write(batch)
        d.addCallbacks(self._written, self._failed, errbackArgs=(batch,))

    def _write(self, batch: list[Row]) -> defer.Deferred:
        if self._schema_ok:
            return self.database.insert(batch)
        d = self.database.create_schema()

        def created(_: object) -> defer.Deferred:
            self._schema_ok = True
            return self.database.insert(batch)

        return d.addCallback(created)

    def _written(self, _: object) -> None:
        n, self._writing = self._writing, 0
        self.written += n
        if self._counters is not None:
            self._counters[1].inc(n)
        self._backoff = 0.0
        if self._failing:
            self._failing = False
            log.info(
                "ledger: writes to {db} resumed ({n} rows buffered)",
                db=self.database.name,
                n=len(self._buffer),
            )
        self._notify(True)
        if self._buffer:
            if len(self._buffer) >= self.batch_size or self._oldest is None:
                self._schedule(0.0)
            else:
                waited = self.clock.seconds() - self._oldest
                self._schedule(max(0.0, self.flush_interval - waited))

    def _failed(self, failure: Failure, batch: list[Row]) -> None:
        self._writing = 0
        if self._gave_up:  # after shutdown's bound: nothing will retry it
            self._count_dropped(len(batch))
            self._notify(False)
            return
        self._buffer.extendleft(reversed(batch))  # it was counted in the bound: it fits
        self._oldest = self.clock.seconds()
        self._schema_ok = False  # the database may have come back empty
        self._failing = True
        self._backoff = min(self.max_backoff, self._backoff * 2 or FIRST_BACKOFF)
        if self._counters is not None:
            self._counters[2].inc()
        if self._error_log.ready():
            log.warn(
                "ledger: writing {n} rows to {db} failed: {error}; {held} rows buffered,"
                " retrying in {delay:g}s",
                n=len(batch),
                db=self.database.name,
                error=_text(failure),
                held=self.held,
                delay=self._backoff,
            )
        self._notify(False)
        if not self._closed:
            self._schedule(self._backoff)

    def _notify(self, ok: bool) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:  # a shutdown that gave up cancelled it
                d.callback(ok)

    def _count_dropped(self, n: int) -> None:
        self.dropped += n
        if self._counters is not None and n:
            self._counters[0].inc(n)

    def _drop(self, n: int) -> None:
        self._count_dropped(n)
        self._dropped_since_log += n
        if self._drop_log.ready():
            log.warn(
                "ledger: buffer full ({max} rows, {db} is not keeping up); dropped {n} rows"
                " since the last such line"
                " (twisted_gw_ledger_rows_dropped_total)",
                max=self.max_buffer,
                db=self.database.name,
                n=self._dropped_since_log,
            )
            self._dropped_since_log = 0

    # -- retention -------------------------------------------------------------------

    def retain(self) -> defer.Deferred:
        """Delete the rows older than ``retention_days``; the number deleted."""
        cutoff = self.clock.seconds() - self.retention_days * DAY
        d = self.database.delete_before(cutoff)

        def failed(failure: Failure) -> int:
            if self._error_log.ready():
                log.warn(
                    "ledger: retention delete on {db} failed: {error}",
                    db=self.database.name,
                    error=_text(failure),
                )
            return 0

        return d.addErrback(failed)

    # -- the service's life ------------------------------------------------------------

    def start(self) -> None:
        """Start the database's thread, create the schema, start retention.

        A database that is down now is no start-up failure: the schema is
        created again before the first write that finds it back."""
        self.database.start()

        def created(_: object) -> None:
            self._schema_ok = True

        def failed(failure: Failure) -> None:
            if self._error_log.ready():
                log.warn(
                    "ledger: creating the schema on {db} failed: {error}; retried before"
                    " the next write",
                    db=self.database.name,
                    error=_text(failure),
                )

        self.database.create_schema().addCallbacks(created, failed)
        if self.retention_days > 0 and self._retention is None:
            self._retention = task.LoopingCall(self.retain)
            self._retention.clock = self.clock
            self._retention.start(self.retention_interval, now=True).addErrback(
                lambda f: log.failure("ledger retention stopped", f)
            )

    def close(self, timeout: float = 2.0) -> defer.Deferred:
        """Flush what is buffered for at most ``timeout`` seconds (one try per
        batch: a database that is down loses what is left, counted as
        dropped), then stop the database's thread."""
        self._closed = True
        if self._retention is not None and self._retention.running:
            self._retention.stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        drain = defer.Deferred.fromCoroutine(self._drain())
        drain.addTimeout(timeout, self.clock)
        drain.addErrback(lambda _: None)

        def lost(_: object) -> defer.Deferred:
            left = self.held
            if left:
                log.warn(
                    "ledger: {n} rows not written at shutdown ({db} did not take them in time)",
                    n=left,
                    db=self.database.name,
                )
                # the buffer's rows are lost now; a write still in flight
                # counts when it ends (written, or dropped if it fails)
                self._count_dropped(len(self._buffer))
                self._buffer.clear()
            self._gave_up = True
            return self.database.close()

        return drain.addCallback(lost)

    async def _drain(self) -> None:
        while self._buffer or self._writing:
            if not self._writing:
                self._flush()
            waiter: defer.Deferred = defer.Deferred()
            self._waiters.append(waiter)
            if not await waiter:
                return  # the database refused a batch: no more tries at shutdown


def _text(failure: Failure) -> str:
    message = failure.getErrorMessage().strip().splitlines()
    return f"{failure.type.__name__}: {message[0] if message else ''}"


def _register(metrics: Any, writer: LedgerWriter) -> tuple[Any, Any, Any]:
    """The writer's series, in ``metrics``: the gateway's GatewayMetrics (its
    registry, and its ``watch`` for the gauge), or a bare CollectorRegistry."""
    from prometheus_client import Counter, Gauge

    watch = getattr(metrics, "watch", None)
    registry = getattr(metrics, "registry", metrics)

    dropped = Counter(
        "twisted_gw_ledger_rows_dropped",
        "Ledger rows dropped: the buffer was full (the database slow or down), or shutdown.",
        registry=registry,
    )
    written = Counter(
        "twisted_gw_ledger_rows_written", "Ledger rows written to the database.", registry=registry
    )
    errors = Counter(
        "twisted_gw_ledger_write_errors",
        "Ledger batch writes that failed (they are retried).",
        registry=registry,
    )
    name, doc = (
        "twisted_gw_ledger_rows_buffered",
        "Ledger rows in memory, waiting for the database.",
    )
    if watch is not None:  # GatewayMetrics: with several workers, the sum of theirs
        watch(name, doc, lambda: writer.held)
    else:
        Gauge(name, doc, registry=registry).set_function(lambda: writer.held)
    return dropped, written, errors
