"""makeService: the store, the two listeners and the hooks as one MultiService.

Both launchers (``twistd twisted-gw`` and the ``twisted-gw`` console script)
build the gateway here, so they run the same thing. Start-up problems
(CONTRACT 1) end the process with one line on stdout and exit code 1, with
nothing left listening, whether twistd runs in the foreground or daemonizes
(:class:`Launch` says how the process was started, and so where a failure
must be reported).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.application.service import MultiService, Service
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, LegacyLogObserverWrapper, Logger, textFileLogObserver
from twisted.python.failure import Failure

from twisted_gw.config.file import (
    ConfigError,
    GatewayConfig,
    ListenConfig,
    check_workers,
    load_config,
)

if TYPE_CHECKING:
    from twisted_gw.config.interfaces import IConfigStore
    from twisted_gw.ledger.writer import LedgerWriter
    from twisted_gw.observability.tracing import Tracing
    from twisted_gw.ratelimit.interfaces import IRateLimitStore
    from twisted_gw.shutdown import Shutdown
    from twisted_gw.site import GatewaySite
    from twisted_gw.workers.worker import WorkerSetup

log = Logger()

#: seconds a shutdown waits for the ledger's last rows to be written
LEDGER_FLUSH_BOUND = 2.0


class StartupError(Exception):
    """A start-up failure after a daemonizing twistd forked.

    An ordinary ``Exception`` on purpose: twistd's ``postApplication`` handles
    only those, by writing them to its status pipe (the command the operator
    ran then exits 1) and removing its pid file. A ``SystemExit`` there skips
    both, and the command hangs: its process waits on the pipe, whose write
    end it holds itself.
    """


@dataclass(frozen=True)
class TwistdLog:
    """Where twistd will log, when that is not stdout: a file, syslog or ``--logger``.

    Read from twistd's options by twistd's own rules, so a failure before
    twistd's logging begins (in makeService) can still be written there.
    """

    path: str | None = None
    syslog_prefix: str | None = None
    observer_factory: Callable[[], Any] | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], daemon: bool) -> TwistdLog | None:
        """``None`` when twistd logs to stdout (``-n`` without ``--logfile``, or ``-``)."""
        if options.get("logger"):
            return cls(observer_factory=options["logger"])
        if options.get("syslog"):
            return cls(syslog_prefix=options.get("prefix") or "twisted")
        name = options.get("logfile") or ""
        if name == "-" or (not name and not daemon):
            return None
        return cls(path=name or "twistd.log")  # twistd's default for a daemon

    def write_now(self, message: str) -> None:
        """Log ``message`` as an error straight to the destination.

        Best effort: stdout has the message already, and an unwritable log
        file must not turn it into a traceback.
        """
        with contextlib.suppress(OSError):
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as f:
                    self._emit(textFileLogObserver(f), message)
            elif self.syslog_prefix is not None:
                from twisted.python.syslog import SyslogObserver

                self._emit(SyslogObserver(self.syslog_prefix).emit, message)
            elif self.observer_factory is not None:
                self._emit(self.observer_factory(), message)

    @staticmethod
    def _emit(observer: Any, message: str) -> None:
        if not ILogObserver.providedBy(observer):
            observer = LegacyLogObserverWrapper(observer)
        Logger(namespace=__name__, observer=observer).error("{message}", message=message)


class Launch:
    """How this process was launched, and so where a start-up failure must go.

    Always to the operator's stdout (where AISIX's tooling reads it), and to
    twistd's log when that is not stdout. The console script and ``twistd
    -n`` keep their stdout and end with exit code 1 (``SystemExit``: no
    traceback). A daemonizing twistd replaces stdout with /dev/null when it
    forks, after makeService; so makeService holds a duplicate of the
    operator's stdout until the listeners are bound, and a failure after the
    fork is a :class:`StartupError` for twistd to report.
    """

    def __init__(
        self, daemon: bool = False, log_to: TwistdLog | None = None, pidfile: str | None = None
    ) -> None:
        self.daemon = daemon
        self.log_to = log_to  # None: the log is stdout
        self.pidfile = pidfile
        self._stdout: int | None = None

    @classmethod
    def from_twistd(cls, options: Mapping[str, Any]) -> Launch:
        """From twistd's own options (the plugin's ``options.parent``)."""
        daemon = not options.get("nodaemon")
        return cls(daemon, TwistdLog.from_options(options, daemon), options.get("pidfile") or None)

    def hold_stdout(self) -> None:
        """Daemon: keep the operator's stdout past the fork (until :meth:`release_stdout`)."""
        if self.daemon and self._stdout is None and sys.__stdout__ is not None:
            sys.__stdout__.flush()
            self._stdout = os.dup(sys.__stdout__.fileno())

    def release_stdout(self) -> None:
        """Let go of the operator's stdout, so nothing reading it waits on the daemon."""
        if self._stdout is not None:
            fd, self._stdout = self._stdout, None
            os.close(fd)

    def say(self, level: str, message: str) -> None:
        """One line on the operator's stdout."""
        line = f"twisted-gw: {level}: {message}\n"
        with contextlib.suppress(OSError):  # a reader that went away cannot be told
            if self._stdout is not None:
                os.write(self._stdout, line.encode("utf-8", "backslashreplace"))
                return
            out = sys.__stdout__ or sys.stdout
            out.write(line)
            out.flush()

    def warn(self, message: str) -> None:
        """A start-up warning: on stdout, and in twistd's log once its logging begins."""
        self.say("warning", message)
        if self.log_to is not None:
            log.warn("{warning}", warning=message)  # buffered until twistd's logging begins

    def fail_before_start(self, message: str) -> NoReturn:
        """In makeService: nothing forked, no pid file written, twistd not logging yet."""
        self.say("error", message)
        if self.log_to is not None:
            self.log_to.write_now(message)
        self.release_stdout()
        raise SystemExit(1)

    def fail_while_starting(self, message: str) -> NoReturn:
        """In privilegedStartService: twistd's logging runs, a daemon has forked."""
        if self.log_to is not None:
            log.error("{message}", message=message)
        self.say("error", message)
        self.release_stdout()
        if self.daemon:
            # twistd re-raises it once reported; the log has the message, so
            # the interpreter's last words need not add a traceback to it
            sys.excepthook = _quiet_for_startup_error(sys.excepthook)
            raise StartupError(message) from None
        self._remove_pidfile()  # twistd -n --pidfile: a SystemExit skips twistd's removal
        raise SystemExit(1)

    def _remove_pidfile(self) -> None:
        if not self.pidfile:
            return
        with contextlib.suppress(OSError, ValueError):
            with open(self.pidfile, encoding="ascii") as f:
                ours = f.read().strip() == str(os.getpid())
            if ours:
                os.unlink(self.pidfile)


def _quiet_for_startup_error(previous: Callable[..., Any]) -> Callable[..., Any]:
    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(kind, StartupError):
            previous(kind, value, tb)

    return excepthook


def fail_startup(message: str, launch: Launch | None = None) -> NoReturn:
    """Before the service starts: ``message`` on stdout (and twistd's log file), exit 1."""
    (launch or Launch()).fail_before_start(message)


def cannot_bind(listen: ListenConfig, error: BaseException) -> str:
    """The message for a listener whose address cannot be bound."""
    return f"{listen.name} listener cannot bind {listen.host}:{listen.port}: {error}"


def probe_bind(listen: ListenConfig) -> str | None:
    """Bind ``listen``'s address with a plain socket, closed at once; the problem, if any.

    Run by makeService, so a taken port fails before a daemonizing twistd
    forks, while stdout still reaches the operator, with the message a real
    bind gives. SO_REUSEADDR as Twisted's listenTCP sets it: a port that only
    has connections in TIME_WAIT is free. Port 0 (any free port) is skipped.
    """
    if listen.port == 0:
        return None
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((listen.host, listen.port))
        except OSError as e:
            return cannot_bind(listen, e)
    return None


class ListenerService(Service):
    """One listening port, bound in privilegedStartService.

    In a worker (``fd`` given) the port is a socket the supervisor bound for
    this worker, inherited as that file descriptor and adopted instead of
    bound (see :mod:`twisted_gw.workers.supervisor`)."""

    def __init__(
        self,
        listen: ListenConfig,
        site: Any,
        reactor: Any,
        tls_context: Any = None,
        fd: int | None = None,
    ) -> None:
        self.listen = listen
        self.site = site
        self.reactor = reactor
        self.tls_context = tls_context
        self.fd = fd
        self.port: Any = None
        self.setName(listen.name.lower())

    def bind(self) -> None:
        if self.port is not None:
            return
        if self.fd is not None:
            self._adopt(self.fd)
            return
        if self.tls_context is not None:
            self.port = self.reactor.listenSSL(
                self.listen.port, self.site, self.tls_context, interface=self.listen.host
            )
        else:
            self.port = self.reactor.listenTCP(
                self.listen.port, self.site, interface=self.listen.host
            )
        address = self.port.getHost()
        scheme = "https" if self.tls_context is not None else "http"
        log.info(
            "{name} listening on {scheme}://{host}:{port}",
            name=self.listen.name,
            scheme=scheme,
            host=address.host,
            port=address.port,
        )

    def _adopt(self, fd: int) -> None:
        factory = self.site
        if self.tls_context is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self.tls_context, False, self.site)
        family = socket.AF_INET6 if ":" in self.listen.host else socket.AF_INET
        self.port = self.reactor.adoptStreamPort(fd, family, factory)
        os.close(fd)  # the port holds its own duplicate
        self.fd = None

    def privilegedStartService(self) -> None:
        self.bind()
        super().privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


def exit_while_running(reactor: Any, message: str, code: int = 1, quiet: bool = False) -> None:
    """End the process with ``code`` and ``message`` on stdout, from inside a
    running reactor.

    twistd has no way to set its exit status, so the reactor is stopped (the
    services stop: ports close, connections are released), then the message
    is printed as the last line and the process leaves with ``os._exit(code)``
    right after shutdown, or after 10 s should a shutdown step hang.
    ``quiet``: a worker whose supervisor says the message instead."""

    def leave() -> None:
        out = sys.__stdout__ or sys.stdout
        if not quiet:
            out.write(f"twisted-gw: error: {message}\n")  # the last line, as AISIX's
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    reactor.addSystemEventTrigger("after", "shutdown", leave)
    reactor.callLater(10, leave)
    if reactor.running:
        reactor.stop()


class StartupGate(Service):
    """Holds the listeners' requests while a store's first load runs (etcd).

    The ports are bound before (so a taken port still fails start-up at
    once) and accept connections, but their sites hold every request until
    the snapshot is loaded: clients that come early wait and are then served
    with the real config, instead of getting 401/404 answers from an empty
    one. Only the probes (``/healthz`` 200, ``/readyz`` 503 ``config not
    loaded yet``; CONTRACT 5.2) and CORS preflights are answered meanwhile,
    so an orchestrator's liveness probe does not kill a gateway that waits
    for etcd. When the store gives up (``when_loaded`` fails), the process
    ends with exit code 1 and the store's reason on stdout, like every
    start-up failure (``exit`` is :func:`exit_while_running`; tests pass
    their own)."""

    def __init__(
        self,
        store: IConfigStore,
        reactor: Any,
        exit: Callable[[Any, str], None] = exit_while_running,
        sites: Sequence[GatewaySite] = (),
    ) -> None:
        self.store = store
        self.reactor = reactor
        self._exit = exit
        self.sites = tuple(sites)
        self.setName("etcd-startup")

    def startService(self) -> None:
        super().startService()
        for site in self.sites:
            site.hold()
        self.store.when_loaded().addCallbacks(self._open, self._give_up)

    def _open(self, snapshot: Any) -> None:
        for site in self.sites:
            site.release()

    def _give_up(self, failure: Failure) -> None:
        self._exit(self.reactor, failure.getErrorMessage())


class GatewayService(MultiService):
    """The whole gateway; binds every listener or none."""

    #: how the process was launched (makeService sets it; None: the foreground)
    launch: Launch | None = None

    def __init__(
        self,
        config: GatewayConfig,
        store: IConfigStore,
        upstream: Any,
        limiter: IRateLimitStore | None = None,
        proxy: Any = None,
        tracing: Tracing | None = None,
        shutdown: Shutdown | None = None,
        budgets: Any = None,
        ledger: LedgerWriter | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        #: the budget store (issue 17); closed before the limiter, whose
        #: Redis connection it may share
        self.budgets = budgets
        self.store = store
        self.upstream = upstream
        self.limiter = limiter
        self.proxy = proxy
        self.tracing = tracing
        #: the drain of CONTRACT 5.2 (None: what is in flight is ended at once)
        self.shutdown = shutdown
        #: the request ledger's writer (issue 17; None: off)
        self.ledger = ledger

    def privilegedStartService(self) -> None:
        """Bind every listener, or release them all and fail start-up (see :class:`Launch`).

        makeService probed the addresses already; a bind can still fail if
        another process took a port meanwhile, or both listeners share one.
        """
        launch = self.launch if self.launch is not None else Launch()
        listeners = [s for s in self if isinstance(s, ListenerService)]
        for service in listeners:
            try:
                service.bind()
            except CannotListenError as e:
                for other in listeners:
                    if other.port is not None:
                        other.port.stopListening()
                        other.port = None
                launch.fail_while_starting(
                    cannot_bind(service.listen, e.socketError) if e.socketError else str(e)
                )
        launch.release_stdout()
        super().privilegedStartService()

    def startService(self) -> None:
        from twisted.internet import defer

        super().startService()
        if self.tracing is not None:
            self.tracing.start()  # its export thread, in the process that serves
        if self.ledger is not None:
            self.ledger.start()  # its database thread, likewise
        # The collector, tuned for a server (measured under bench/, issue 15):
        # everything built so far (modules, the app, the config) lives as long
        # as the process, so it is frozen out of the collector's sight and a
        # full collection scans what requests made, not ~74k start-up objects
        # (Klein's and werkzeug's per-request closures are reference cycles,
        # so collections do run under load). The thresholds stay Python's: a
        # 20,000-object young generation cut collector time a little more but
        # its ~6 ms pauses took the p99 at one connection from 1.5 to 3.1 ms.
        gc.freeze()
        # A store that loads in the background (etcd) reports a failed load
        # where it is handled (StartupGate: exit 1), not as an unhandled error.
        defer.maybeDeferred(self.store.start).addErrback(lambda _: None)

    def stopService(self) -> Any:
        """Drain (CONTRACT 5.2), then close the store, upstream pool and limiter.

        The Deferred delays the reactor's shutdown until the requests in
        flight are answered or cut (see :mod:`twisted_gw.shutdown`): they end
        while the limiter can still hear about it (their finalize gives back
        shared Redis slots and spends their tokens); its close waits for that."""
        from twisted.internet import defer

        shutdown = self.shutdown
        if shutdown is not None:
            shutdown.begin()  # /readyz is 503 from now on
        d = defer.maybeDeferred(super().stopService)  # the listeners stop accepting
        if shutdown is not None:
            d.addBoth(lambda _: shutdown.drain())
        elif self.proxy is not None:
            d.addBoth(lambda _: self.proxy.abort_in_flight())
        ledger = self.ledger
        if ledger is not None:
            # after the drain, so the rows of the requests it ended go too; bounded
            d.addBoth(lambda _: ledger.close(LEDGER_FLUSH_BOUND))
        d.addBoth(lambda _: self.store.stop())
        d.addBoth(lambda _: self.upstream.close())
        budgets = self.budgets
        if budgets is not None:
            d.addBoth(lambda _: budgets.close())
        limiter = self.limiter
        if limiter is not None:
            d.addBoth(lambda _: limiter.close())
        tracing = self.tracing
        if tracing is not None:
            # last, so the spans of requests ended above go too; bounded
            d.addBoth(lambda _: tracing.close())
        return d


def build(config: GatewayConfig, reactor: Any, worker: WorkerSetup | None = None) -> GatewayService:
    """Compose the gateway from a checked config (raises ConfigError/StoreFileError).

    ``worker``: this process is one of ``server.workers`` (see
    :mod:`twisted_gw.workers`): the listeners are the supervisor's inherited
    sockets, the embedded store is shared by file, the in-memory limiter and
    the Responses history are the supervisor's, and metrics are summed over
    the workers. Everything else is the same gateway."""
    from twisted_gw.admin.app import AdminApp
    from twisted_gw.admin.app import error_body as admin_error_body
    from twisted_gw.config.embedded import EmbeddedStore
    from twisted_gw.cors import CorsPolicy
    from twisted_gw.health import Health
    from twisted_gw.hooks.budget import BudgetHook
    from twisted_gw.hooks.loader import load_hooks, plugin_hooks
    from twisted_gw.hooks.manager import HookManager
    from twisted_gw.hooks.rate_limit import RateLimitHook
    from twisted_gw.observability.access_log import AccessLogHook
    from twisted_gw.observability.metrics import GatewayMetrics, MetricsHook
    from twisted_gw.providers.http import UpstreamClient
    from twisted_gw.providers.registry import build_providers
    from twisted_gw.proxy.app import ProxyApp
    from twisted_gw.proxy.history import RedisResponseHistory, ResponseHistory
    from twisted_gw.ratelimit.memory import MemoryRateLimitStore
    from twisted_gw.shutdown import Shutdown
    from twisted_gw.site import GatewaySite
    from twisted_gw.spend.memory import MemoryBudgetStore

    tls = {}
    for listen in (config.proxy, config.admin):
        if listen.tls.enabled:
            from twisted_gw.tls import context_factory

            tls[listen.name] = context_factory(listen.name, listen.tls)

    store: Any
    if config.etcd is not None:
        from twisted_gw.config.etcd_store import EtcdStore

        store = EtcdStore.from_config(config.etcd, reactor)  # loads in startService
    elif worker is not None:  # the supervisor seeded it already
        store = EmbeddedStore(config.store_path, shared=True, reactor=reactor)
        store.load()
    else:
        store = EmbeddedStore(config.store_path)
        existed = store.load()
        if not existed and config.seed_demo:
            store.seed_demo()

    upstream = UpstreamClient(
        reactor,
        max_response_bytes=config.max_response_bytes,
        max_event_bytes=config.max_event_bytes,
    )
    providers = build_providers(upstream)
    metrics = GatewayMetrics(worker.metrics_dir if worker is not None else None)
    if config.redis is not None:
        from twisted_gw.ratelimit.redis import RedisRateLimitStore

        limiter: Any = RedisRateLimitStore(
            reactor,
            url=config.redis.url,
            prefix=config.redis.prefix,
            timeout=config.redis.timeout,
            fail_open=config.redis.fail_open,
            metrics=metrics,
        )
    elif worker is not None:  # the one in-memory limiter is the supervisor's
        from twisted_gw.workers.shared import RemoteRateLimitStore

        limiter = RemoteRateLimitStore(worker.amp)
    else:
        limiter = MemoryRateLimitStore(reactor)
    budgets: Any
    if config.redis is not None:  # shared by the gateways, over the limiter's connection
        from twisted_gw.spend.redis import RedisBudgetStore

        budgets = RedisBudgetStore(
            limiter.redis,
            reactor,
            prefix=limiter.prefix,
            timeout=limiter.timeout,
            fail_open=limiter.fail_open,
            metrics=metrics,
        )
    elif worker is not None:  # the one in-memory budget store is the supervisor's
        from twisted_gw.workers.shared import RemoteBudgetStore

        budgets = RemoteBudgetStore(worker.amp)
    else:
        budgets = MemoryBudgetStore(reactor)
    tracing: Any = None
    traced: list[Any] = []
    if config.tracing is not None:
        from twisted_gw.observability.tracing import Tracing, TracingHook

        tracing = Tracing(config.tracing, reactor, metrics.registry)
        upstream.inject = tracing.inject
        traced.append(TracingHook())
    budget_hook = BudgetHook(budgets, reactor, config.budget_default_max_tokens)
    ledger: Any = None
    ledgered: list[Any] = []
    if config.ledger is not None:
        from twisted_gw.ledger.database import open_database
        from twisted_gw.ledger.hook import LedgerHook
        from twisted_gw.ledger.writer import LedgerWriter

        lc = config.ledger
        try:
            database = open_database(lc.path, lc.url, reactor, lc.timeout)
        except Exception as e:  # noqa: BLE001 - sqlite3's and the OS's errors alike
            raise ConfigError(f"ledger: cannot use SQLite file '{lc.path}': {e}") from None
        ledger = LedgerWriter(
            database,
            reactor,
            metrics,
            max_buffer=lc.max_buffer,
            batch_size=lc.batch_size,
            flush_interval=lc.flush_interval,
            retention_days=lc.retention_days,
        )
        # after every built-in hook: the budget hook sets ctx.cost_usd before it reads it
        ledgered.append(LedgerHook(ledger, reactor))
    hooks = HookManager(
        [
            RateLimitHook(limiter),
            # after the limits (a request they refuse reserves nothing), before
            # metrics and the access log (their finalize reads ctx.cost_usd)
            budget_hook,
            MetricsHook(metrics, reactor),
            AccessLogHook(
                reactor, config.access_log_format, worker.id if worker is not None else None
            ),
            *traced,
            *ledgered,
            *load_hooks(config.hooks),
            *(plugin_hooks() if config.plugin_hooks else ()),
        ],
        admit_first=(budget_hook,),  # a fallback the budget refuses spends no request count
    )
    bounds = {"max_entries": config.history_max_entries, "max_age": config.history_max_age}
    if isinstance(limiter, MemoryRateLimitStore):
        history: Any = ResponseHistory(reactor, **bounds)
    elif worker is not None and config.redis is None:  # the supervisor's, as the limiter
        from twisted_gw.workers.shared import RemoteResponseHistory

        history = RemoteResponseHistory(worker.amp)
    else:  # shared by the gateways, over the limiter's connection
        history = RedisResponseHistory(
            limiter.redis, reactor, prefix=limiter.prefix, timeout=limiter.timeout, **bounds
        )
    proxy = ProxyApp(
        store,
        hooks,
        providers,
        reactor,
        upstream_timeout=config.upstream_timeout,
        max_body_bytes=config.max_body_bytes,
        history=history,
        tracing=tracing,
    )
    admin = AdminApp(
        store,
        config.admin_keys,
        metrics,
        chat=proxy.chat_completions,
        ledger=None if ledger is None else ledger.database,
        clock=reactor,
    )
    metrics.watch(
        "twisted_gw_requests_in_flight",
        "Proxy requests received whose response is not finished yet.",
        proxy.in_flight,
    )
    if config.redis is None:  # Redis holds its slots itself
        metrics.watch(
            "twisted_gw_concurrency_slots_held",
            "Concurrency slots held by requests in flight (in-memory limiter).",
            limiter.slots_held,
        )

    if config.redis is None:  # Redis holds its reservations itself
        metrics.watch(
            "twisted_gw_budget_reservations_held",
            "Budget reservations held by requests in flight (in-memory budget store).",
            budgets.held,
        )

    health = Health(store)  # one for both listeners

    def site(app: Any, listen: ListenConfig, resource: Any = None, **shape: Any) -> GatewaySite:
        return GatewaySite(
            app.resource() if resource is None else resource,
            config.max_body_bytes,
            header_timeout=listen.header_timeout,
            max_connections=listen.max_connections,
            reactor=reactor,
            health=health,
            cors=None if listen.cors is None else CorsPolicy(listen.cors, _route_methods(app)),
            **shape,
        )

    proxy_site = site(proxy.app, config.proxy, resource=proxy.resource())
    admin_site = site(admin.app, config.admin, error_body=admin_error_body)
    sites = (proxy_site, admin_site)
    shutdown = Shutdown(sites, health, config.shutdown_grace, reactor, proxy.abort_in_flight)

    gateway = GatewayService(
        config, store, upstream, limiter, proxy, tracing, shutdown, budgets=budgets, ledger=ledger
    )
    fds = worker.fds if worker is not None else {}
    for listen, listen_site in ((config.proxy, proxy_site), (config.admin, admin_site)):
        ListenerService(
            listen, listen_site, reactor, tls.get(listen.name), fds.get(listen.name)
        ).setServiceParent(gateway)
    if worker is not None and metrics.multiprocess_dir is not None:
        from twisted.application.internet import TimerService

        TimerService(0.1, metrics.refresh).setServiceParent(gateway)
    if config.etcd is not None:
        # requests wait until etcd is loaded (probes are answered); exit 1 if it never is
        exit = worker.fail if worker is not None else exit_while_running
        StartupGate(store, reactor, exit, sites=sites).setServiceParent(gateway)
    return gateway


def _route_methods(app: Any) -> list[str]:
    """The methods a Klein app's routes answer, for a CORS preflight's answer."""
    methods = {m for rule in app.url_map.iter_rules() for m in rule.methods or ()}
    return sorted(methods - {"HEAD", "OPTIONS"})


def makeService(
    config_path: str | None,
    reactor: Any = None,
    launch: Launch | None = None,
    workers: Any = None,
) -> Any:
    """Load the config and build the service, or exit 1 with the reason on stdout.

    This runs before a daemonizing twistd forks, while stdout still reaches
    the operator, so everything that can be checked is checked here: the
    config, TLS files, the store file, and a probe bind of each listener.
    Unknown config keys are printed as warnings (CONTRACT 5.5).

    ``workers`` (``--workers``) overrides ``server.workers``. With more than
    one, the service is the supervisor of :mod:`twisted_gw.workers`, after
    the same checks; with one it is the gateway itself, as it always was.
    """
    from twisted_gw.config.embedded import StoreFileError

    launch = launch if launch is not None else Launch()
    launch.hold_stdout()
    if reactor is None:
        from twisted_gw.reactor import install_if_none

        install_if_none()  # twistd without --reactor: ours (see twisted_gw.reactor)
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        config = load_config(config_path)
        if workers is not None:
            config = dataclasses.replace(config, workers=check_workers(workers, "--workers"))
    except ConfigError as e:
        launch.fail_before_start(str(e))
    for warning in config.warnings:
        launch.warn(warning)
    for listen in (config.proxy, config.admin):  # before build: it imports the whole app
        problem = probe_bind(listen)
        if problem is not None:
            launch.fail_before_start(problem)
    if config.workers > 1:
        from twisted_gw.workers.supervisor import SupervisorService, check

        try:
            check(config)
        except (ConfigError, StoreFileError) as e:
            launch.fail_before_start(str(e))
        return SupervisorService(config, reactor, launch)
    try:
        gateway = build(config, reactor)
    except (ConfigError, StoreFileError) as e:
        launch.fail_before_start(str(e))
    gateway.launch = launch
    if gateway.shutdown is not None:
        # the process's SIGTERM/SIGINT are the gateway's: drain, cut on a second
        reactor.callWhenRunning(gateway.shutdown.take_signals)
    return gateway
