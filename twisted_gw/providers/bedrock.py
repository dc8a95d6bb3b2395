"""The ``bedrock`` provider type: OpenAI chat requests on Amazon Bedrock's
Converse API (CONTRACT-NEXT 1.1).

``POST <endpoint>/model/<model>/converse`` for a whole answer and
``.../converse-stream`` for a stream, ``<model>`` percent-encoded (``/`` and
``:`` included), ``<endpoint>`` the provider's or
``https://bedrock-runtime.<region>.amazonaws.com``. Every request is signed
with AWS Signature Version 4 (service ``bedrock``, the provider's region,
its session token when it has one) by botocore's own signer, over the exact
bytes sent, when it is sent. The request and the answer are translated by
:mod:`~twisted_gw.providers.bedrock_translate`; a stream's body is AWS's
binary event stream (``application/vnd.amazon.eventstream``), decoded frame
by frame by botocore's ``EventStreamBuffer`` (prelude and message CRCs
checked) and translated event by event into OpenAI chunks, read by the same
body machinery as every SSE upstream
(:class:`~twisted_gw.providers.sources.HTTPSSESource`): backpressure, cancel,
the drain after the last event and :func:`~twisted_gw.providers.sources.stream_end`'s
rules are the same. Chat only: embeddings are refused with 400
``unsupported_endpoint``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw._outbound import discard
from twisted_gw.config.entities import Model
from twisted_gw.errors import GatewayError, provider_error, unsupported_endpoint
from twisted_gw.jsonutil import dumps
from twisted_gw.observability.logsafe import escape
from twisted_gw.providers.bedrock_translate import (
    ConverseStreamTranslator,
    from_converse_response,
    to_converse_request,
)
from twisted_gw.providers.errors import map_upstream_status, retry_after_of
from twisted_gw.providers.http import UpstreamClient, media_type
from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS, IProvider, ProviderResult
from twisted_gw.providers.openai import decode_json_object, open_stream
from twisted_gw.providers.sources import HTTPSSESource, SSEBodyProtocol
from twisted_gw.providers.types import PREFIX, STREAM_URL

log = Logger()

#: the SigV4 service name of bedrock-runtime (its endpoint prefix differs)
SERVICE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"

_JSON = "application/json"


def _host(url: str) -> str:
    """The ``Host`` header of ``url``: its netloc without credentials or a
    default port (what an HTTP client sends, and what is signed)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    default = {"http": ":80", "https": ":443"}.get(parts.scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


def signed_headers(
    url: str, body: bytes, config: Mapping[str, str], accept: str = _JSON
) -> dict[bytes, list[bytes]]:
    """The headers of one Bedrock request, signed with SigV4 over exactly
    ``body`` at this moment: ``host``, ``content-type``, ``accept``,
    ``x-amz-date``, ``x-amz-security-token`` (with a session token) and
    ``authorization``. The ``host`` is sent as signed, so the HTTP client
    cannot send another."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"host": _host(url), "content-type": _JSON, "accept": accept},
    )
    credentials = Credentials(
        config.get("access_key_id", ""),
        config.get("secret_access_key", ""),
        config.get("session_token") or None,
    )
    SigV4Auth(credentials, SERVICE, config.get("region", "")).add_auth(request)
    return {
        name.lower().encode("latin-1"): [value.encode("utf-8")]
        for name, value in request.headers.items()
    }


def _response_id(headers: Any) -> str:
    """An OpenAI id for Converse's answer (it has none): AWS's request id."""
    values = headers.getRawHeaders(b"x-amzn-requestid")
    if values:
        return "chatcmpl-" + values[0].decode("latin-1")[:128]
    return "chatcmpl-" + uuid.uuid4().hex


def _secrets(model: Model) -> tuple[str | None, ...]:
    config = model.provider_config
    return (config.get("secret_access_key"), config.get("session_token"))


@implementer(IProvider)
class BedrockProvider:
    """Bedrock's Converse API behind the OpenAI chat interface."""

    name = PREFIX + "bedrock"
    endpoints = frozenset({CHAT})

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    def _post(self, model: Model, body: dict, url_key: str, accept: str, stream: bool) -> Any:
        request = to_converse_request(body)  # a GatewayError: the client's 400
        url = model.endpoint_urls[url_key]
        payload = dumps(request)
        headers = signed_headers(url, payload, model.provider_config, accept)
        if stream:
            return self._client.post_streaming(url, headers, payload)
        return self._client.post(url, headers, payload)

    def chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        try:
            d = self._post(model, body, CHAT, _JSON, stream=False)
        except GatewayError:
            return defer.fail()
        d.addCallback(self._chat_result, model, int(reactor.seconds()))
        return d

    def stream_chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        """Open a stream; fires with a source of OpenAI chunks once Bedrock
        answered 2xx (an error status fails with the 4.1 GatewayError)."""
        try:
            d = self._post(model, body, STREAM_URL, EVENT_STREAM, stream=True)
        except GatewayError:
            return defer.fail()
        d.addCallback(self._stream_opened, model, int(reactor.seconds()))
        return d

    def embeddings(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        return defer.fail(unsupported_endpoint(model.name, EMBEDDINGS))

    # -- answers ---------------------------------------------------------------

    @staticmethod
    def _check(result: tuple, model: Model) -> dict:
        status, headers, body = result
        if not 200 <= status < 300:  # Bedrock's error body is {"message": ...}
            raise map_upstream_status(status, body, _secrets(model), retry_after_of(headers))
        return decode_json_object(body, reserialized=True)

    def _chat_result(self, result: tuple, model: Model, created: int) -> ProviderResult:
        doc = self._check(result, model)
        answer = from_converse_response(doc, created, _response_id(result[1]), model.upstream_model)
        return ProviderResult(dumps(answer), answer["usage"])

    def _stream_opened(self, response: Any, model: Model, created: int) -> Any:
        if not 200 <= response.code < 300:
            d = self._client.read(response)  # an error answer: read it whole, map it
            d.addCallback(self._check, model)
            return d
        response_id = _response_id(response.headers)
        kind = media_type(response)
        if kind in ("", EVENT_STREAM):
            translator = ConverseStreamTranslator(
                created, response_id, model.upstream_model, secrets=_secrets(model)
            )
            return EventStreamSource(
                response,
                self._client.reactor,
                max_event_bytes=self._client.max_event_bytes,
                dialect=ConverseDialect(translator),
            )
        if kind == _JSON or kind.endswith("+json"):  # a whole answer: relayed as a stream
            return open_stream(
                self._client,
                response,
                None,  # never asked for: JSON is not an event stream
                lambda doc: from_converse_response(doc, created, response_id, model.upstream_model),
            )
        discard(response, self._client.reactor)
        raise provider_error(
            f"upstream answered a streaming request with content type {kind[:60]!r}, "
            f"not {EVENT_STREAM}"
        )


# -- the event-stream body ---------------------------------------------------------------


class ConverseDialect:
    """A Converse stream as a dialect of the one body reader: each decoded
    event-stream message becomes its OpenAI chunks (JSON bytes)."""

    def __init__(self, translator: ConverseStreamTranslator) -> None:
        self.translator = translator

    @property
    def complete(self) -> bool:
        """``metadata`` followed ``messageStop``: nothing more is the stream's."""
        return self.translator.complete

    @property
    def requires_terminal(self) -> bool:
        """A body that ends after chunks but before ``messageStop`` was cut;
        one that ends after it (without ``metadata``) is whole."""
        return not self.translator.stopped

    def feed(self, message: EventStreamMessage) -> list[bytes]:
        return [dumps(c) for c in self.translator.feed(message.headers, message.payload)]


class _EventStreamBodyProtocol(SSEBodyProtocol):
    """The SSE body protocol with AWS's binary frames in place of SSE lines:
    each read is added to an ``EventStreamBuffer`` and the whole messages in
    it are delivered; what the reader's bound (``max_event_bytes``) or the
    frames' own checks refuse cuts the stream as an oversized SSE event does."""

    def __init__(self, source: HTTPSSESource) -> None:
        super().__init__(source)
        self.buffer = EventStreamBuffer()
        #: bytes received and not yet part of a whole message
        self.pending = 0

    def dataReceived(self, data: bytes) -> None:
        source = self.source
        if source.closed:
            return  # cancelled, or draining after the last event
        self.buffer.add_data(data)
        self.pending += len(data)
        messages: list[EventStreamMessage] = []
        error = None
        try:
            for message in self.buffer:
                self.pending -= message.prelude.total_length
                messages.append(message)
        except ParserError as e:  # a bad CRC or length: nothing after it can be read
            error = f"malformed upstream event stream: {e}"
        if error is None and self.pending > source.max_event_bytes:
            error = f"upstream event exceeds {source.max_event_bytes} bytes"
        self.deliver(messages)  # what came before it still counts
        if source.closed:
            return
        source.sink.flush()
        if error is not None:
            log.warn("upstream stream cut: {error}", error=escape(error))
            source.fail(error)


class EventStreamSource(HTTPSSESource):
    """An upstream ``application/vnd.amazon.eventstream`` body as a source
    of OpenAI chunks (the SSE source's machinery, another framing)."""

    body_protocol = _EventStreamBodyProtocol
