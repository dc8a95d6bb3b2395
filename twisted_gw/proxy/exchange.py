"""The Exchange: the one owner of a proxied model call (CONTRACT 4.1-4.4).

A route reads the request and hands it to an Exchange; from then on the
exchange alone decides, and every path ends in :meth:`Exchange._close`, which
finalizes exactly once:

1. **resolve** the model from the request's snapshot (exists, allowed, its
   provider serves the endpoint), then run the hooks' ``pre_call`` (limits);
2. **attempt**, a loop (CONTRACT 5.1): the model's routing plan
   (:mod:`twisted_gw.proxy.routing`) picks a deployment, its provider is
   called under the attempt's one timer (non-stream: the whole answer;
   stream: the first chunk, then the idle time between chunks); a failure
   before anything reached the client, for a reason the model retries on,
   abandons the attempt (its connection closed) and goes round again, then
   through the model's fallbacks; nothing is retried once a byte went out;
3. **answer**: one JSON body, or the SSE relay (a producer the exchange
   drives) from the first chunk on; headers are held until then, so every
   failure before it is still a JSON error;
4. **end**: done, empty, ok, cut, timeout, upstream error, rejected or client
   gone, each told to the exchange, never handled behind its back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from http import HTTPStatus

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from twisted_gw.config.entities import NEVER_RETRIED, Model
from twisted_gw.errors import (
    GatewayError,
    internal_error,
    model_access_forbidden,
    model_not_found,
    provider_error,
    request_timeout,
    unsupported_endpoint,
)
from twisted_gw.headernames import canonical
from twisted_gw.hooks.context import RequestContext, UpstreamFailure
from twisted_gw.hooks.manager import HookManager
from twisted_gw.observability.logsafe import escape
from twisted_gw.providers.catalog import upstream_host
from twisted_gw.providers.interfaces import (
    CHAT,
    EMBEDDINGS,
    IChunkSource,
    IProvider,
    ProviderResult,
)
from twisted_gw.proxy.headers import set_answer_headers
from twisted_gw.proxy.relay import StreamRelay
from twisted_gw.proxy.routing import DeploymentState, Plan, Router, retry_after_seconds
from twisted_gw.proxy.wire import CHAT_WIRE, Wire
from twisted_gw.spend.prices import answer_chars

log = Logger()

_JSON = b"application/json"
_CONTENT_TYPE = canonical(b"content-type")
_CONTENT_LENGTH = canonical(b"content-length")
_REQUEST_ID = canonical(b"x-request-id")

#: the exchange's states: before the call, waiting for the answer (or, for a
#: stream, for its first chunk), relaying a stream, over
STARTING, CALLING, WAITING, STREAMING, CLOSED = range(5)


def reason_phrase(status: int) -> bytes:
    """The reason phrase (twisted.web lacks some, e.g. 429 'Too Many Requests')."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"


def upstream_endpoint(ctx: RequestContext) -> str:
    """The upstream endpoint a request calls: ``chat/completions`` or
    ``embeddings`` (the Messages and Responses APIs run as chat)."""
    endpoint = ctx.endpoint.removeprefix("/v1/")
    return endpoint if endpoint == EMBEDDINGS else CHAT


def resolve_model(ctx: RequestContext, providers: Mapping[str, IProvider]) -> None:
    """CONTRACT 4.1 checks 3 and 4, before any limit: the model exists, the
    key may use it, and its provider serves the endpoint; sets ``ctx.model``."""
    name = ctx.model_name
    model = ctx.snapshot.models_by_name.get(name)
    if model is None:
        raise model_not_found(name)
    if ctx.api_key is None or name not in ctx.api_key.allowed_models:
        raise model_access_forbidden(name)
    endpoint = upstream_endpoint(ctx)
    if model.provider and not serves(providers, model, endpoint):
        raise unsupported_endpoint(name, endpoint)
    ctx.model = model  # no provider: its provider entity is missing, a 500 after the limits


def serves(providers: Mapping[str, IProvider], deployment: Model, endpoint: str) -> bool:
    """The deployment's provider family serves ``endpoint`` (``chat/completions``...)."""
    provider = providers.get(deployment.provider)
    return provider is not None and endpoint in provider.endpoints


def prepare_json(
    request: Request,
    ctx: RequestContext,
    body: bytes | None,
    error: GatewayError | None,
    wire: Wire = CHAT_WIRE,
) -> bytes:
    """Set status and headers of a whole JSON answer; the body to write (the
    error's in the wire's shape, every configured secret redacted, when failing)."""
    if error is not None:
        ctx.error = error  # the access log's error= (CONTRACT 5.4)
        status, body = wire.error_body(ctx, error)
        ctx.status = status
        request.setResponseCode(status, reason_phrase(status))
        for name, value in error.headers.items():
            request.setHeader(name, value)
    else:
        ctx.status = 200
    set_answer_headers(
        request.responseHeaders,
        (
            (_CONTENT_TYPE, _JSON),
            (_CONTENT_LENGTH, b"%d" % len(body)),  # no chunked framing
            (_REQUEST_ID, ctx.request_id.encode()),
        ),
        ctx.response_headers,
    )
    return body


def write_json(
    request: Request,
    ctx: RequestContext,
    body: bytes | None,
    error: GatewayError | None,
    wire: Wire = CHAT_WIRE,
) -> None:
    """Write one whole JSON answer; nothing if the client is gone (twisted.web
    refuses to finish then). A 5xx is logged for the operator tailing the log."""
    if ctx.client_gone:
        return
    if error is not None and error.status >= 500:
        failure = ctx.upstream_failure
        log.warn(
            "request {rid} model {model}: {status} {message}{upstream}",
            rid=ctx.request_id,
            model=escape(ctx.snapshot.redact(ctx.model_name or "-")[:128]),
            status=error.status,
            message=escape(ctx.snapshot.redact(error.message)),
            upstream=""
            if failure is None or failure.attempt != ctx.attempts
            else escape(ctx.snapshot.redact(f" (upstream {failure.host or '-'}: {failure.cause})")),
        )
    request.write(prepare_json(request, ctx, body, error, wire))
    request.finish()


class Exchange:
    """One model call from its parsed body to its single finalize."""

    def __init__(
        self,
        request: Request,
        ctx: RequestContext,
        hooks: HookManager,
        providers: Mapping[str, IProvider],
        reactor: IReactorTime,
        upstream_timeout: float,
        router: Router | None = None,
        wire: Wire = CHAT_WIRE,
    ) -> None:
        self.request = request
        #: the client's API (chat, Messages, Responses); the upstream call is chat or embeddings
        self.wire = wire
        self.endpoint = upstream_endpoint(ctx)
        self.ctx = ctx
        self.hooks = hooks
        self.providers = providers
        self.reactor = reactor
        self.upstream_timeout = upstream_timeout
        self.router = router if router is not None else Router(reactor)
        self.state = STARTING
        #: what is pending now: the hooks' pre_call, a fallback's admission,
        #: or the provider call
        self._pending: defer.Deferred | None = None
        self._source: IChunkSource | None = None
        self._relay: StreamRelay | None = None
        self._timer: IDelayedCall | None = None
        self._timeout = 0.0
        self._last_activity = 0.0
        self._paused = False  # by the client's backpressure: not an idle upstream
        #: the attempt now running: its generation (callbacks of an abandoned
        #: one carry an older one and are ignored), deployment and router state
        self._gen = 0
        self._deployment: Model | None = None
        self._dstate: DeploymentState | None = None
        self._probe = False
        self._answered_by: DeploymentState | None = None
        self._target = ""
        #: the model being routed (the requested one, then each fallback) and its plan
        self._routed: Model | None = None
        self._plan: Plan | None = None
        self._fallbacks: list[str] = []
        self._last_error: GatewayError | None = None
        #: fires (with None) when the request is over; cancelling it (Klein
        #: does when the client goes) is the client gone
        self.finished: defer.Deferred = defer.Deferred(lambda _: self.client_gone())

    # -- 1. resolve and check ---------------------------------------------------

    def start(self) -> defer.Deferred:
        """Run the exchange; the Deferred is :attr:`finished`, which the route
        returns: Klein cancels it when the client's connection is lost, and
        that is :meth:`client_gone` (no second ``notifyFinish`` per request)."""
        ctx = self.ctx
        try:
            resolve_model(ctx, self.providers)
            pending = self.hooks.pre_call(ctx)
        except GatewayError as e:
            self._reject(e)
            return self.finished
        except Exception:  # noqa: BLE001 - a hook's bug: logged, a JSON 500, one finalize
            self._crashed(Failure())
            return self.finished
        if pending is None:
            self._checked(None)
        else:
            self._pending = pending
            pending.addCallbacks(self._checked, self._check_failed).addErrback(self._crashed)
        return self.finished

    def _checked(self, _: object) -> None:
        self._pending = None
        if self.state != STARTING:
            return
        model = self.ctx.model
        self._fallbacks = list(model.fallbacks)
        try:
            pending = self.wire.checked(self.ctx)
        except GatewayError as e:
            self._reject(e)
            return
        if pending is not None:  # a lookup the wire needs (the Responses history)
            self.state = CALLING
            self._pending = pending
            pending.addCallbacks(self._wire_checked, self._check_failed).addErrback(self._crashed)
            return
        self._wire_checked(None)

    def _wire_checked(self, _: object) -> None:
        self._pending = None
        if self.state == CLOSED:
            return
        try:
            self._route(self.ctx.model)
        except Exception:  # noqa: BLE001 - see _crashed
            self._crashed(Failure())

    def _check_failed(self, failure: Failure) -> None:
        self._pending = None
        if self.state == CLOSED:
            return
        if failure.check(defer.CancelledError):  # the client left during the check
            self.client_gone()
        elif failure.check(GatewayError):
            self._reject(failure.value)
        else:
            log.failure("request {rid}: a pre_call hook failed", failure, rid=self.ctx.request_id)
            self._reject(internal_error())

    # -- 2. attempt: the loop over deployments, then fallbacks --------------------------

    def _route(self, model: Model) -> None:
        """Start routing ``model`` (the requested one or a fallback)."""
        self._routed = model
        endpoint = self.endpoint
        providers = self.providers
        self._plan = self.router.plan(model, lambda d: serves(providers, d, endpoint))
        self._next_attempt()

    def _next_attempt(self) -> None:
        deployment = self._plan.next()
        if deployment is None:
            self._next_fallback()
        else:
            self._attempt(deployment)

    def _attempt(self, deployment: Model) -> None:
        """One attempt on ``deployment``, under its one timer."""
        ctx = self.ctx
        if self._last_error is not None:  # a retry: the log says why (CONTRACT 5.4)
            self._retrying(deployment)
        self._gen += 1
        gen = self._gen
        ctx.attempts += 1
        ctx.response_headers["x-gateway-attempts"] = str(ctx.attempts)
        routed = self._routed
        fallback = routed is not ctx.model
        self._target = f"{routed.name}#{deployment.index}" if fallback else str(deployment.index)
        ctx.target = f"{routed.name}#{deployment.index}"
        if fallback and deployment.name != ctx.model.name:
            # CONTRACT 5.1: what the client sees keeps its model's name
            deployment = replace(deployment, name=ctx.model.name)
        self._deployment = ctx.deployment = deployment
        self._dstate, self._probe = self.router.began(deployment)
        provider = self.providers[deployment.provider]
        timeout_ms = deployment.timeout_ms  # a target without one has its model's
        self._timeout = timeout_ms / 1000.0 if timeout_ms else self.upstream_timeout
        self.state = CALLING
        self._last_activity = now = self.reactor.seconds()
        if ctx.upstream_started is None:
            ctx.upstream_started = now
        self._timer = self.reactor.callLater(self._timeout, self._timed_out, gen)
        trace = ctx.trace
        if trace is None:
            d = self.wire.call(provider, deployment, ctx, self.reactor)
        else:
            with trace.attempt(deployment, self._target):  # current: its traceparent goes upstream
                d = self.wire.call(provider, deployment, ctx, self.reactor)
        self._pending = d
        d.addCallbacks(
            self._answered, self._attempt_failed, callbackArgs=(gen,), errbackArgs=(gen,)
        ).addErrback(self._crashed)

    def _attempt_failed(self, failure: Failure, gen: int) -> None:
        if gen != self._gen or self.state == CLOSED:
            return  # an abandoned attempt, or the exchange is over
        self._pending = None
        if failure.check(defer.CancelledError):
            return  # we cancelled it (timeout, client gone): already handled
        if failure.check(GatewayError):
            self._failed(failure.value)
        else:
            log.failure("request {rid}: the upstream call failed", failure, rid=self.ctx.request_id)
            self._failed(provider_error("upstream request failed"))

    def _failed(self, error: GatewayError) -> None:
        """The attempt failed before anything reached the client: retry, fall
        back, or answer with this error (CONTRACT 5.1)."""
        if error.reason != "rejected":  # the upstream's doing, not a refusal of ours
            self._upstream_failed(self._cause(error))
        outcome = error.attempt_outcome
        routed = self._routed
        routing = routed.routing
        retryable = outcome in routing.retry_on and outcome not in NEVER_RETRIED
        self.ctx.attempt_outcomes.append((self._target, str(outcome)))
        if self.ctx.trace is not None:
            self.ctx.trace.attempt_failed(error)
        state, self._dstate = self._dstate, None
        retry_after = retry_after_seconds(error.retry_after, self.reactor.seconds())
        if retryable or retry_after is not None:
            if self.router.failed(state, self._probe, routing.cooldown, retry_after):
                self.ctx.cooldowns.append(self._target)
        else:
            self.router.abandoned(state, self._probe)
        self._abandon()
        if not retryable:
            self._fail(error)
            return
        self._last_error = error
        self._next_attempt()

    def _next_fallback(self) -> None:
        """Every attempt on the routed model failed, each for a retryable
        reason: the next fallback that exists, that the key may use, that
        serves the endpoint and that its own limits admit; else the last error."""
        ctx = self.ctx
        snapshot = ctx.snapshot
        allowed = ctx.api_key.allowed_models
        endpoint = self.endpoint
        while self._fallbacks:
            name = self._fallbacks.pop(0)
            model = snapshot.models_by_name.get(name)
            if (
                model is None
                or model is ctx.model
                or name not in allowed
                or not any(serves(self.providers, d, endpoint) for d in model.deployments)
            ):
                continue
            admitted = self.hooks.admit(ctx, model)
            if isinstance(admitted, defer.Deferred):
                self.state = CALLING
                self._pending = admitted
                admitted.addCallbacks(
                    self._admitted,
                    self._admission_failed,
                    callbackArgs=(model, self._gen),
                    errbackArgs=(self._gen,),
                ).addErrback(self._crashed)
                return
            if admitted:
                self._route(model)
                return
        if self._last_error is None:  # nothing could be tried: no provider to call
            log.error(
                "request {rid} model {model}: provider {pid} not found",
                rid=ctx.request_id,
                model=escape(ctx.model.name),
                pid=escape(str(ctx.model.provider_id)),
            )
        self._fail(self._last_error or internal_error())

    def _admitted(self, admitted: bool, model: Model, gen: int) -> None:
        if gen != self._gen or self.state == CLOSED:
            return
        self._pending = None
        if admitted:
            self._route(model)
        else:
            self._next_fallback()

    def _admission_failed(self, failure: Failure, gen: int) -> None:
        if gen != self._gen or self.state == CLOSED:
            return
        self._pending = None
        if not failure.check(defer.CancelledError):
            log.failure(
                "request {rid}: a fallback's check failed", failure, rid=self.ctx.request_id
            )
            self._next_fallback()

    def _abandon(self) -> None:
        """Give up the running attempt: its callbacks are ignored from now on,
        its timer stopped, its call cancelled and its upstream closed."""
        self._gen += 1
        self._cancel_timer()
        self._cancel_upstream()
        if self._relay is not None:
            relay, self._relay = self._relay, None
            relay.stop()
        self.state = CALLING

    # -- 3. answer ------------------------------------------------------------------

    def _answered(self, answer: ProviderResult | IChunkSource, gen: int) -> None:
        if gen != self._gen or self.state == CLOSED:
            # raced with a timeout, a retry or the client leaving
            if self.ctx.stream:
                answer.cancel()
            return
        self._pending = None
        ctx = self.ctx
        if not ctx.stream:
            self._succeeded()
            ctx.upstream_finished = self.reactor.seconds()
            ctx.usage = answer.usage
            if ctx.priced and answer.usage is None:  # an estimate's basis (issue 17)
                ctx.relayed_chars = answer_chars(answer.body)
            if ctx.trace is not None:
                ctx.trace.answered(answer.body)
            try:
                body = self.wire.answer(ctx, answer.body)
            except GatewayError as e:  # an answer the client's API cannot carry
                self._fail(e)
                return
            ctx.status = 200
            self.hooks.post_call(ctx)
            write_json(self.request, ctx, body, None)
            self._close("ok")
            return
        self.state = WAITING
        self._source = answer
        tap = None if ctx.trace is None else ctx.trace.chunk
        self._relay = StreamRelay(self.request, ctx, self, self.wire.framer(ctx), tap)
        answer.start(self._relay)

    def _succeeded(self) -> None:
        """The attempt answered: the request is committed to it."""
        self.ctx.attempt_outcomes.append((self._target, "ok"))
        state = self._dstate
        if state is not None:
            self.router.succeeded(state, self._probe)
            self._answered_by = state  # in flight on it until the request ends

    # what the relay tells its owner

    def first_chunk(self) -> None:
        """The first chunk came: the request is committed to this attempt, the
        stream's headers go out, the timer now measures the idle time between
        chunks."""
        self.state = STREAMING
        self.ctx.first_token_at = self.reactor.seconds()
        self._succeeded()

    def activity(self) -> None:
        self._last_activity = self.reactor.seconds()

    def paused(self, paused: bool) -> None:
        """The client stopped (or started again) reading: flow control reaches
        the upstream, and a slow client is not an idle upstream."""
        self._paused = paused
        if not paused:
            self._last_activity = self.reactor.seconds()
        source = self._source
        if source is not None:
            source.pause() if paused else source.resume()

    def upstream_ended(self, clean: bool, detail: str) -> None:
        """The source's one end (see twisted_gw.providers.sources.stream_end)."""
        if self.state == CLOSED:
            return
        self._source = None  # over: nothing to cancel
        relay = self._relay
        if self.state == WAITING:
            if clean:  # an answer with no chunk: still the upstream's answer
                self._succeeded()
                self.ctx.upstream_finished = self.reactor.seconds()
                relay.start_response()
                relay.end(done=False, clean=True)
                self._close("empty")
            else:
                self._failed(provider_error(f"{detail} before the first chunk", "connect"))
            return
        self.ctx.upstream_finished = self.reactor.seconds()
        if clean:
            relay.end(done=True)
            self.wire.stream_done(self.ctx)
            self._close("done")
        else:
            self._upstream_failed(f"stream cut: {detail}")
            relay.end(done=False, detail=f"stream: {detail}")
            self._close("upstream_cut")

    def malformed(self) -> None:
        """An upstream chunk that is not a JSON object."""
        if self.state == WAITING:
            self._failed(provider_error("malformed event in the upstream stream"))
        elif self.state == STREAMING:
            log.warn("stream {rid}: malformed upstream event, stream cut", rid=self.ctx.request_id)
            self._upstream_failed("stream cut: malformed upstream event")
            self._relay.end(done=False, detail="data transform: malformed upstream event")
            self._close("upstream_cut")

    # -- what the log is told of a failed attempt (CONTRACT 5.4) -------------------------

    def _cause(self, error: GatewayError) -> str:
        """What the upstream did, in a few words of ours: its status, the
        timeout that ran out, or how the connection failed (never its body)."""
        if error.upstream_status is not None:
            return f"status {error.upstream_status}"
        if error.outcome == "timeout":
            return f"timeout after {self._timeout * 1000:.0f} ms"
        return error.message.removeprefix("Provider error: ")

    def _upstream_failed(self, cause: str) -> None:
        """Note how the running attempt's upstream failed; the access line
        names it when this attempt was the last (failures only: no cost on
        a request that succeeds)."""
        ctx = self.ctx
        host = upstream_host(self._deployment, self.endpoint)
        ctx.upstream_failure = UpstreamFailure(ctx.attempts, ctx.target or "-", host, cause)

    def _retrying(self, deployment: Model) -> None:
        """One warning line per attempt given up for another, so a request's
        access line (its last attempt's) is not all the log says of it."""
        ctx = self.ctx
        failure = ctx.upstream_failure
        if failure is None or failure.attempt != ctx.attempts:
            what = f"status {self._last_error.status}"  # not an upstream's failure
            host = "-"
        else:
            what, host = failure.cause, failure.host or "-"
        log.warn(
            "request {rid} model {model}: attempt {n} on {target} ({host}) failed: {what};"
            " trying {next}",
            rid=ctx.request_id,
            model=escape(ctx.model.name),
            n=ctx.attempts,
            target=escape(ctx.target or "-"),
            host=escape(host),
            what=escape(ctx.snapshot.redact(what)),
            next=escape(f"{self._routed.name}#{deployment.index}"),
        )

    # -- 4. the ways it ends ----------------------------------------------------------

    def _timed_out(self, gen: int) -> None:
        self._timer = None
        if gen != self._gen or self.state == CLOSED:
            return
        if self.state == STREAMING:
            idle = 0.0 if self._paused else self.reactor.seconds() - self._last_activity
            remaining = self._timeout - idle
            # a hair below the timeout is the timeout: rescheduled after that
            # hair, the timer would land on the same float instant again and again
            if remaining > 1e-6:
                self._timer = self.reactor.callLater(remaining, self._timed_out, gen)
                return
            log.warn(
                "stream {rid}: no chunk for {t}s, stream cut",
                rid=self.ctx.request_id,
                t=self._timeout,
            )
            self._upstream_failed(f"timeout after {self._timeout * 1000:.0f} ms without a chunk")
            self._cancel_upstream()
            self._relay.end(done=False)
            self._close("timeout")
            return
        self._failed(request_timeout())

    def client_gone(self) -> None:
        """The client's connection was lost: stop paying for tokens at once."""
        if self.state == CLOSED:
            return
        ctx = self.ctx
        ctx.client_gone = True  # nothing may be written from now on
        if self._relay is not None:
            self._relay.stop()
        ctx.status = ctx.status or 499
        self._close("client_gone")

    def _reject(self, error: GatewayError) -> None:
        """Refused before any upstream call (4.1's checks, a limit)."""
        self._fail(error)

    def _fail(self, error: GatewayError) -> None:
        """A JSON error instead of an answer (nothing was sent yet)."""
        if self.state == CLOSED:
            return
        self._cancel_upstream()
        write_json(self.request, self.ctx, None, error, self.wire)
        self._close(error.reason)

    def _crashed(self, failure: Failure) -> None:
        """A bug in the exchange's own callbacks: log it and still end the
        request (a JSON 500 if nothing was sent, else a cut stream) and
        finalize once, rather than an unhandled error and a request that
        never ends."""
        log.failure("request {rid}: unexpected error", failure, rid=self.ctx.request_id)
        if self.state == CLOSED:
            return
        try:
            if self.state == STREAMING:
                self._relay.end(done=False)
                self._close("upstream_cut")
            else:
                self._fail(internal_error())
        except Exception:  # noqa: BLE001 - beyond saving: drop the connection, finalize
            log.failure("request {rid}: could not end the response", rid=self.ctx.request_id)
            self.ctx.status = self.ctx.status or 500
            self.request.loseConnection()
            self._close("upstream_error")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            timer, self._timer = self._timer, None
            if timer.active():
                timer.cancel()

    def _cancel_upstream(self) -> None:
        """Cancel what is pending and close the upstream. The exchange is
        marked closing first: whatever the cancel fires synchronously (a
        failed call, an end) is its own doing and is ignored."""
        state, self.state = self.state, CLOSED
        try:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                pending.cancel()
            if self._source is not None:
                source, self._source = self._source, None
                source.cancel()
        finally:
            self.state = state

    def _close(self, reason: str) -> None:
        """The one exit: stop everything, finalize exactly once."""
        self._cancel_upstream()
        self.state = CLOSED
        self._cancel_timer()
        if self._dstate is not None:
            state, self._dstate = self._dstate, None
            if self._answered_by is state:
                self.router.released(state)
            else:  # an attempt that never told how it went
                self.router.abandoned(state, self._probe)
        ctx = self.ctx
        if ctx.finished_at is None:
            ctx.finished_at = self.reactor.seconds()
        self.hooks.finalize(ctx, reason)
        if not self.finished.called:
            self.finished.callback(None)
