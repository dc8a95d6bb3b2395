"""What a client's API looks like on the wire: chat completions, Anthropic's
Messages, OpenAI's Responses (CONTRACT 4, CONTRACT-NEXT 2 and 3).

The Exchange always runs a chat completion (every provider speaks it, the
limits, retries and fallbacks apply to it alike); a :class:`Wire` is what the
client asked in and is answered in. It turns the request into the chat body
(at the route, so malformed input is refused before anything else), may look
something up once the limits passed (the Responses history), turns a whole
chat answer into its own, and gives each stream a :class:`Framer` that writes
its events from the chat chunks. The chat wire itself translates nothing: it
has no framer, and the relay keeps its fast path of writing the upstream's
bytes as they came.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from twisted_gw.config.entities import Model
from twisted_gw.errors import GatewayError
from twisted_gw.formats import messages, responses
from twisted_gw.hooks.context import RequestContext
from twisted_gw.jsonutil import dumps, read
from twisted_gw.providers.anthropic import native_usage
from twisted_gw.providers.interfaces import EMBEDDINGS, IProvider, ProviderResult
from twisted_gw.proxy.history import RedisResponseHistory, ResponseHistory
from twisted_gw.tokens import prompt_tokens


class Framer(Protocol):
    """Writes one stream's events from the chat chunks (see the relay)."""

    #: the framer ended the stream itself (an error event): nothing more is relayed
    done: bool

    def chunk(self, doc: dict, data: bytes) -> bytes:
        """The frames of one chunk (maybe none): ``doc`` parsed, ``data`` as it came."""

    def end(self, clean: bool, detail: str) -> bytes:
        """The last frames: a clean end's, or a cut's (``detail`` says why)."""


class Wire:
    """Chat completions (CONTRACT 4): the chat body as it came, answers and
    streams as the upstream sent them, errors in OpenAI's shape."""

    name = "chat"

    def call(
        self, provider: IProvider, deployment: Model, ctx: RequestContext, reactor: IReactorTime
    ) -> defer.Deferred:
        """One attempt's upstream call (a chat, a stream or embeddings)."""
        if ctx.stream:
            call = provider.stream_chat
        elif ctx.endpoint.endswith(EMBEDDINGS):
            call = provider.embeddings
        else:
            call = provider.chat
        # maybeDeferred: a provider that raises (an api_base the URL library
        # refuses) is a 502 that finalizes, not a leaked permit
        return defer.maybeDeferred(call, deployment, ctx.body, reactor)

    def checked(self, ctx: RequestContext) -> defer.Deferred | None:
        """The request passed its limits; the last chance to refuse it (by
        raising, or failing the Deferred, with a GatewayError)."""
        return None

    def answer(self, ctx: RequestContext, body: bytes) -> bytes:
        """The client's body for a whole chat answer ``body``."""
        return body

    def framer(self, ctx: RequestContext) -> Framer | None:
        """This stream's framer; None: relay the chat chunks as they came."""
        return None

    def error_body(self, ctx: RequestContext, error: GatewayError) -> tuple[int, bytes]:
        """(status, body) of an error answer; every configured secret redacted."""
        return error.status, error.body(ctx.snapshot.redact(error.message))

    def stream_done(self, ctx: RequestContext) -> None:
        """A stream ended cleanly after its framer's last frames."""


CHAT_WIRE = Wire()


# -- Anthropic's Messages (CONTRACT-NEXT 2) -------------------------------------------------


def messages_error(ctx: RequestContext, error: GatewayError) -> GatewayError:
    """The 2.4 row of a failure the exchange met (its own checks, a limit, an
    upstream), or the error itself when it is already one. A missing or
    unknown key stays OpenAI's 401 (CONTRACT-NEXT 0)."""
    if isinstance(error, messages.MessagesError):
        return error
    code, outcome, model = error.code, error.outcome, ctx.model_name or ""
    if error.status == 401 and outcome is None:
        return error  # the proxy's auth: OpenAI's shape on every path
    if code == "model_not_found":
        return messages.map_error("model_not_found", model)
    if code == "model_access_forbidden":
        return messages.map_error("model_forbidden", model)
    if code == "request_timeout":
        return messages.map_error("timeout", model)
    if code in ("model_price_missing", "budget_exceeded"):  # issue 17's, in Anthropic's types
        kind = "permission_error" if error.status == 403 else "rate_limit_error"
        return messages.MessagesError(error.status, kind, error.message)
    if outcome is None and error.status == 429:  # the gateway's own limits
        return messages.map_error("rate_limited", model)
    if error.upstream_status is not None:
        return messages.map_error("upstream", model, error.upstream_status)
    if outcome == "connect":
        return messages.map_error("unavailable", model)
    if error.status == 502:  # an answer the gateway could not read or carry
        return messages.map_error("transform", model)
    if 400 <= error.status < 500:
        return messages.map_error("invalid", model)
    return messages.map_error("internal", model)


class _MessagesFramer:
    def __init__(self) -> None:
        self.stream = messages.ChatToMessagesStream()

    @property
    def done(self) -> bool:
        return self.stream.done

    def chunk(self, doc: dict, data: bytes) -> bytes:
        return b"".join(messages.frame(t, d) for t, d in self.stream.feed(doc))

    def end(self, clean: bool, detail: str) -> bytes:
        return b"".join(messages.frame(t, d) for t, d in self.stream.end(clean, detail))


_EVENT_NAME = re.compile(r"[a-z_]{1,64}")


class _NativeFramer:
    """An Anthropic upstream's events to a Messages client, as they came
    (each event's name is its data's ``type``, as in Anthropic's API); the
    usage of ``message_start`` and ``message_delta`` counted in chat's terms."""

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.done = False
        self._counts: dict | None = None
        self._last = ""

    def chunk(self, doc: dict, data: bytes) -> bytes:
        kind = doc.get("type")
        if not isinstance(kind, str) or not _EVENT_NAME.fullmatch(kind):
            kind = "message"  # never an upstream's text in an event line
        message = doc.get("message")
        usage = message.get("usage") if isinstance(message, dict) else doc.get("usage")
        if isinstance(usage, dict):
            self._counts = native_usage(usage, self._counts)
        if self._counts is not None:
            self.ctx.usage = self._counts
        self._last = kind
        if b"\n" in data:
            data = data.replace(b"\n", b"\ndata: ")
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def end(self, clean: bool, detail: str) -> bytes:
        if clean or self._last == "error":  # the upstream said it already
            return b""
        text = detail or "stream: the upstream stream ended early"
        return messages.frame(
            "error", {"type": "error", "error": {"type": "api_error", "message": text}}
        )


class MessagesWire(Wire):
    """``POST /v1/messages``, one per request: native to an anthropic
    deployment (the client's request and the upstream's answer as they
    came, CONTRACT-NEXT 2.2 **[ours]**: nothing dropped), through chat
    completions to any other (``chat`` is the translation, or None with the
    ``refusal`` the chat bridge gave: a 400 for that deployment only)."""

    name = "messages"

    def __init__(
        self,
        doc: dict,
        headers: dict[bytes, list[bytes]],
        chat: dict | None,
        refusal: GatewayError | None = None,
    ) -> None:
        self.doc = doc
        self.headers = headers
        self.chat = chat
        self.refusal = refusal
        #: the attempt under way is native
        self.native = False

    def call(
        self, provider: IProvider, deployment: Model, ctx: RequestContext, reactor: IReactorTime
    ) -> defer.Deferred:
        native = getattr(provider, "native_messages", None)
        self.native = native is not None
        if native is not None:
            return defer.maybeDeferred(native, deployment, self.doc, self.headers, ctx.stream)
        if self.chat is None:
            return defer.fail(self.refusal)
        return super().call(provider, deployment, ctx, reactor)

    def answer(self, ctx: RequestContext, body: bytes) -> bytes:
        if self.native:
            return body
        return dumps(messages.from_chat(read(body)))

    def framer(self, ctx: RequestContext) -> Framer:
        return _NativeFramer(ctx) if self.native else _MessagesFramer()

    def error_body(self, ctx: RequestContext, error: GatewayError) -> tuple[int, bytes]:
        error = messages_error(ctx, error)
        if not isinstance(error, messages.MessagesError):
            return super().error_body(ctx, error)
        return error.status, messages.error_body(error.type, error.message)


def estimate_tokens(doc: dict) -> int:
    """A Messages request's input tokens, estimated without a tokenizer
    (:func:`twisted_gw.tokens.prompt_tokens`: one token per 4 characters of
    its system, messages and tools, their JSON included, plus 4 per message).
    Good to a few tens of percent for English and code; for providers that
    cannot count."""
    return prompt_tokens(doc)


class CountTokensWire(MessagesWire):
    """``POST /v1/messages/count_tokens`` **[ours]** (AISIX has no such route):
    Anthropic's own count for an anthropic deployment, an estimate
    (:func:`estimate_tokens`, said so by ``"estimated": true``) for any other."""

    name = "count_tokens"

    def __init__(self, doc: dict, headers: dict[bytes, list[bytes]]) -> None:
        super().__init__(doc, headers, None)

    def call(
        self, provider: IProvider, deployment: Model, ctx: RequestContext, reactor: IReactorTime
    ) -> defer.Deferred:
        count = getattr(provider, "count_tokens", None)
        self.native = count is not None
        if count is not None:
            return defer.maybeDeferred(count, deployment, self.doc, self.headers)
        body = dumps({"input_tokens": estimate_tokens(self.doc), "estimated": True})
        return defer.succeed(ProviderResult(body, None))

    def answer(self, ctx: RequestContext, body: bytes) -> bytes:
        return body  # Anthropic's answer as it came, or the estimate


#: the Messages shape of a request refused before its wire was made (a bad body)
MESSAGES_ERRORS = MessagesWire({}, {}, None)


# -- OpenAI's Responses (CONTRACT-NEXT 3) ---------------------------------------------------


class _ResponsesFramer:
    def __init__(self, stream: responses.ChatToResponsesStream) -> None:
        self.stream = stream

    @property
    def done(self) -> bool:
        return self.stream.over and self.stream.completed is None

    def chunk(self, doc: dict, data: bytes) -> bytes:
        return b"".join(responses.frame(t, d) for t, d in self.stream.feed(doc))

    def end(self, clean: bool, detail: str) -> bytes:
        return b"".join(responses.frame(t, d) for t, d in self.stream.end(clean, detail))


def owner(ctx: RequestContext) -> str:
    """Who a stored response belongs to: its API key, as a digest (the same
    on every gateway, whatever store id the key has there; never the key)."""
    return hashlib.sha256(ctx.api_key.key.encode()).hexdigest()[:32]


class ResponsesWire(Wire):
    """``POST /v1/responses`` through chat completions, one per request: it
    holds the request, its response id and what the history store gets."""

    name = "responses"

    def __init__(self, history: ResponseHistory | RedisResponseHistory, doc: dict) -> None:
        self.history = history
        self.doc = doc
        self.response_id = responses.new_response_id()
        self._stream: responses.ChatToResponsesStream | None = None

    def checked(self, ctx: RequestContext) -> defer.Deferred | None:
        """CONTRACT-NEXT 3.4: the earlier turns of ``previous_response_id``,
        looked up once the limits passed; only the key that created a
        response may continue it **[ours]** (to any other it does not exist)."""
        previous = self.doc.get("previous_response_id")
        if previous is None:
            return None
        earlier = self.history.get(previous, owner(ctx))
        if isinstance(earlier, defer.Deferred):  # a shared store's round trip
            return earlier.addCallback(self._continue, ctx, previous)
        return self._continue(earlier, ctx, previous)

    def _continue(self, earlier: list[dict] | None, ctx: RequestContext, previous: str) -> None:
        if earlier is None:
            raise responses.ResponsesError(
                400,
                f"validation: previous_response_not_found: {previous}",
                "gateway_error",
                "invalid_request_error",
            )
        chat = responses.to_chat(self.doc, earlier)
        chat["model"] = ctx.body["model"]
        ctx.body = chat

    def answer(self, ctx: RequestContext, body: bytes) -> bytes:
        response = responses.from_chat(read(body), self.response_id, self.doc)
        self._store(ctx, response)
        return dumps(response)

    def framer(self, ctx: RequestContext) -> Framer:
        self._stream = responses.ChatToResponsesStream(self.response_id, self.doc)
        return _ResponsesFramer(self._stream)

    def stream_done(self, ctx: RequestContext) -> None:
        if self._stream is not None and self._stream.completed is not None:
            self._store(ctx, self._stream.completed)

    def _store(self, ctx: RequestContext, response: dict) -> None:
        if self.doc.get("store") is False:
            return
        kept = responses.history_messages(responses.input_messages(ctx.body, self.doc), response)
        self.history.put(self.response_id, owner(ctx), kept)
