"""Prometheus metrics (CONTRACT 4.6) and the built-in hook that records them.

The names and labels are the ones AISIX's OTLP metrics get in Prometheus, so
its Grafana dashboard works unchanged; two more series are ours **[beyond]**:
rate-limit rejections and how streams ended. One registry per gateway (no
global state), served at ``GET /metrics`` on the admin listener. Label
children are cached so a request costs a few dict lookups, not label parsing.

With several workers (``server.workers > 1``) every worker writes its
values to files in the supervisor's ``PROMETHEUS_MULTIPROC_DIR`` (set before
prometheus_client is imported) and ``/metrics``, whichever worker serves it,
reports the sum over all of them (prometheus_client's multiprocess mode).
Gauges read at scrape time cannot work there (a worker cannot call another's
function), so each worker sets its own value of them every 100 ms
(:meth:`GatewayMetrics.refresh`) and the live workers' values are summed.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IHook
from twisted_gw.hooks.rate_limit import REJECTED

#: milliseconds: from a cache hit to a long generation
BUCKETS_MS = (
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    120000,
    300000,
)


class GatewayMetrics:
    """The gateway's metric families, in their own registry."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

        #: several workers: /metrics sums the files in this directory
        self.multiprocess_dir = multiprocess_dir
        self._watched: list[tuple[Any, Any]] = []

        disable_created_metrics()  # no *_created series: AISIX has none, they only add noise

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_count = Counter(
            "aisix_request_count",
            "Proxy requests by route and status.",
            ["method", "endpoint", "status_code"],
            registry=r,
        )
        self.token_count = Counter(
            "aisix_token_count",
            "Tokens by model and type (prompt, completion, total).",
            ["model", "type"],
            registry=r,
        )
        self.request_latency = Histogram(
            "aisix_request_latency_milliseconds",
            "Request received to last byte sent.",
            ["method", "endpoint", "status_code"],
            buckets=BUCKETS_MS,
            registry=r,
        )
        self.llm_latency = Histogram(
            "aisix_llm_latency_milliseconds",
            "Upstream call to its last byte.",
            ["model"],
            buckets=BUCKETS_MS,
            registry=r,
        )
        self.first_token_latency = Histogram(
            "aisix_llm_first_token_latency_milliseconds",
            "Request received to first stream chunk.",
            ["model"],
            buckets=BUCKETS_MS,
            registry=r,
        )
        self.rate_limit_rejections = Counter(
            "twisted_gw_rate_limit_rejections",
            "Requests refused with 429, by limit.",
            ["limit"],
            registry=r,
        )
        self.stream_ends = Counter(
            "twisted_gw_stream_ends",
            "Streaming requests by how they ended.",
            ["end"],
            registry=r,
        )
        self.ratelimit_store_errors = Counter(
            "twisted_gw_ratelimit_store_errors",
            "Rate-limit store calls that failed (requests were let through).",
            registry=r,
        )
        self.upstream_attempts = Counter(
            "twisted_gw_upstream_attempts",
            "Upstream attempts by model, deployment (index, or fallback#index) and "
            "outcome (ok, connect, timeout, auth or the upstream's status).",
            ["model", "target", "outcome"],
            registry=r,
        )
        self.deployment_cooldowns = Counter(
            "twisted_gw_deployment_cooldowns",
            "Cooldowns started, by model and deployment.",
            ["model", "target"],
            registry=r,
        )
        self._children: dict[tuple, tuple[Any, Any]] = {}
        self._attempt_children: dict[tuple[str, str, str], Any] = {}
        self._model_children: dict[str, tuple[Any, Any, Any, Any, Any]] = {}

    def watch(self, name: str, documentation: str, read: Any) -> None:
        """A gauge whose value is ``read()`` at scrape time (costs the hot path
        nothing): e.g. requests in flight, concurrency slots held."""
        from prometheus_client import Gauge

        if self.multiprocess_dir is None:
            Gauge(name, documentation, registry=self.registry).set_function(read)
            return
        # the sum over the live workers of each one's own value
        gauge = Gauge(name, documentation, registry=self.registry, multiprocess_mode="livesum")
        gauge.set(read())
        self._watched.append((gauge, read))

    def refresh(self) -> None:
        """Several workers: write this worker's value of every watched gauge
        (called every 100 ms; one process reads them at scrape time instead)."""
        for gauge, read in self._watched:
            gauge.set(read())

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()  # a fresh one per scrape, as the library asks
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def request(self, method: str, endpoint: str, status: int) -> tuple[Any, Any]:
        key = (method, endpoint, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, endpoint, str(status))
            children = self._children[key] = (
                self.request_count.labels(*labels),
                self.request_latency.labels(*labels),
            )
        return children

    def attempt(self, model: str, target: str, outcome: str) -> Any:
        key = (model, target, outcome)
        child = self._attempt_children.get(key)
        if child is None:
            child = self._attempt_children[key] = self.upstream_attempts.labels(*key)
        return child

    def model(self, name: str) -> tuple[Any, Any, Any, Any, Any]:
        children = self._model_children.get(name)
        if children is None:
            children = self._model_children[name] = (
                self.token_count.labels(name, "prompt"),
                self.token_count.labels(name, "completion"),
                self.token_count.labels(name, "total"),
                self.llm_latency.labels(name),
                self.first_token_latency.labels(name),
            )
        return children


def _count(usage: dict, name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@implementer(IHook)
class MetricsHook:
    """Records every finished request (finalize runs exactly once per request)."""

    name = "metrics"

    def __init__(self, metrics: GatewayMetrics, reactor: Any) -> None:
        self.metrics = metrics
        self.reactor = reactor

    def pre_call(self, ctx: RequestContext) -> None:
        return None

    def post_call(self, ctx: RequestContext) -> None:
        pass

    def finalize(self, ctx: RequestContext) -> None:
        m = self.metrics
        now = self.reactor.seconds()
        finished = ctx.finished_at if ctx.finished_at is not None else now
        count, latency = m.request(ctx.method, ctx.endpoint, ctx.status)
        count.inc()
        latency.observe((finished - ctx.started) * 1000.0)
        rejected = ctx.state.get(REJECTED)
        if rejected is not None:
            m.rate_limit_rejections.labels(rejected).inc()
        if ctx.stream:
            m.stream_ends.labels(ctx.end_reason or "-").inc()
        if ctx.model is None:
            return
        name = ctx.model.name
        for target, outcome in ctx.attempt_outcomes:
            m.attempt(name, target, outcome).inc()
        for target in ctx.cooldowns:
            m.deployment_cooldowns.labels(name, target).inc()
        prompt, completion, total, llm, first = m.model(name)
        usage = ctx.usage if isinstance(ctx.usage, dict) else {}
        for child, field in (
            (prompt, "prompt_tokens"),
            (completion, "completion_tokens"),
            (total, "total_tokens"),
        ):
            n = _count(usage, field)
            if n:
                child.inc(n)
        if ctx.upstream_started is not None:
            done = ctx.upstream_finished if ctx.upstream_finished is not None else finished
            llm.observe((done - ctx.upstream_started) * 1000.0)
        if ctx.stream and ctx.first_token_at is not None:
            first.observe((ctx.first_token_at - ctx.started) * 1000.0)
