"""makeService: the store, the two listeners and the hooks as one MultiService.

Both launchers (``twistd twisted-gw`` and the ``twisted-gw`` console script)
build the gateway here, so they run the same thing. Start-up problems
(CONTRACT 1) end the process with one line on stdout and exit code 1, with
nothing left listening.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.application.service import MultiService, Service
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from twisted_gw.config.file import ConfigError, GatewayConfig, ListenConfig, load_config

log = Logger()


def fail_startup(message: str) -> NoReturn:
    """Print ``message`` on stdout (where AISIX's tooling reads it) and exit 1."""
    out = sys.__stdout__ or sys.stdout
    out.write(f"twisted-gw: error: {message}\n")
    out.flush()
    raise SystemExit(1)


class ListenerService(Service):
    """One listening port, bound in privilegedStartService."""

    def __init__(
        self, listen: ListenConfig, site: Any, reactor: Any, tls_context: Any = None
    ) -> None:
        self.listen = listen
        self.site = site
        self.reactor = reactor
        self.tls_context = tls_context
        self.port: Any = None
        self.setName(listen.name.lower())

    def bind(self) -> None:
        if self.port is not None:
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

    def privilegedStartService(self) -> None:
        self.bind()
        super().privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class GatewayService(MultiService):
    """The whole gateway; binds every listener or none."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Any,
        upstream: Any,
        limiter: Any = None,
        proxy: Any = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.store = store
        self.upstream = upstream
        self.limiter = limiter
        self.proxy = proxy

    def privilegedStartService(self) -> None:
        listeners = [s for s in self if isinstance(s, ListenerService)]
        for service in listeners:
            try:
                service.bind()
            except CannotListenError as e:
                for other in listeners:
                    if other.port is not None:
                        other.port.stopListening()
                        other.port = None
                fail_startup(
                    f"{service.listen.name} listener cannot bind "
                    f"{service.listen.host}:{service.listen.port}: {e.socketError}"
                    if e.socketError
                    else str(e)
                )
        super().privilegedStartService()

    def startService(self) -> None:
        from twisted.internet import defer

        super().startService()
        # A store that loads in the background (etcd) reports a failed load
        # where it is handled (StartupGate: exit 1), not as an unhandled error.
        defer.maybeDeferred(self.store.start).addErrback(lambda _: None)

    def stopService(self) -> Any:
        from twisted.internet import defer

        d = defer.maybeDeferred(super().stopService)  # the listeners stop accepting
        if self.proxy is not None:
            # end what is still in flight now, while the limiter can still hear
            # about it: their finalize gives back shared (Redis) slots and
            # spends their tokens; the limiter's close waits for that
            d.addBoth(lambda _: self.proxy.abort_in_flight())
        d.addBoth(lambda _: self.store.stop())
        d.addBoth(lambda _: self.upstream.close())
        close = getattr(self.limiter, "close", None)
        if close is not None:
            d.addBoth(lambda _: close())
        return d


def build(config: GatewayConfig, reactor: Any) -> GatewayService:
    """Compose the gateway from a checked config (raises ConfigError/StoreFileError)."""
    from twisted_gw.admin.app import AdminApp
    from twisted_gw.config.embedded import EmbeddedStore
    from twisted_gw.hooks.loader import load_hooks, plugin_hooks
    from twisted_gw.hooks.manager import HookManager
    from twisted_gw.hooks.rate_limit import RateLimitHook
    from twisted_gw.hooks.validate_model import ValidateModelHook
    from twisted_gw.observability.access_log import AccessLogHook
    from twisted_gw.observability.metrics import GatewayMetrics, MetricsHook
    from twisted_gw.providers.http import UpstreamClient
    from twisted_gw.providers.registry import build_providers
    from twisted_gw.proxy.app import ProxyApp
    from twisted_gw.ratelimit.memory import MemoryRateLimitStore
    from twisted_gw.site import GatewaySite

    tls = {}
    for listen in (config.proxy, config.admin):
        if listen.tls.enabled:
            from twisted_gw.tls import context_factory

            tls[listen.name] = context_factory(listen.name, listen.tls)

    store: Any
    if config.etcd is not None:
        from twisted_gw.config.etcd_store import EtcdStore

        store = EtcdStore.from_config(config.etcd, reactor)  # loads in startService
    else:
        store = EmbeddedStore(config.store_path)
        existed = store.load()
        if not existed and config.seed_demo:
            store.seed_demo()

    upstream = UpstreamClient(reactor)
    providers = build_providers(upstream)
    metrics = GatewayMetrics()
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
    else:
        limiter = MemoryRateLimitStore(reactor)
    hooks = HookManager(
        [
            ValidateModelHook(providers),
            RateLimitHook(limiter),
            MetricsHook(metrics, reactor),
            AccessLogHook(reactor, config.access_log_format),
            *load_hooks(config.hooks),
            *(plugin_hooks() if config.plugin_hooks else ()),
        ]
    )
    proxy = ProxyApp(
        store,
        hooks,
        providers,
        reactor,
        upstream_timeout=config.upstream_timeout,
        max_body_bytes=config.max_body_bytes,
    )
    admin = AdminApp(store, config.admin_keys, metrics, proxy=proxy)

    proxy_site = GatewaySite(
        proxy.app.resource(),
        config.max_body_bytes,
        header_timeout=config.proxy.header_timeout,
        max_connections=config.proxy.max_connections,
        reactor=reactor,
    )
    admin_site = GatewaySite(
        admin.app.resource(),
        config.max_body_bytes,
        header_timeout=config.admin.header_timeout,
        max_connections=config.admin.max_connections,
        reactor=reactor,
    )

    gateway = GatewayService(config, store, upstream, limiter, proxy)
    ListenerService(config.proxy, proxy_site, reactor, tls.get("Proxy")).setServiceParent(gateway)
    ListenerService(config.admin, admin_site, reactor, tls.get("Admin")).setServiceParent(gateway)
    if config.etcd is not None:
        from twisted_gw.config.etcd_store import StartupGate

        # listeners accept once etcd is loaded; exit 1 if it never is
        StartupGate(store, reactor).setServiceParent(gateway)
    return gateway


def makeService(config_path: str | None, reactor: Any = None) -> GatewayService:
    """Load the config and build the service, or exit 1 with the reason on stdout."""
    from twisted_gw.config.embedded import StoreFileError

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        config = load_config(config_path)
        return build(config, reactor)
    except (ConfigError, StoreFileError) as e:
        fail_startup(str(e))
