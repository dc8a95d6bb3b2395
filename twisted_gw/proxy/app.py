"""The proxy's Klein app (CONTRACT 4.1, 4.2): routes, and nothing else.

A route reads the request (auth, the body) into a RequestContext and hands a
model call to an :class:`~twisted_gw.proxy.exchange.Exchange`, the one owner
of everything after that; the small routes without an upstream call
(``GET /v1/models``, unknown paths) write their one JSON answer and finalize
here. Whatever raises on the way, the guard turns into the contract's JSON
500 and exactly one finalize.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from twisted_gw.config.interfaces import IConfigStore
from twisted_gw.errors import (
    GatewayError,
    internal_error,
    invalid_url,
    method_not_allowed,
    not_found,
    request_too_large,
)
from twisted_gw.formats import messages as messages_format
from twisted_gw.formats import responses as responses_format
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.manager import HookManager
from twisted_gw.jsonutil import dumps
from twisted_gw.providers.interfaces import IProvider
from twisted_gw.proxy.auth import authenticate
from twisted_gw.proxy.body import CHAT_FIELDS, EMBEDDINGS_FIELDS, parse_body
from twisted_gw.proxy.exchange import Exchange, prepare_json, write_json
from twisted_gw.proxy.history import ResponseHistory
from twisted_gw.proxy.routing import Router
from twisted_gw.proxy.wire import (
    CHAT_WIRE,
    MESSAGES_ERRORS,
    CountTokensWire,
    MessagesWire,
    ResponsesWire,
    Wire,
)
from twisted_gw.site import FixedRouteResource, routes

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from twisted_gw.observability.tracing import Tracing

log = Logger()

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")}


def _anthropic_headers(request: Request) -> dict[bytes, list[bytes]]:
    """The headers a native Messages request passes on (Claude Code sets
    ``anthropic-beta``; the SDKs ``anthropic-version``)."""
    headers = request.requestHeaders
    return {
        name: headers.getRawHeaders(name)
        for name in (b"anthropic-beta", b"anthropic-version")
        if headers.hasHeader(name)
    }


class ProxyApp:
    """The OpenAI-compatible API on the proxy listener."""

    app = routes()  # no redirects, ever (see twisted_gw.site.routes)

    def __init__(
        self,
        store: IConfigStore,
        hooks: HookManager,
        providers: Mapping[str, IProvider],
        reactor: IReactorTime,
        upstream_timeout: float = 600.0,
        max_body_bytes: int = 32 * 1024 * 1024,
        router: Router | None = None,
        history: ResponseHistory | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        #: CONTRACT 5.3: None when tracing is off (then a request costs one test of it)
        self.tracing = tracing
        #: the Responses API's earlier turns (CONTRACT-NEXT 3.4), bounded, per node
        self.history = history if history is not None else ResponseHistory(reactor)
        #: this node's view of every deployment (CONTRACT 5.1: cooldowns are per node)
        self.router = router if router is not None else Router(reactor)
        self.hooks = hooks
        self.providers = providers
        self.reactor = reactor
        self.upstream_timeout = upstream_timeout
        self.max_body_bytes = max_body_bytes
        self.started = int(reactor.seconds())
        self._ids = itertools.count(1)
        #: requests not finished yet, so shutdown can end them while their
        #: finalize still reaches the limiter
        self._live: set[Request] = set()
        self._id_prefix = os.urandom(4).hex()

    def resource(self) -> FixedRouteResource:
        """The listener's resource: the routes below, every one of a fixed
        path, found without werkzeug (see FixedRouteResource)."""
        return FixedRouteResource(self.app)

    # -- routes --------------------------------------------------------------

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: Request) -> defer.Deferred | None:
        """Also the admin listener's playground (injected there as the chat handler)."""
        return self._model_call(request, "/v1/chat/completions", CHAT_FIELDS)

    @app.route("/v1/embeddings", methods=["POST"])
    def embeddings(self, request: Request) -> defer.Deferred | None:
        return self._model_call(request, "/v1/embeddings", EMBEDDINGS_FIELDS)

    @app.route("/v1/messages", methods=["POST"])
    def messages(self, request: Request) -> defer.Deferred | None:
        """Anthropic's Messages API (CONTRACT-NEXT 2), run as a chat completion."""
        ctx = self._context(request, "/v1/messages")
        return self._guarded(request, ctx, self._translated, MESSAGES_ERRORS, self._messages_body)

    @app.route("/v1/messages/count_tokens", methods=["POST"])
    def count_tokens(self, request: Request) -> defer.Deferred | None:
        """A Messages request's input tokens **[ours]**: Anthropic's count, or an estimate."""
        ctx = self._context(request, "/v1/messages/count_tokens")
        return self._guarded(request, ctx, self._translated, MESSAGES_ERRORS, self._count_body)

    @app.route("/v1/responses", methods=["POST"])
    def responses(self, request: Request) -> defer.Deferred | None:
        """OpenAI's Responses API (CONTRACT-NEXT 3), run as a chat completion."""
        ctx = self._context(request, "/v1/responses")
        return self._guarded(request, ctx, self._translated, CHAT_WIRE, self._responses_body)

    @app.route("/v1/models", methods=["GET"])
    def models(self, request: Request) -> None:
        ctx = self._context(request, "/v1/models")
        return self._guarded(request, ctx, self._models)

    def _models(self, request: Request, ctx: RequestContext) -> None:
        try:
            self._authenticate(request, ctx)
        except GatewayError as e:
            return self._answer(request, ctx, error=e)
        by_name = ctx.snapshot.models_by_name
        data = [
            {"id": name, "object": "model", "created": self.started, "owned_by": "apisix"}
            for name in sorted(ctx.api_key.allowed_models)
            if name in by_name
        ]
        return self._answer(request, ctx, body=dumps({"object": "list", "data": data}))

    @app.handle_errors(NotFound, MethodNotAllowed, RequestRedirect)
    def unmatched(self, request: Request, failure: Failure) -> bytes:
        """Unknown path 404 / wrong method 405, but only after auth (CONTRACT 4.1).
        A path werkzeug would redirect is unknown too (see ``app`` above).

        Klein writes and finishes what an error handler returns, so this one
        returns the body instead of writing it."""
        ctx = self._context(request, "-")
        try:
            self._authenticate(request, ctx)
            if getattr(request, "url_undecodable", False):
                error = invalid_url()  # routed nowhere by twisted_gw.site
            elif failure.check(MethodNotAllowed):
                error = method_not_allowed()
            else:
                error = not_found()
        except GatewayError as e:
            error = e
        try:
            body = prepare_json(request, ctx, None, error)
        finally:
            self.hooks.finalize(ctx, error.reason)
        return body

    # -- a model call ------------------------------------------------------------

    def _model_call(self, request: Request, endpoint: str, fields: dict) -> defer.Deferred | None:
        ctx = self._context(request, endpoint)
        return self._guarded(request, ctx, self._exchange, fields)

    def _exchange(
        self, request: Request, ctx: RequestContext, fields: dict
    ) -> defer.Deferred | None:
        """Read a chat or embeddings request and hand it to an Exchange."""

        def read(doc: dict, _: Request) -> tuple[dict, Wire]:
            return doc, CHAT_WIRE

        return self._read(request, ctx, CHAT_WIRE, read, fields)

    def _translated(
        self,
        request: Request,
        ctx: RequestContext,
        wire: Wire,
        translate: Callable[[dict, Request], tuple[dict, Wire]],
    ) -> defer.Deferred | None:
        """Read a request of another API: its translation to chat, refused in
        that API's shape (``wire``) when it cannot be made."""
        return self._read(request, ctx, wire, translate, {})

    def _read(
        self,
        request: Request,
        ctx: RequestContext,
        wire: Wire,
        translate: Callable[[dict, Request], tuple[dict, Wire]],
        fields: dict,
    ) -> defer.Deferred | None:
        """Auth, the body (``fields`` required), its chat form, then an Exchange."""
        try:
            self._authenticate(request, ctx)
            if getattr(request, "body_too_large", False):
                raise request_too_large(self.max_body_bytes)
            doc = parse_body(request.content.read(), fields)
            ctx.model_name = doc.get("model") if isinstance(doc.get("model"), str) else None
            body, wire = translate(doc, request)
        except GatewayError as e:
            return self._answer(request, ctx, error=e, wire=wire)
        ctx.body = body
        ctx.model_name = body["model"]
        # a chat asks for a stream; embeddings never stream
        ctx.stream = fields is not EMBEDDINGS_FIELDS and body.get("stream") is True
        exchange = Exchange(
            request,
            ctx,
            self.hooks,
            self.providers,
            self.reactor,
            self.upstream_timeout,
            self.router,
            wire,
        )
        return exchange.start()

    @staticmethod
    def _messages_body(doc: dict, request: Request) -> tuple[dict, Wire]:
        """The typed checks at once; the chat bridge's own refusals apply only
        to a deployment reached through chat (an anthropic one gets the
        request as it came: CONTRACT-NEXT 2.1 **[ours]**)."""
        messages_format.validate_request(doc, translating=False)
        try:
            chat, refusal = messages_format.to_chat(doc), None
        except GatewayError as e:
            chat, refusal = None, e
        passed = _anthropic_headers(request)
        body = chat if chat is not None else {"model": doc["model"], "stream": doc.get("stream")}
        return body, MessagesWire(doc, passed, chat, refusal)

    @staticmethod
    def _count_body(doc: dict, request: Request) -> tuple[dict, Wire]:
        """A count_tokens body: a Messages request without ``max_tokens``."""
        messages_format.validate_request({"max_tokens": 1, **doc}, translating=False)
        return {"model": doc["model"]}, CountTokensWire(doc, _anthropic_headers(request))

    def _responses_body(self, doc: dict, request: Request) -> tuple[dict, Wire]:
        chat = responses_format.to_chat(doc, [])  # refused here if malformed; history later
        return chat, ResponsesWire(self.history, doc)

    # -- plumbing ---------------------------------------------------------------

    def in_flight(self) -> int:
        """Requests received whose response is not finished yet."""
        return len(self._live)

    def abort_in_flight(self, grace: float = 2.0) -> defer.Deferred:
        """Drop the connection of every request still in flight (shutdown).

        Each one then ends as ``client_gone``: its upstream call is cancelled
        and its finalize runs (permits back, tokens spent, one log line). The
        Deferred fires once they all have, or after ``grace`` seconds."""
        live, self._live = list(self._live), set()
        ended = []
        for request in live:
            channel = getattr(request, "channel", None)
            transport = getattr(channel, "transport", None)
            if transport is not None:
                # registered last, so it fires after the hooks' finalize ran
                ended.append(request.notifyFinish())
                transport.abortConnection()
        if not ended:
            return defer.succeed(0)
        d = defer.DeferredList(ended, consumeErrors=True)
        d.addTimeout(grace, self.reactor)
        d.addBoth(lambda _: len(ended))
        return d

    def _context(self, request: Request, endpoint: str) -> RequestContext:
        client = request.getClientAddress()
        ctx = RequestContext(
            request_id=f"{self._id_prefix}-{next(self._ids)}",
            started=self.reactor.seconds(),
            # any other method is "OTHER": a client must not mint metric series
            method=_METHODS.get(request.method, "OTHER"),
            path=request.path.decode("utf-8", "replace"),
            endpoint=endpoint,
            client=getattr(client, "host", "-"),
            snapshot=self.store.snapshot,  # held from here to the end
        )
        tracing = self.tracing
        if tracing is not None:
            ctx.trace = tracing.begin(request, ctx)
        if request not in self._live:
            self._live.add(request)
            request.notifyFinish().addBoth(self._over, request, ctx)
        return ctx

    @staticmethod
    def _authenticate(request: Request, ctx: RequestContext) -> None:
        headers = request.requestHeaders
        ctx.api_key = authenticate(
            ctx.snapshot,
            headers.getRawHeaders(b"authorization"),
            headers.getRawHeaders(b"x-api-key"),
        )

    def _over(self, result: object, request: Request, ctx: RequestContext) -> None:
        """The response is finished or the connection is lost, whichever first."""
        self._live.discard(request)
        if isinstance(result, Failure):
            ctx.client_gone = True  # nothing may be written to it from now on

    def _answer(
        self,
        request: Request,
        ctx: RequestContext,
        body: bytes | None = None,
        error: GatewayError | None = None,
        wire: Wire = CHAT_WIRE,
    ) -> None:
        """A whole JSON answer of a route without an upstream call, then finalize."""
        if ctx.client_gone:
            ctx.status = ctx.status or 499
            self.hooks.finalize(ctx, "client_gone")
            return
        write_json(request, ctx, body, error, wire)
        ctx.finished_at = self.reactor.seconds()
        self.hooks.finalize(ctx, error.reason if error is not None else "ok")

    def _guarded(
        self, request: Request, ctx: RequestContext, work: Callable[..., Any], *args: object
    ) -> Any:
        """Run ``work``; whatever it raises, now or in its Deferred, ends the
        request in the contract's JSON 500 and exactly one finalize, instead
        of Klein's HTML page, no log line and a permit never given back."""
        try:
            result = work(request, ctx, *args)
        except Exception:  # noqa: BLE001 - ends the request, logged in _crashed
            return self._crashed(Failure(), request, ctx)
        if isinstance(result, defer.Deferred):
            result.addErrback(self._crashed, request, ctx)
        return result

    def _crashed(self, failure: Failure, request: Request, ctx: RequestContext) -> None:
        """The last resort for a failure nothing else handled (see _guarded)."""
        reason = "client_gone" if ctx.client_gone else "upstream_error"
        if failure.check(defer.CancelledError):
            reason = "client_gone"
        else:
            log.failure("request {rid}: unexpected error", failure, rid=ctx.request_id)
        try:
            if reason == "client_gone" or request.finished:
                pass
            elif not request.startedWriting:
                write_json(request, ctx, None, internal_error())
            else:  # half a response is out: the client must see it cut
                ctx.status = ctx.status or 500
                request.loseConnection()
        except Exception:  # noqa: BLE001 - the connection is beyond saving; still finalize
            log.failure("request {rid}: could not end the response", rid=ctx.request_id)
        if reason == "client_gone":
            ctx.status = ctx.status or 499
        if ctx.finished_at is None:
            ctx.finished_at = self.reactor.seconds()
        self.hooks.finalize(ctx, reason)
