"""The providers' side of the outbound stack: POST JSON to an upstream.

twisted.web's Agent over one shared persistent pool (built by
:mod:`twisted_gw._outbound`), made once at start-up. Per request it does as
little as possible: the request body is already bytes and is written in one
go, there are no redirects, no cookies and no response buffering, each
upstream URL is encoded once; answers are read with treq's collector. A whole answer is read with a size bound (``max_response_bytes``): an
upstream cannot make the gateway hold an unbounded body, and cancelling the
read closes the upstream connection. What can go wrong reaches the caller as
the contract's 502 GatewayError, or as a CancelledError when the caller
cancelled (a timeout, a client gone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import Request, _ensureValidURI
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from twisted_gw._outbound import (
    UPSTREAM_WORDS,
    BodyTooLarge,
    EndpointFactory,
    connection_pool,
    describe_failure,
    is_cancellation,
    read_body,
)
from twisted_gw.errors import GatewayError, provider_error
from twisted_gw.headernames import canonical, sanitized
from twisted_gw.observability.logsafe import escape

log = Logger()

#: defaults of server.proxy.max_response_bytes / max_event_bytes (config/file.py)
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


def media_type(response: IResponse) -> str:
    """The response's media type, lower case without parameters ("" if none)."""
    values = response.headers.getRawHeaders(b"content-type")
    if not values:
        return ""
    return values[0].split(b";", 1)[0].strip().lower().decode("latin-1")


def _host_of(url: str) -> str:
    """``scheme://host:port`` of an upstream URL, for log lines: never its
    path or query string (where a key may be)."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.split("/", 1)[0].rsplit("@", 1)[-1] if sep else "-"


class _Upstream:
    """What the Agent works out from an upstream URL, worked out once: the
    request URL, its parsed form, the pool key, the endpoint and the Host
    header (``Agent.request`` re-validates and re-parses the URL and copies
    the headers to add Host, on every request)."""

    __slots__ = ("endpoint", "host", "key", "origin", "parsed", "uri")

    def __init__(self, agent: Agent, endpoints: EndpointFactory, url: str) -> None:
        self.uri = EncodedURL.from_text(url).to_uri().to_text().encode("ascii")
        self.parsed = parsed = URI.fromBytes(self.uri)
        self.key = (parsed.scheme, parsed.host, parsed.port)
        self.endpoint = endpoints.endpointForURI(parsed)
        self.host = agent._computeHostValue(parsed.scheme, parsed.host, parsed.port)
        # a property that unparses the URL each time; checked here once, as
        # twisted.web's Request checks it on every request
        self.origin = _ensureValidURI(parsed.originForm)


class _BytesBodyRequest(Request):
    """A POST whose body is bytes, written with its head in one ``write``.

    twisted.web's own Request writes a body through an ``IBodyProducer``: a
    ``LengthEnforcingConsumer``, three Deferreds and a producer registered
    and unregistered on the transport, for a body that is already whole. This
    one writes the same bytes (the request line, ``Connection: close`` when
    not persistent, ``Content-Length``, the headers in their order, the
    body) in one ``write`` and is done. ``headers`` (what a response's
    ``request`` shows) is made only if asked for."""

    def __init__(
        self,
        upstream: _Upstream,
        raw: dict[bytes, list[bytes]],
        body: bytes,
        persistent: bool,
    ) -> None:
        # not Request.__init__: the method and URI were checked once (_Upstream)
        self.method = b"POST"
        self.uri = upstream.origin
        self.bodyProducer = None
        self.persistent = persistent
        self._parsedURI = upstream.parsed
        self._raw = raw
        self._body = body

    @property  # type: ignore[override]
    def headers(self) -> Headers:
        return Headers(self._raw)

    def writeTo(self, transport: Any) -> defer.Deferred:
        lines = [b"POST " + self.uri + b" HTTP/1.1\r\n"]
        if not self.persistent:
            lines.append(b"Connection: close\r\n")
        lines.append(b"Content-Length: %d\r\n" % len(self._body))
        for name, values in self._raw.items():
            lines.extend([name + b": " + v + b"\r\n" for v in values])
        lines.append(b"\r\n")
        lines.append(self._body)
        # one bytes: writeSequence checks every piece's type with a call each
        transport.write(b"".join(lines))
        return defer.succeed(None)

    def stopWriting(self) -> None:
        """Nothing to stop: the request is written whole by writeTo."""


def _issue(connection: Any, request: _BytesBodyRequest) -> defer.Deferred:
    return connection.request(request)


class UpstreamClient:
    """POSTs JSON to upstreams over one pool; fires ``(status, headers, body)``."""

    def __init__(
        self,
        reactor: Any,
        pool: HTTPConnectionPool | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.reactor = reactor
        #: the bound on one whole answer read by :meth:`read`
        self.max_response_bytes = max_response_bytes
        #: the bound on one event of a streamed answer (the chunk sources read it)
        self.max_event_bytes = max_event_bytes
        if pool is None:
            pool = connection_pool(reactor, max_per_host=256, idle_timeout=120)
        self.pool = pool
        self._upstreams: dict[str, _Upstream] = {}
        # twisted.web's Agent itself, not treq's client around it: treq would,
        # on every request, parse the URL again, build and merge cookie jars
        # (a gateway must not keep upstream cookies anyway), ask for gzip and
        # wrap the response; the answers are still read with treq.collect
        self._endpoints = EndpointFactory(reactor)
        self._agent = Agent.usingEndpointFactory(reactor, self._endpoints, pool=pool)
        #: adds the current attempt's ``traceparent`` to a request's headers
        #: (CONTRACT 5.3: ``Tracing.inject``); None when tracing is off
        self.inject: Callable[[str, dict[bytes, list[bytes]]], None] | None = None

    def post(self, url: str, headers: dict[bytes, list[bytes]], body: bytes) -> defer.Deferred:
        """POST ``body``; the Deferred fires with (status, Headers, body bytes).

        Transport failures become a 502 GatewayError; cancellation passes
        through (the caller turns a timeout into a 504)."""
        d = self._request(url, headers, body)
        d.addCallback(self._read_body, url)
        d.addErrback(self._transport_error)
        return d

    def post_streaming(
        self, url: str, headers: dict[bytes, list[bytes]], body: bytes
    ) -> defer.Deferred:
        """POST and fire with the unread response (for streaming collectors)."""
        return self._request(url, headers, body).addErrback(self._transport_error)

    def _request(self, url: str, headers: dict[bytes, list[bytes]], body: bytes) -> defer.Deferred:
        if self.inject is not None:
            self.inject(url, headers)
        try:
            upstream = self._upstream(url)
        except Exception:  # noqa: BLE001 - as Agent.request: a scheme it cannot serve
            return defer.fail(Failure())
        # the headers as Headers(headers) would hold them, then Host, as
        # Agent.request adds it (but without its per-request URL work: _Upstream)
        raw = {canonical(n): [sanitized(v) for v in values] for n, values in headers.items()}
        raw[b"Host"] = [upstream.host]
        request = _BytesBodyRequest(upstream, raw, body, self.pool.persistent)
        d = self.pool.getConnection(upstream.key, upstream.endpoint)
        return d.addCallback(_issue, request)

    def _upstream(self, url: str) -> _Upstream:
        """The prepared form of an upstream URL, made once per distinct URL
        (an IDN host or a non-ASCII path encoded, as treq would)."""
        upstream = self._upstreams.get(url)
        if upstream is None:
            if len(self._upstreams) > 1024:  # bounded: URLs come from config, but be safe
                self._upstreams.clear()
            upstream = self._upstreams[url] = _Upstream(self._agent, self._endpoints, url)
        return upstream

    def read(self, response: IResponse, url: str = "-") -> defer.Deferred:
        """Read a whole response: fires (status, headers, body); transport
        failures while reading, and a body over the bound, become the 502
        GatewayError."""
        d = self._read_body(response, url)
        d.addErrback(self._transport_error)
        return d

    def _read_body(self, response: IResponse, url: str) -> defer.Deferred:
        d = read_body(response, self.max_response_bytes, self.reactor)
        d.addCallbacks(
            lambda body: (response.code, response.headers, body),
            self._too_large,
            errbackArgs=(url,),
        )
        return d

    @staticmethod
    def _too_large(failure: Failure, url: str) -> Failure:
        if not failure.check(BodyTooLarge):
            return failure
        limit = failure.value.limit
        log.warn(
            "upstream {url}: response body over {limit} bytes "
            "(server.proxy.max_response_bytes), connection closed",
            url=escape(_host_of(url)),
            limit=limit,
        )
        raise provider_error(f"upstream response exceeds {limit} bytes")

    @staticmethod
    def _transport_error(failure: Failure) -> Failure:
        if failure.check(defer.CancelledError, GatewayError):
            return failure
        if is_cancellation(failure):
            raise defer.CancelledError()  # we cancelled it: a timeout or a client gone
        raise provider_error(describe_failure(failure, UPSTREAM_WORDS), "connect")

    def close(self) -> defer.Deferred:
        """Close pooled connections (service shutdown)."""
        return self.pool.closeCachedConnections()
