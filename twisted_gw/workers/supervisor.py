"""The supervisor of ``server.workers: N`` (N > 1): one socket, N processes.

The process the operator started stays the one they talk to: it checks the
config as one process does, binds the listening sockets itself (so a taken
port fails start-up exactly as before), then starts N workers
(:mod:`twisted_gw.workers.worker`) that inherit them and accept from them.

Each worker has its own socket per listener, all bound to the same address
with SO_REUSEPORT, and the kernel spreads new connections over them by
their addresses. Measured with wrk (16 and 64 keep-alive connections, 2
workers, on this 2-core machine), one socket shared by the workers left a
worker with no connection at all in 2 runs of 12 (Twisted's Port accepts a
whole queued burst, and the worker that wakes first takes it; accepting one
connection a turn still gave 0/100 once); with a socket each, the worst split
of the requests in 6 runs was 22/78 and the usual one near 50/50. The
supervisor keeps every socket open, so connections that arrive for a worker
while it restarts wait in its backlog for the replacement instead of being
refused. It hosts the state that must be one per gateway (the in-memory
limiter and the Responses history, :mod:`twisted_gw.workers.shared`) and the
metrics directory, restarts a worker that dies (with a backoff, so a crash
loop does not spin), forwards SIGTERM/SIGINT to the workers and ends once
they all exited.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_gw.config.file import ConfigError, GatewayConfig, ListenConfig
from twisted_gw.workers import worker as worker_env

log = Logger(namespace="twisted_gw.workers")

#: the child's fd of each listener (0-2 are stdin, stdout, stderr)
CHILD_FDS = {"Proxy": 3, "Admin": 4}
#: a worker that lived at least this long had no crash loop: restart at once
STABLE_AFTER = 10.0
FIRST_DELAY = 0.1
MAX_DELAY = 30.0
#: Twisted's listen backlog, for the same behaviour under a burst
BACKLOG = 50
#: one socket per worker and listener, the kernel spreading connections
#: over them (see SupervisorService); one shared socket where unsupported
REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


def check(config: GatewayConfig) -> None:
    """What ``build`` would refuse, checked once in the supervisor before
    any worker starts (TLS files, the store file, the SQLite ledger, whose
    file and schema are made here); seeds the demo store.
    Raises ConfigError or StoreFileError, as build does."""
    from twisted_gw.config.embedded import EmbeddedStore

    for listen in (config.proxy, config.admin):
        if listen.tls.enabled:
            from twisted_gw.tls import context_factory

            context_factory(listen.name, listen.tls)
    if config.etcd is None:
        store = EmbeddedStore(config.store_path, shared=True)
        existed = store.load()
        if not existed and config.seed_demo:
            store.seed_demo()
    if config.ledger is not None and config.ledger.url is None:
        # the SQLite file and its schema made once, not by N workers at once
        from twisted_gw.ledger.database import SqliteDatabase

        try:
            SqliteDatabase(config.ledger.path, None, config.ledger.timeout).check()
        except Exception as e:  # noqa: BLE001 - sqlite3's and the OS's errors alike
            raise ConfigError(
                f"ledger: cannot use SQLite file '{config.ledger.path}': {e}"
            ) from None


def bind(listen: ListenConfig, port: int | None = None, reuse_port: bool = False) -> socket.socket:
    """A listening socket as Twisted's listenTCP makes it (SO_REUSEADDR,
    the same backlog), inheritable by the workers. Raises OSError."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listen.host, listen.port if port is None else port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def describe_exit(reason: Failure) -> str:
    """``exited with code 3`` / ``killed by signal 9 (SIGKILL)``."""
    value = reason.value
    sig = getattr(value, "signal", None)
    if sig is not None:
        with contextlib.suppress(ValueError):
            return f"killed by signal {sig} ({signal.Signals(sig).name})"
        return f"killed by signal {sig}"
    return f"exited with code {getattr(value, 'exitCode', 0) or 0}"


def restart_delay(quick_deaths: int) -> float:
    """Seconds before a worker is started again, after ``quick_deaths``
    deaths in a row each within STABLE_AFTER of its start (0: restart now)."""
    return min(MAX_DELAY, FIRST_DELAY * 2**quick_deaths) if quick_deaths else FIRST_DELAY


class _Relay(ProcessProtocol):
    """One worker process: its exit, and (when the log is not stdout) its output."""

    def __init__(self, supervisor: SupervisorService, worker_id: int) -> None:
        self.supervisor = supervisor
        self.worker_id = worker_id
        self.started = supervisor.reactor.seconds()
        self.pid: int | None = None  # set once spawned (the transport forgets it at exit)
        self._buffers = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._buffers.get(childFD, b"") + data).split(b"\n")
        self._buffers[childFD] = lines.pop()
        for line in lines:
            self.supervisor.relay(line)

    def processEnded(self, reason: Failure) -> None:
        for rest in self._buffers.values():
            if rest:
                self.supervisor.relay(rest)
        self.supervisor.ended(self, reason)


class SupervisorService(Service):
    """Binds the listeners, runs and watches ``config.workers`` workers.

    ``launch`` is how the process was started (:class:`twisted_gw.service.Launch`):
    a bind failure is reported through it, exactly as one process reports it,
    and it says whether the log is stdout (workers then write to it
    directly: the same bytes, no copy) or elsewhere (twistd's log file:
    each worker line is relayed into it)."""

    def __init__(self, config: GatewayConfig, reactor: Any, launch: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.launch = launch
        self.setName("supervisor")
        self._sockets: dict[str, list[socket.socket]] = {}
        self._dir: str | None = None
        self._amp_port: Any = None
        self._live: dict[int, Any] = {}  # worker id -> its IProcessTransport
        self._quick_deaths: dict[int, int] = {}
        self._ever_ready = False
        self._stopping = False
        self._signalled = False
        self._all_exited: defer.Deferred | None = None
        self._restarts: dict[int, Any] = {}
        self._failures: dict[int, str] = {}

    # -- start --------------------------------------------------------------

    def privilegedStartService(self) -> None:
        from twisted_gw.service import Launch, cannot_bind

        launch = self.launch if self.launch is not None else Launch()
        for listen in (self.config.proxy, self.config.admin):
            try:
                if REUSE_PORT:
                    first = bind(listen, reuse_port=True)
                    self._sockets[listen.name] = [first]
                    port = first.getsockname()[1]
                    for _ in range(1, self.config.workers):
                        self._sockets[listen.name].append(bind(listen, port, reuse_port=True))
                else:
                    self._sockets[listen.name] = [bind(listen)]
            except OSError as e:
                self._close_sockets()
                launch.fail_while_starting(cannot_bind(listen, e))
            sock = self._sockets[listen.name][0]
            scheme = "https" if listen.tls.enabled else "http"
            host, port = sock.getsockname()[:2]
            log.info(
                "{name} listening on {scheme}://{host}:{port}",
                name=listen.name,
                scheme=scheme,
                host=host,
                port=port,
            )
        launch.release_stdout()
        self._start_shared_state()
        super().privilegedStartService()

    def _start_shared_state(self) -> None:
        from twisted_gw.proxy.history import ResponseHistory
        from twisted_gw.ratelimit.memory import MemoryRateLimitStore
        from twisted_gw.spend.memory import MemoryBudgetStore
        from twisted_gw.workers.shared import SharedStateServer

        self._dir = tempfile.mkdtemp(prefix="twisted-gw-workers-")
        os.mkdir(os.path.join(self._dir, "metrics"))
        limiter = MemoryRateLimitStore(self.reactor)
        history = ResponseHistory(
            self.reactor,
            max_entries=self.config.history_max_entries,
            max_age=self.config.history_max_age,
        )
        budgets = MemoryBudgetStore(self.reactor)
        factory = Factory.forProtocol(
            lambda: SharedStateServer(limiter, history, self.ready, self.failed, budgets)
        )
        factory.noisy = False
        self._amp_port = self.reactor.listenUNIX(os.path.join(self._dir, "shared.sock"), factory)

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._forward_signals)
        for worker_id in range(1, self.config.workers + 1):
            self._spawn(worker_id)

    def _forward_signals(self) -> None:
        """SIGTERM/SIGINT go to every worker (each drains as one process
        does, and a second signal reaches them as a second signal: they cut);
        the first also stops this process's reactor, whose shutdown waits
        for the workers (:meth:`stopService`). The handlers are ours, as one
        process's are (twisted_gw.shutdown): twistd does not re-raise the
        signal at its end, and the supervisor exits 0."""

        def received(number: int, frame: Any) -> None:
            self._signal_all(number)
            if not self._signalled:
                self._signalled = True
                self.reactor.callFromThread(self._stop_reactor, signal.Signals(number).name)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, received)

    def _stop_reactor(self, name: str) -> None:
        from twisted.internet.error import ReactorNotRunning

        log.info("received {name}: stopping the workers", name=name)
        with contextlib.suppress(ReactorNotRunning):  # stopping already
            self.reactor.stop()

    def _signal_all(self, signum: int) -> None:
        for process in list(self._live.values()):
            with contextlib.suppress(Exception):  # exited meanwhile
                process.signalProcess(signum)

    def _spawn(self, worker_id: int) -> None:
        self._restarts.pop(worker_id, None)
        if self._stopping:
            return
        import twisted_gw

        assert self._dir is not None
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(twisted_gw.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env[worker_env.ENV_ID] = str(worker_id)
        env[worker_env.ENV_CONFIG] = os.path.abspath(self.config.path) if self.config.path else ""
        env[worker_env.ENV_SHARED] = os.path.join(self._dir, "shared.sock")
        env[worker_env.ENV_METRICS] = os.path.join(self._dir, "metrics")
        env[worker_env.ENV_FDS] = ",".join(f"{n}={fd}" for n, fd in CHILD_FDS.items())
        to_stdout = self.launch is None or self.launch.log_to is None
        fds: dict[int, Any] = {0: 0, 1: 1 if to_stdout else "r", 2: 2 if to_stdout else "r"}
        for name, child_fd in CHILD_FDS.items():
            socks = self._sockets[name]
            fds[child_fd] = socks[(worker_id - 1) % len(socks)].fileno()
        relay = _Relay(self, worker_id)
        argv = [sys.executable, "-m", "twisted_gw.workers.worker"]
        process = self.reactor.spawnProcess(relay, sys.executable, argv, env=env, childFDs=fds)
        self._live[worker_id] = process
        relay.pid = process.pid
        log.info("worker {id} (pid {pid}) started", id=worker_id, pid=process.pid)

    # -- what the workers say -------------------------------------------------

    def relay(self, line: bytes) -> None:
        """A line a worker wrote, into this process's log (not stdout)."""
        log.info("{line}", line=line.decode("utf-8", "backslashreplace"))

    def ready(self, worker_id: int) -> None:
        self._ever_ready = True

    def failed(self, worker_id: int, message: str) -> None:
        """A worker's start-up failed: why, for the gateway's last line."""
        self._failures[worker_id] = message

    def ended(self, relay: _Relay, reason: Failure) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        worker_id = relay.worker_id
        self._live.pop(worker_id, None)
        pid = relay.pid
        how = describe_exit(reason)
        if self._dir is not None and pid is not None:
            with contextlib.suppress(OSError):  # its live gauges stop counting
                mark_process_dead(pid, os.path.join(self._dir, "metrics"))
        if self._stopping:
            log.info("worker {id} (pid {pid}) {how}", id=worker_id, pid=pid, how=how)
            if not self._live and self._all_exited is not None:
                d, self._all_exited = self._all_exited, None
                d.callback(None)
            return
        code = getattr(reason.value, "exitCode", None)
        if not self._ever_ready and code == 1:
            # as one process would have: the gateway cannot start (etcd never
            # answered, a store file gone bad); the worker said why
            from twisted_gw.service import exit_while_running

            log.error(
                "worker {id} (pid {pid}) {how} while starting", id=worker_id, pid=pid, how=how
            )
            message = self._failures.pop(worker_id, f"worker {worker_id} could not start ({how})")
            exit_while_running(self.reactor, message)
            return
        self._failures.pop(worker_id, None)
        lived = self.reactor.seconds() - relay.started
        quick = self._quick_deaths.get(worker_id, 0) + 1 if lived < STABLE_AFTER else 0
        self._quick_deaths[worker_id] = quick
        delay = restart_delay(quick)
        log.warn(
            "worker {id} (pid {pid}) {how}; restarting it in {delay}s",
            id=worker_id,
            pid=pid,
            how=how,
            delay=round(delay, 2),
        )
        self._restarts[worker_id] = self.reactor.callLater(delay, self._spawn, worker_id)

    # -- stop -----------------------------------------------------------------

    def stopService(self) -> defer.Deferred:
        """Stop accepting (the supervisor's socket closes; each worker closes
        its own as it stops), SIGTERM the workers not signalled yet, and fire
        once every worker exited."""
        super().stopService()
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts = {}
        self._close_sockets()
        if not self._signalled:
            self._signal_all(signal.SIGTERM)
        if self._live:
            self._all_exited = defer.Deferred()
            d = self._all_exited
        else:
            d = defer.succeed(None)
        return d.addCallback(self._cleanup)

    def _cleanup(self, _: Any) -> None:
        if self._amp_port is not None:
            self._amp_port.stopListening()
            self._amp_port = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _close_sockets(self) -> None:
        for socks in self._sockets.values():
            for sock in socks:
                sock.close()
        self._sockets = {}


__all__ = ["ConfigError", "SupervisorService", "check"]
