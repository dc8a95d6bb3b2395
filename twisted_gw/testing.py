"""An in-memory gateway for tests, shipped like :mod:`treq.testing`.

:class:`MemoryGateway` is the real proxy pipeline (ProxyApp, the Exchange,
the relay, the rate-limit hook and the in-memory limiter, the access-log line
formatter's input) on a :class:`~twisted.internet.task.Clock`, with an
in-memory config store and a :class:`ScriptedProvider` whose every call the
test answers by hand; requests go through :class:`treq.testing.StubTreq`, so
no socket, no process and no real time is involved::

    gw = MemoryGateway()
    gw.add_model("gpt", "openai/x")
    key = gw.add_key(["gpt"])
    pending = gw.post("/v1/chat/completions", {"model": "gpt", ...}, key)
    gw.provider.calls[-1].answer({"choices": [...], "usage": {...}})
    response = gw.result(pending)          # Response with .code, .headers, .body
    assert gw.ends == ["ok"]               # finalize ran once, as "ok"

The hooks run in the service's order: rate limit, budget (``gw.budgets``), metrics (``gw.metrics``, a
private registry; :meth:`MemoryGateway.sample` reads it), the test's own, then
the recorder behind :attr:`MemoryGateway.ends`.

Black-box tests of the real process (tests/) stay where the wire is the point.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_gw.config.embedded import EmbeddedStore
from twisted_gw.config.snapshot import Snapshot, StoredEntry
from twisted_gw.errors import GatewayError
from twisted_gw.hooks.budget import BudgetHook
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IHook
from twisted_gw.hooks.manager import HookManager
from twisted_gw.hooks.rate_limit import RateLimitHook
from twisted_gw.jsonutil import dumps
from twisted_gw.observability.metrics import GatewayMetrics, MetricsHook
from twisted_gw.providers.errors import map_upstream_status
from twisted_gw.providers.interfaces import (
    CHAT,
    EMBEDDINGS,
    IChunkSink,
    IChunkSource,
    IProvider,
    ProviderResult,
)
from twisted_gw.providers.mock import MockProvider
from twisted_gw.proxy.app import ProxyApp
from twisted_gw.ratelimit.memory import MemoryRateLimitStore
from twisted_gw.spend.memory import MemoryBudgetStore

__all__ = [
    "ControlledSource",
    "MemoryGateway",
    "MemoryStore",
    "PendingCall",
    "Recorder",
    "ScriptedProvider",
]


class _Clock(Clock):
    """A Clock whose :meth:`advance` fails instead of hanging for ever when
    calls keep scheduling themselves at the current instant (on a Clock, time
    only moves when the test moves it)."""

    spin_limit = 10_000

    def __init__(self) -> None:
        super().__init__()
        self._instant = -1.0
        self._spins = 0

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> Any:
        now = self.seconds()
        if now + delay <= now:
            if now != self._instant:
                self._instant, self._spins = now, 0
            self._spins += 1
            if self._spins > self.spin_limit:
                raise AssertionError(
                    f"{callable!r} keeps rescheduling itself at t={now!r} "
                    f"(delay {delay!r}): time cannot move on, the clock would spin for ever"
                )
        return super().callLater(delay, callable, *args, **kw)


class MemoryStore(EmbeddedStore):
    """The embedded store without its file: the same checks (duplicates,
    revisions) and snapshots, every change applied at once in memory."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.snapshot = Snapshot()

    def _persist(self, revision: int, entries: dict[str, StoredEntry]) -> None:
        pass


@implementer(IChunkSource)
class ControlledSource:
    """A stream the test feeds by hand: :meth:`push` chunks, then :meth:`end`."""

    def __init__(self) -> None:
        self.sink: IChunkSink | None = None
        self.paused = False
        self.cancelled = False
        self.ended = False

    def start(self, sink: IChunkSink) -> None:
        self.sink = sink

    def push(self, *chunks: dict | bytes) -> None:
        """Chunks of one upstream read (dicts are serialized), then a flush."""
        if self.cancelled or self.ended:
            return
        for chunk in chunks:
            self.sink.chunk(chunk if isinstance(chunk, bytes) else dumps(chunk))
            if self.cancelled or self.ended:
                return
        self.sink.flush()

    def end(self, clean: bool = True, detail: str = "end of stream") -> None:
        if not (self.cancelled or self.ended):
            self.ended = True
            self.sink.upstream_ended(clean, detail)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class PendingCall:
    """One call a ScriptedProvider received; the test settles it."""

    kind: str  # "chat", "stream", "embeddings"; "native", "count" (anthropic's own)
    model: Any
    body: dict
    deferred: defer.Deferred
    cancelled: bool = False
    headers: dict = field(default_factory=dict)

    def answer(self, doc: dict | bytes) -> None:
        """A 200 answer (non-stream): the body relayed, its usage counted."""
        body = doc if isinstance(doc, bytes) else dumps(doc)
        usage = json.loads(body).get("usage")
        self.deferred.callback(ProviderResult(body, usage if isinstance(usage, dict) else None))

    def stream(self) -> ControlledSource:
        """The upstream accepted a stream: the source the test then feeds."""
        source = ControlledSource()
        self.deferred.callback(source)
        return source

    def fail(self, error: GatewayError | BaseException) -> None:
        self.deferred.errback(Failure(error))

    def refuse(
        self, status: int, doc: dict | bytes | None = None, retry_after: str | None = None
    ) -> None:
        """The upstream answered an error status (``doc`` its body): fail with
        the GatewayError the HTTP providers make of it (the same mapping,
        :func:`~twisted_gw.providers.errors.map_upstream_status`, with the
        model's provider key redacted), so a test reads like the upstream's
        answer; the mapping itself is unit-tested on its own."""
        body = b"" if doc is None else doc if isinstance(doc, bytes) else dumps(doc)
        self.fail(map_upstream_status(status, body, (self.model.api_key,), retry_after))


@implementer(IProvider)
class ScriptedProvider:
    """An IProvider whose calls wait for the test (see PendingCall)."""

    def __init__(self, name: str = "openai", endpoints: Iterable[str] = (CHAT, EMBEDDINGS)):
        self.name = name
        self.endpoints = frozenset(endpoints)
        self.calls: list[PendingCall] = []

    def _call(self, kind: str, model: Any, body: dict) -> defer.Deferred:
        def cancel(_: defer.Deferred) -> None:
            call.cancelled = True

        call = PendingCall(kind, model, body, defer.Deferred(cancel))
        self.calls.append(call)
        return call.deferred

    def chat(self, model: Any, body: dict, reactor: Any) -> defer.Deferred:
        return self._call("chat", model, body)

    def stream_chat(self, model: Any, body: dict, reactor: Any) -> defer.Deferred:
        return self._call("stream", model, body)

    def embeddings(self, model: Any, body: dict, reactor: Any) -> defer.Deferred:
        return self._call("embeddings", model, body)


class ScriptedAnthropicProvider(ScriptedProvider):
    """A ScriptedProvider that also takes a Messages client's request as it
    came (``native``) and counts its tokens (``count``), as the anthropic
    provider does; ``call.body`` is then the client's Messages request."""

    def __init__(self) -> None:
        super().__init__("anthropic", (CHAT,))

    def native_messages(self, model: Any, doc: dict, headers: dict, stream: bool) -> defer.Deferred:
        call = self._call("native", model, doc)
        self.calls[-1].headers = headers
        return call

    def count_tokens(self, model: Any, doc: dict, headers: dict) -> defer.Deferred:
        return self._call("count", model, doc)


@implementer(IHook)
class Recorder:
    """A hook that remembers every finalize: how each request ended."""

    name = "recorder"

    def __init__(self) -> None:
        self.finalized: list[RequestContext] = []

    def pre_call(self, ctx: RequestContext) -> None:
        return None

    def post_call(self, ctx: RequestContext) -> None:
        pass

    def finalize(self, ctx: RequestContext) -> None:
        self.finalized.append(ctx)


@dataclass
class Response:
    """A finished response as a client saw it."""

    code: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def data(self) -> list[str]:
        """The ``data:`` payloads of an event stream, in order."""
        events = self.body.replace(b"\r\n", b"\n").split(b"\n\n")
        return [e[6:].decode() for e in events if e.startswith(b"data: ")]


class MemoryGateway:
    """The proxy pipeline in memory: see the module docstring."""

    def __init__(
        self,
        hooks: Sequence[IHook] = (),
        upstream_timeout: float = 600.0,
        max_body_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        from treq.testing import StubTreq

        self.clock: Clock = _Clock()
        self.store = MemoryStore()
        self.provider = ScriptedProvider("openai")
        self.providers: dict[str, IProvider] = {
            "openai": self.provider,
            "anthropic": ScriptedAnthropicProvider(),
            "mock": MockProvider(),
        }
        self.limiter = MemoryRateLimitStore(self.clock)
        self.metrics = GatewayMetrics()
        self.recorder = Recorder()
        self.budgets = MemoryBudgetStore(self.clock)
        budget = BudgetHook(self.budgets, self.clock)
        self.hooks = HookManager(
            [
                RateLimitHook(self.limiter),
                budget,
                MetricsHook(self.metrics, self.clock),
                *hooks,
                self.recorder,
            ],
            admit_first=(budget,),
        )
        self.proxy = ProxyApp(
            self.store,
            self.hooks,
            self.providers,
            self.clock,
            upstream_timeout=upstream_timeout,
            max_body_bytes=max_body_bytes,
        )
        self.client = StubTreq(self.proxy.resource())
        self._ids = itertools.count(1)

    # -- config --------------------------------------------------------------------

    def add_model(self, name: str, model: str = "openai/x", **fields: Any) -> str:
        doc = {"name": name, "model": model, "provider_config": fields.pop("provider_config", None)}
        if doc["provider_config"] is None:
            doc["provider_config"] = {} if model.startswith("mock/") else {"api_key": "sk-up"}
        doc.update(fields)
        return self._put("models", doc)

    def add_key(self, allowed: list[str], key: str | None = None, **fields: Any) -> str:
        key = key or f"sk-test-{next(self._ids)}"
        self._put("apikeys", {"key": key, "allowed_models": allowed, **fields})
        return key

    def _put(self, segment: str, doc: dict) -> str:
        from twisted_gw.config.entities import KINDS

        id = f"{segment}-{next(self._ids)}"
        value = KINDS[segment].parse(id, doc).doc
        self.store.put(segment, id, value)
        return id

    # -- requests -------------------------------------------------------------------

    def post(
        self, path: str, doc: Any, key: str | None = None, headers: dict | None = None
    ) -> defer.Deferred:
        """Send a request; the Deferred fires with a :class:`Response` once the
        whole body is in (settle the provider's calls, advance the clock and
        :meth:`flush` in between)."""
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        d = self.client.request("POST", "http://gw" + path, data=body, headers=sent)
        return d.addCallback(self._collect)

    def get(self, path: str, key: str | None = None) -> defer.Deferred:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return self.client.request("GET", "http://gw" + path, headers=headers).addCallback(
            self._collect
        )

    @staticmethod
    def _collect(response: Any) -> defer.Deferred:
        import treq

        result = Response(
            response.code,
            {
                k.decode().lower(): b", ".join(v).decode()
                for k, v in response.headers.getAllRawHeaders()
            },
        )

        def done(_: Any) -> Response:
            result.body = b"".join(result.chunks)
            return result

        return treq.collect(response, result.chunks.append).addCallback(done)

    def flush(self) -> None:
        """Move every byte that can move between the client and the gateway."""
        self.client.flush()

    def disconnect(self) -> None:
        """Every client whose response is not finished goes away: its
        connection is dropped, as a closed socket is (the pending requests
        then fail on the client's side). As a TCP transport does when its
        connection is lost, the transport's producer (the HTTP channel, which
        passes it on to a stream's relay) is stopped first, then the protocol
        is told; the in-memory transport alone would skip the first step."""
        for request in list(self.proxy._live):
            transport = request.channel.transport
            producer, transport.producer = getattr(transport, "producer", None), None
            if producer is not None:
                producer.stopProducing()
            transport.abortConnection()
        self.flush()

    def result(self, d: defer.Deferred) -> Any:
        """Flush, then the Deferred's result (raises if it failed or is pending)."""
        self.flush()
        out: list[Any] = []
        d.addBoth(out.append)
        if not out:
            raise AssertionError("the request is still pending")
        if isinstance(out[0], Failure):
            out[0].raiseException()
        return out[0]

    # -- what happened --------------------------------------------------------------

    def stream_producers(self) -> list[Any]:
        """The push producers (stream relays) of the requests in flight: a
        test plays the client's backpressure through them."""
        return [r.producer for r in self.proxy._live if getattr(r, "producer", None)]

    def sample(self, name: str, **labels: str) -> float:
        """One sample of :attr:`metrics` (as ``GET /metrics`` would show it);
        a series that does not exist reads 0."""
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    @property
    def ends(self) -> list[str | None]:
        """How each finished request ended (one entry per finalize)."""
        return [ctx.end_reason for ctx in self.recorder.finalized]
