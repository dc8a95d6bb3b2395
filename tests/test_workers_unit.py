"""The pieces of ``server.workers`` in memory: the worker count's checks, the
supervisor's restart policy and exit texts, and the shared limiter and
history over a real AMP connection pumped in memory (twisted.test.iosim).
The processes themselves are in tests/test_workers_blackbox.py."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.test import iosim

from twisted_gw.config.file import ConfigError, check_workers, load_config
from twisted_gw.hooks.context import RequestContext
from twisted_gw.observability.access_log import AccessLogHook
from twisted_gw.proxy.history import ResponseHistory
from twisted_gw.ratelimit.memory import MemoryRateLimitStore
from twisted_gw.workers.shared import (
    RemoteRateLimitStore,
    RemoteResponseHistory,
    SharedStateServer,
    WorkerAMP,
    plan_bytes,
    plan_from,
)
from twisted_gw.workers.supervisor import describe_exit, restart_delay
from twisted_gw.workers.worker import parse_fds

# -- the worker count -----------------------------------------------------------------


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_workers_default_to_one_process(tmp_path):
    assert load_config(write(tmp_path, "server: {}\n")).workers == 1


def test_server_workers_is_read(tmp_path):
    assert load_config(write(tmp_path, "server: {workers: 8}\n")).workers == 8


@pytest.mark.parametrize(
    ("value", "got"),
    [("0", "0"), ("257", "257"), ("two", "a string"), ("true", "a boolean"), ("1.5", "a number")],
)
def test_a_wrong_server_workers_fails_like_any_key(tmp_path, value, got):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"server: {{workers: {value}}}\n"))
    assert str(e.value) == f"server.workers must be an integer from 1 to 256, got {got}"


def test_the_workers_flag_reads_digits_and_refuses_the_rest():
    assert check_workers("4", "--workers") == 4
    with pytest.raises(ConfigError, match="^--workers must be an integer from 1 to 256, got 0$"):
        check_workers("0", "--workers")
    with pytest.raises(ConfigError, match="got a string$"):
        check_workers("many", "--workers")


def test_a_misspelt_workers_key_is_a_warning(tmp_path):
    config = load_config(write(tmp_path, "server: {worker: 2}\n"))
    assert config.workers == 1
    assert config.warnings == ("unknown config key 'server.worker' (did you mean 'workers'?)",)


# -- the supervisor's policy --------------------------------------------------------------


def test_a_crash_loop_backs_off_and_a_stable_worker_restarts_at_once():
    assert restart_delay(0) == 0.1
    assert [restart_delay(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert restart_delay(20) == 30.0


def test_how_a_worker_ended_is_said_plainly():
    assert describe_exit(Failure(ProcessDone(0))) == "exited with code 0"
    assert describe_exit(Failure(ProcessTerminated(3))) == "exited with code 3"
    killed = Failure(ProcessTerminated(None, 9))
    assert describe_exit(killed) == "killed by signal 9 (SIGKILL)"


def test_inherited_fds_are_named_by_listener():
    assert parse_fds("Proxy=3,Admin=4") == {"Proxy": 3, "Admin": 4}
    assert parse_fds("") == {}


# -- the shared state over AMP ----------------------------------------------------------------


class Shared:
    """A supervisor's state and N workers connected to it, pumped in memory."""

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.limiter = MemoryRateLimitStore(self.clock)
        self.history = ResponseHistory(self.clock)
        self.ready: list[int] = []

    def worker(self) -> tuple[WorkerAMP, SharedStateServer, iosim.IOPump]:
        clock = self.clock
        clock.running = True  # WorkerAMP stops a running reactor when its supervisor goes
        clock.stop = lambda: None
        clock.addSystemEventTrigger = lambda *a, **k: None
        client, server, pump = iosim.connectedServerAndClient(
            lambda: SharedStateServer(self.limiter, self.history, self.ready.append),
            lambda: WorkerAMP(clock, 1),
        )
        return client, server, pump


def result_of(d, pump):
    pump.flush()
    out = []
    d.addBoth(out.append)
    pump.flush()
    assert out, "no answer"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def plan_with(concurrency: int | None = None, rpm: int | None = None):
    from twisted_gw.ratelimit.limits import Concurrency, Plan, Window

    windows = (Window("apikey", "k1", "rpm", rpm),) if rpm is not None else ()
    gates = (Concurrency("apikey", "k1", concurrency),) if concurrency is not None else ()
    return Plan(windows, gates)


def test_a_plan_crosses_the_wire_unchanged():
    plan = plan_with(concurrency=3, rpm=10)
    assert plan_from(plan_bytes(plan)) == plan


def test_rpm_is_counted_once_for_all_workers():
    shared = Shared()
    plan = plan_with(rpm=3)
    stores = []
    for _ in range(2):
        client, _, pump = shared.worker()
        stores.append((RemoteRateLimitStore(client), pump))
    allowed = [
        result_of(store.acquire(plan, f"r{i}"), pump).allowed
        for i, (store, pump) in enumerate(stores * 3)
    ]
    assert allowed == [True, True, True, False, False, False]


def test_a_slot_taken_on_one_worker_is_seen_by_the_other_and_given_back():
    shared = Shared()
    plan = plan_with(concurrency=1)
    (one, _, pump1), (two, _, pump2) = shared.worker(), shared.worker()
    a, b = RemoteRateLimitStore(one), RemoteRateLimitStore(two)
    assert result_of(a.acquire(plan, "r1"), pump1).allowed
    assert a.slots_held() == 1
    assert not result_of(b.acquire(plan, "r2"), pump2).allowed
    result_of(a.settle(plan, "r1", 0), pump1)
    assert a.slots_held() == 0 and shared.limiter.slots_held() == 0
    assert result_of(b.acquire(plan, "r2"), pump2).allowed


def test_a_worker_that_goes_away_gives_its_slots_back():
    shared = Shared()
    plan = plan_with(concurrency=2)
    client, server, pump = shared.worker()
    store = RemoteRateLimitStore(client)
    assert result_of(store.acquire(plan, "r1"), pump).allowed
    assert result_of(store.acquire(plan, "r2"), pump).allowed
    assert shared.limiter.slots_held() == 2
    server.transport.loseConnection()
    pump.flush()
    assert shared.limiter.slots_held() == 0


def test_a_settle_after_the_slot_was_given_back_takes_nothing_twice():
    shared = Shared()
    plan = plan_with(concurrency=2)
    (one, _, pump1), (two, _, pump2) = shared.worker(), shared.worker()
    a, b = RemoteRateLimitStore(one), RemoteRateLimitStore(two)
    assert result_of(a.acquire(plan, "r1"), pump1).allowed
    assert result_of(b.acquire(plan, "r1"), pump2).allowed  # the same id on another worker
    result_of(a.settle(plan, "r1", 0), pump1)
    result_of(a.settle(plan, "r1", 0), pump1)  # again: that worker holds nothing more
    assert shared.limiter.slots_held() == 1


def test_a_stopping_worker_closes_once_the_supervisor_applied_its_settles():
    shared = Shared()
    plan = plan_with(concurrency=2)
    client, server, pump = shared.worker()
    store = RemoteRateLimitStore(client)
    assert result_of(store.acquire(plan, "r1"), pump).allowed
    assert result_of(store.acquire(plan, "r2"), pump).allowed
    store.settle(plan, "r1", 0)  # no answer of its own: one message, not two
    store.settle(plan, "r2", 0)
    closed = []
    store.close().addCallback(closed.append)
    assert not closed and shared.limiter.slots_held() == 2  # still on its way
    pump.flush()
    assert closed and shared.limiter.slots_held() == 0
    server.transport.loseConnection()
    pump.flush()
    done = []
    store.close().addCallback(done.append)  # the connection gone: nothing to wait for
    assert done


def test_a_settle_the_supervisor_fails_on_is_logged_and_the_connection_kept():
    from twisted.logger import formatEvent, globalLogPublisher

    shared = Shared()
    plan = plan_with(concurrency=1)
    client, _, pump = shared.worker()
    store = RemoteRateLimitStore(client)
    assert result_of(store.acquire(plan, "r1"), pump).allowed
    events = []
    globalLogPublisher.addObserver(events.append)
    shared.limiter.settle = lambda *a: 1 / 0
    try:
        store.settle(plan, "r1", 0)
        pump.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    said = [formatEvent(e) for e in events]
    assert "settling the rate limits of r1 failed" in said, said
    # the connection is kept: r1 still holds its slot, and the supervisor answers
    assert result_of(store.acquire(plan, "r2"), pump).allowed is False


def test_tokens_settled_by_one_worker_limit_the_other():
    from twisted_gw.ratelimit.limits import Plan, Window

    shared = Shared()
    plan = Plan((Window("apikey", "k1", "tpm", 100),), ())
    (one, _, pump1), (two, _, pump2) = shared.worker(), shared.worker()
    a, b = RemoteRateLimitStore(one), RemoteRateLimitStore(two)
    assert result_of(a.acquire(plan, "r1"), pump1).allowed
    result_of(a.settle(plan, "r1", 100), pump1)
    assert not result_of(b.acquire(plan, "r2"), pump2).allowed


def test_a_response_stored_through_one_worker_is_found_through_another():
    shared = Shared()
    (one, _, pump1), (two, _, pump2) = shared.worker(), shared.worker()
    big = [{"role": "user", "content": "x" * 200_000}]  # more than one AMP value
    RemoteResponseHistory(one).put("aresp_1", "owner", big)
    pump1.flush()
    assert result_of(RemoteResponseHistory(two).get("aresp_1", "owner"), pump2) == big
    assert result_of(RemoteResponseHistory(two).get("aresp_1", "other"), pump2) is None
    assert result_of(RemoteResponseHistory(two).get("aresp_2", "owner"), pump2) is None


def test_a_worker_says_when_it_serves():
    from twisted_gw.workers.shared import Ready

    shared = Shared()
    client, _, pump = shared.worker()
    result_of(client.callRemote(Ready, worker=3), pump)
    assert shared.ready == [3]


# -- the access log --------------------------------------------------------------------------


def finished_ctx() -> RequestContext:
    from twisted_gw.config.snapshot import Snapshot

    ctx = RequestContext(
        "rid-1", 10.0, "POST", "/v1/chat/completions", "-", "127.0.0.1", Snapshot()
    )
    ctx.status = 200
    ctx.finished_at = 10.5
    return ctx


def test_an_access_line_names_its_worker_only_with_workers():
    clock = task.Clock()
    ctx = finished_ctx()
    one = AccessLogHook(clock)._line(ctx, 11.0)
    assert "worker=" not in one
    assert AccessLogHook(clock, worker=2)._line(ctx, 11.0) == one + " worker=2"
    import json

    doc = json.loads(AccessLogHook(clock, "json", worker=2)._line(ctx, 11.0))
    assert doc["worker"] == 2
    assert "worker" not in json.loads(AccessLogHook(clock, "json")._line(ctx, 11.0))


# -- the twistd plugin's options ---------------------------------------------------------------


def test_the_twistd_plugin_takes_workers_and_makes_the_supervisor(tmp_path):
    import importlib.util

    from tests.support.gateway import REPO_ROOT
    from twisted_gw.workers.supervisor import SupervisorService

    spec = importlib.util.spec_from_file_location(
        "checkout_plugin", REPO_ROOT / "twistd_plugins" / "twisted_gw_plugin.py"
    )
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    config = tmp_path / "config.yaml"
    config.write_text(
        "server: {proxy: {listen: '127.0.0.1:0'}, admin: {listen: '127.0.0.1:0'}, workers: 1}\n"
    )
    options = plugin.Options()
    options.parseOptions(["--config", str(config), "--workers", "3"])
    service = plugin.serviceMaker.makeService(options)
    assert isinstance(service, SupervisorService) and service.config.workers == 3
    options = plugin.Options()
    options.parseOptions(["--config", str(config)])
    assert not isinstance(plugin.serviceMaker.makeService(options), SupervisorService)


def test_a_workers_log_writes_are_whole_lines_of_at_most_pipe_buf():
    import io

    from twisted_gw.workers.worker import LineAtomicOut

    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return len(text)

    out = Recorder()
    lines = [f"line {i} " + "x" * 100 + "\n" for i in range(100)]
    LineAtomicOut(out).write("".join(lines))
    assert "".join(out.writes) == "".join(lines)
    assert len(out.writes) > 1
    for piece in out.writes:
        assert piece.endswith("\n") and len(piece.encode()) <= LineAtomicOut.LIMIT

    out = Recorder()
    fits = "".join(lines[: LineAtomicOut.LIMIT // 120])  # up to PIPE_BUF: one write as it is
    LineAtomicOut(out).write(fits)
    assert out.writes == [fits]


# -- what the supervisor prepares before any worker starts -----------------------------


def test_the_supervisor_makes_the_sqlite_ledger_before_the_workers_open_it(tmp_path):
    # N workers switching one new file to WAL at once failed start-up ("database
    # is locked", about 1 start in 6 with two): the file and schema are made here
    import sqlite3

    from twisted_gw.ledger.database import TABLE
    from twisted_gw.workers.supervisor import check

    ledger = tmp_path / "data" / "ledger.sqlite3"
    config = load_config(
        write(
            tmp_path,
            f"server: {{workers: 2}}\ndeployment: {{ledger: {{path: '{ledger}'}}, "
            f"store: {{path: '{tmp_path / 'store.json'}'}}}}\n",
        )
    )
    check(config)
    connection = sqlite3.connect(ledger)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone() == (0,)


def test_a_ledger_the_supervisor_cannot_write_fails_start_up_with_its_reason(tmp_path):
    from twisted_gw.workers.supervisor import check

    (tmp_path / "afile").write_text("")
    config = load_config(
        write(
            tmp_path,
            f"deployment: {{ledger: {{path: '{tmp_path / 'afile' / 'ledger.sqlite3'}'}}, "
            f"store: {{path: '{tmp_path / 'store.json'}'}}}}\n",
        )
    )
    with pytest.raises(ConfigError, match="ledger: cannot use SQLite file .*cannot make directory"):
        check(config)
