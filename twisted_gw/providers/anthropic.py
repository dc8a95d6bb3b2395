"""The ``anthropic`` provider: OpenAI chat requests on Anthropic's native
Messages API (``POST {api_base}/messages``, ``x-api-key``,
``anthropic-version: 2023-06-01``).

Unlike the openai family it cannot relay bytes as they came: the request and
the answer are translated (:mod:`~twisted_gw.providers.anthropic_translate`),
and so is the stream, event by event
(:mod:`~twisted_gw.providers.anthropic_stream`), through a source that the
same StreamRelay drives, so CONTRACT 4.3 holds here too. Chat only:
embeddings are refused with 400 ``unsupported_endpoint`` by the
validate-model hook.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from twisted_gw._outbound import discard
from twisted_gw.config.entities import Model
from twisted_gw.errors import GatewayError, provider_error, unsupported_endpoint
from twisted_gw.jsonutil import dumps
from twisted_gw.providers.anthropic_stream import AnthropicStreamTranslator
from twisted_gw.providers.anthropic_translate import from_anthropic_response, to_anthropic_request
from twisted_gw.providers.catalog import default_base
from twisted_gw.providers.errors import map_upstream_status, retry_after_of
from twisted_gw.providers.http import UpstreamClient, media_type
from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS, IProvider, ProviderResult
from twisted_gw.providers.openai import decode_json_object, open_stream
from twisted_gw.providers.sources import AnthropicNativeDialect, HTTPSSESource
from twisted_gw.providers.translated import TranslatedSSESource

DEFAULT_BASE = default_base("anthropic")
API_VERSION = b"2023-06-01"

_JSON = [b"application/json"]
_SSE = [b"text/event-stream"]


@implementer(IProvider)
class AnthropicProvider:
    """Anthropic's Messages API behind the OpenAI chat interface."""

    name = "anthropic"
    endpoints = frozenset({CHAT})

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    def url(self, model: Model) -> str:
        url = model.endpoint_urls.get(CHAT)  # a provider entity's (CONTRACT-NEXT 1.1)
        if url is not None:
            return url
        base = (model.api_base or DEFAULT_BASE).rstrip("/")
        return f"{base}/messages"

    def headers(self, model: Model, accept: list[bytes] = _JSON) -> dict[bytes, list[bytes]]:
        return {
            b"x-api-key": [(model.api_key or "").encode()],
            b"anthropic-version": [API_VERSION],
            b"content-type": _JSON,
            b"accept": accept,
        }

    def chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        try:
            request = to_anthropic_request(body, model.upstream_model)
        except GatewayError:
            return defer.fail()
        request.pop("stream", None)
        d = self._client.post(self.url(model), self.headers(model), dumps(request))
        d.addCallback(self._chat_result, model, int(reactor.seconds()))
        return d

    def stream_chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        """Open a stream; fires with a source of OpenAI chunks once Anthropic
        answered 2xx (an error status fails with the 4.1 GatewayError)."""
        try:
            request = to_anthropic_request(body, model.upstream_model)
        except GatewayError:
            return defer.fail()
        request["stream"] = True
        headers = self.headers(model, _SSE)
        d = self._client.post_streaming(self.url(model), headers, dumps(request))
        d.addCallback(self._stream_opened, model, int(reactor.seconds()))
        return d

    def embeddings(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        return defer.fail(unsupported_endpoint(model.name, EMBEDDINGS))

    # -- native: a Messages client's request as it came (CONTRACT-NEXT 2.2) -----------------

    def native_messages(
        self, model: Model, doc: dict, client_headers: dict[bytes, list[bytes]], stream: bool
    ) -> defer.Deferred:
        """POST the client's own Messages request, only ``model`` replaced
        (unknown fields and ``cache_control`` kept) with its ``anthropic-beta``
        and ``anthropic-version``; fires with a ProviderResult of the body as
        it came (usage in chat's terms, for the limits and the log) or, for a
        stream, a source of the upstream's events as they came."""
        request = dict(doc)
        request["model"] = model.upstream_model
        headers = self.headers(model, _SSE if stream else _JSON)
        headers.update(client_headers)
        url = self.url(model)
        if not stream:
            d = self._client.post(url, headers, dumps(request))
            return d.addCallback(self._native_result, model)
        d = self._client.post_streaming(url, headers, dumps(request))
        return d.addCallback(self._native_opened, model)

    def count_tokens(
        self, model: Model, doc: dict, client_headers: dict[bytes, list[bytes]]
    ) -> defer.Deferred:
        """Anthropic's own ``/v1/messages/count_tokens`` for the client's request
        (only ``model`` replaced); fires with a ProviderResult of its answer."""
        request = dict(doc)
        request["model"] = model.upstream_model
        headers = self.headers(model)
        headers.update(client_headers)
        d = self._client.post(self.url(model) + "/count_tokens", headers, dumps(request))
        return d.addCallback(self._counted, model)

    def _counted(self, result: tuple, model: Model) -> ProviderResult:
        self._check(result, model)
        return ProviderResult(result[2], None)

    def _native_result(self, result: tuple, model: Model) -> ProviderResult:
        doc = self._check(result, model)
        return ProviderResult(result[2], native_usage(doc.get("usage")))

    def _native_opened(self, response: Any, model: Model) -> Any:
        if 200 <= response.code < 300:
            if media_type(response) not in ("", "text/event-stream"):
                discard(response, self._client.reactor)
                raise provider_error("upstream answered a streaming request without a stream")
            return HTTPSSESource(
                response,
                self._client.reactor,
                max_event_bytes=self._client.max_event_bytes,
                dialect=AnthropicNativeDialect(),
            )
        d = self._client.read(response)
        d.addCallback(self._check, model)
        return d

    def _stream_opened(self, response: Any, model: Model, created: int) -> Any:
        if 200 <= response.code < 300:

            def sse_source(response: Any) -> TranslatedSSESource:
                translator = AnthropicStreamTranslator(
                    created, model.upstream_model, secrets=(model.api_key,)
                )
                return TranslatedSSESource(
                    response,
                    translator,
                    max_event_bytes=self._client.max_event_bytes,
                    reactor=self._client.reactor,
                )

            return open_stream(
                self._client,
                response,
                sse_source,
                lambda doc: from_anthropic_response(doc, created),
            )
        d = self._client.read(response)  # an error answer: read it whole, map it
        d.addCallback(self._check, model)
        return d

    @staticmethod
    def _check(result: tuple, model: Model) -> dict:
        status, headers, body = result
        if not 200 <= status < 300:
            raise map_upstream_status(status, body, (model.api_key,), retry_after_of(headers))
        return decode_json_object(body, reserialized=True)

    def _chat_result(self, result: tuple, model: Model, created: int) -> ProviderResult:
        doc = from_anthropic_response(self._check(result, model), created)
        return ProviderResult(dumps(doc), doc["usage"])


def native_usage(usage: Any, counted: dict | None = None) -> dict | None:
    """An Anthropic ``usage`` object in chat's terms (CONTRACT-NEXT 2.5: the
    prompt is input + cache creation + cache read tokens); ``counted``, the
    counts so far of a stream, is updated with what this object says."""
    if not isinstance(usage, dict):
        return counted
    counts = dict(counted or {})
    for name in (
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    ):
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            counts[name] = value
    prompt = sum(
        counts.get(n, 0)
        for n in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = counts.get("output_tokens", 0)
    return {
        **counts,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
