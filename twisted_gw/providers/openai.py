"""The OpenAI-compatible family: openai, deepseek, gemini and any ``api_base``.

All of them speak OpenAI's wire format with ``Authorization: Bearer``; they
differ only in the default base URL and in which endpoints they serve. The
request is the client's JSON with ``model`` replaced (every other field goes
through untouched); the response body is relayed as it came.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from twisted_gw._outbound import discard
from twisted_gw.config.entities import Model
from twisted_gw.errors import provider_error
from twisted_gw.jsonutil import dumps, loads, read
from twisted_gw.providers.catalog import default_base
from twisted_gw.providers.completion import chunks_from_completion
from twisted_gw.providers.errors import map_upstream_status, retry_after_of
from twisted_gw.providers.http import UpstreamClient, media_type
from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS, IProvider, ProviderResult
from twisted_gw.providers.sources import HTTPSSESource, ListSource

_JSON = [b"application/json"]
_SSE = [b"text/event-stream"]


def open_stream(
    client: UpstreamClient,
    response: Any,
    sse_source: Any,
    completion: Any,
) -> Any:
    """The chunk source for a 2xx answer to a streaming request, by its type.

    ``text/event-stream`` (or no type at all): ``sse_source(response)``.
    ``application/json``: an upstream that ignored ``stream``; its whole
    answer is read, turned into an OpenAI chat completion by
    ``completion(doc)``, and relayed as a stream of that completion's chunks
    (so the client gets its answer and the tokens are counted). Anything
    else: a 502 that names the type, never an empty stream."""
    kind = media_type(response)
    if kind in ("", "text/event-stream"):
        return sse_source(response)
    if kind == "application/json" or kind.endswith("+json"):
        d = client.read(response)

        def relayed(result: tuple) -> ListSource:
            chunks = chunks_from_completion(completion(decode_json_object(result[2], True)))
            if chunks is None:
                raise provider_error(
                    "upstream answered a streaming request with JSON that is not a chat completion"
                )
            return ListSource([dumps(c) for c in chunks], client.reactor)

        return d.addCallback(relayed)
    discard(response, client.reactor)
    raise provider_error(
        f"upstream answered a streaming request with content type {kind[:60]!r}, "
        "not text/event-stream"
    )


def decode_json_object(body: bytes, reserialized: bool = False) -> dict:
    """Parse an upstream 2xx body; anything but a JSON object is a 502.

    A body relayed as it came is only read (the fast parser); one that is
    re-serialized goes through the exact one."""
    try:
        doc = loads(body) if reserialized else read(body)
    except ValueError:
        raise provider_error("invalid JSON in upstream response") from None
    if not isinstance(doc, dict):
        raise provider_error("invalid JSON in upstream response")
    return doc


@implementer(IProvider)
class OpenAICompatibleProvider:
    """One OpenAI-compatible upstream family, over the shared UpstreamClient."""

    #: ask a stream for its usage chunk (CONTRACT 4.3: so tokens can be counted)
    include_usage = True

    def __init__(
        self,
        name: str,
        client: UpstreamClient,
        endpoints: frozenset = frozenset({CHAT, EMBEDDINGS}),
    ) -> None:
        self.name = name
        self.endpoints = endpoints
        self.default_base = default_base(name)  # the catalog's, openai's if unknown
        self._client = client

    def url(self, model: Model, endpoint: str) -> str:
        base = (model.api_base or self.default_base).rstrip("/")
        return f"{base}/{endpoint}"

    def headers(self, model: Model) -> dict[bytes, list[bytes]]:
        return {
            b"authorization": [b"Bearer " + (model.api_key or "").encode()],
            b"content-type": _JSON,
            b"accept": _JSON,
        }

    def upstream_body(self, model: Model, body: dict, endpoint: str) -> dict:
        """The request as the upstream gets it: the client's, ``model``
        replaced (a provider type may change more: see providers.typed)."""
        upstream = dict(body)
        upstream["model"] = model.upstream_model
        return upstream

    def chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        upstream = self.upstream_body(model, body, CHAT)
        d = self._client.post(self.url(model, CHAT), self.headers(model), dumps(upstream))
        d.addCallback(self._chat_result, model)
        return d

    def embeddings(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        upstream = self.upstream_body(model, body, EMBEDDINGS)
        d = self._client.post(self.url(model, EMBEDDINGS), self.headers(model), dumps(upstream))
        d.addCallback(self._embeddings_result, model)
        return d

    def stream_chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        """Open a streaming chat; fires with a chunk source once the upstream
        answered 200 (an error status fails with the 4.1 GatewayError)."""
        upstream = self.upstream_body(model, body, CHAT)
        if self.include_usage:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True  # CONTRACT 4.3: so tokens can be counted
            upstream["stream_options"] = options
        headers = self.headers(model)
        headers[b"accept"] = _SSE
        d = self._client.post_streaming(self.url(model, CHAT), headers, dumps(upstream))
        d.addCallback(self._stream_opened, model)
        return d

    def _stream_opened(self, response: Any, model: Model) -> Any:
        if 200 <= response.code < 300:
            return open_stream(self._client, response, self._sse_source, _as_is)
        d = self._client.read(response)  # an error answer: read it whole, map it
        d.addCallback(self._check, model)
        return d

    def _sse_source(self, response: Any) -> HTTPSSESource:
        client = self._client
        return HTTPSSESource(response, client.reactor, max_event_bytes=client.max_event_bytes)

    @staticmethod
    def _check(result: tuple, model: Model, reserialized: bool = False) -> dict:
        status, headers, body = result
        if not 200 <= status < 300:
            raise map_upstream_status(status, body, (model.api_key,), retry_after_of(headers))
        return decode_json_object(body, reserialized)

    def _chat_result(self, result: tuple, model: Model) -> ProviderResult:
        doc = self._check(result, model)
        usage = doc.get("usage")
        return ProviderResult(result[2], usage if isinstance(usage, dict) else None)

    def _embeddings_result(self, result: tuple, model: Model) -> ProviderResult:
        doc = self._check(result, model, reserialized=True)
        doc["model"] = model.name  # CONTRACT 4.2: the client's model name
        usage = doc.get("usage")
        return ProviderResult(dumps(doc), usage if isinstance(usage, dict) else None)


def _as_is(doc: dict) -> dict:
    return doc
