"""The one HTTP client every upstream call goes through.

A single treq ``HTTPClient`` over one shared persistent ``HTTPConnectionPool``,
built once at start-up. Per request it does as little as possible: the request
body is already bytes and is written in one go (no cooperator round trips),
redirects and response buffering are off, and the body is read with
``readBody`` so that cancelling the Deferred aborts the upstream connection.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    PartialDownloadError,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
    readBody,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from twisted_gw.errors import GatewayError, provider_error


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    noisy = False


@implementer(IBodyProducer)
class BytesProducer:
    """Writes a bytes body at once (treq's default uses a cooperator)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body) if body is not None else UNKNOWN_LENGTH

    def startProducing(self, consumer: Any) -> defer.Deferred:
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IAgentEndpointFactory)
class CachingEndpointFactory:
    """One client endpoint per upstream (scheme, host, port), built once.

    Agent's default builds a HostnameEndpoint per request (IDNA encoding and
    all), and resolves even IP literals through the thread-pool resolver; the
    set of upstreams is small and fixed by config, so build each once, and
    connect to IP literals directly."""

    def __init__(self, reactor: Any, connect_timeout: float = 30.0) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self._cache: dict[tuple[bytes, bytes, int], Any] = {}
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            endpoint = self._cache[key] = self._build(uri)
        return endpoint

    def _build(self, uri: Any) -> Any:
        host = uri.host.decode("ascii")
        if isIPAddress(host):
            endpoint: Any = TCP4ClientEndpoint(
                self.reactor, host, uri.port, timeout=self.connect_timeout
            )
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(
                self.reactor, host, uri.port, timeout=self.connect_timeout
            )
        else:
            endpoint = HostnameEndpoint(self.reactor, host, uri.port, timeout=self.connect_timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


def describe_failure(failure: Failure) -> str:
    """A short, secret-free phrase for a transport failure (the 502 text)."""
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(DNSLookupError):
        return "DNS lookup failed"
    if failure.check(TCPTimedOutError, TimeoutError):
        return "connect timed out"
    if failure.check(ConnectError):
        return "could not connect to upstream"
    if failure.check(ResponseNeverReceived):
        return "connection closed before a response"
    if failure.check(PartialDownloadError, ResponseFailed):
        return "connection lost while reading the response"
    return "upstream request failed"


class UpstreamClient:
    """POSTs JSON to upstreams over one pool; fires ``(status, headers, body)``."""

    def __init__(self, reactor: Any, pool: HTTPConnectionPool | None = None) -> None:
        import treq.client

        self.reactor = reactor
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 256
            pool.cachedConnectionTimeout = 120
            pool.retryAutomatically = False  # a POST is not ours to replay
            pool._factory = _QuietHTTP11ClientFactory  # no log line per upstream connection
        self.pool = pool
        self._urls: dict[str, Any] = {}
        # Upstream cookies are never stored: a shared jar would hand one
        # tenant's Set-Cookie back to the upstream on another tenant's call.
        no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        agent = Agent.usingEndpointFactory(reactor, CachingEndpointFactory(reactor), pool=pool)
        self._http = treq.client.HTTPClient(
            agent,
            cookiejar=no_cookies,
            data_to_body_producer=BytesProducer,
        )

    def post(self, url: str, headers: dict[bytes, list[bytes]], body: bytes) -> defer.Deferred:
        """POST ``body``; the Deferred fires with (status, Headers, body bytes).

        Transport failures become a 502 GatewayError; cancellation passes
        through (the caller turns a timeout into a 504)."""
        d = self._http.request(
            "POST",
            self._url(url),
            headers=Headers(headers),
            data=body,
            allow_redirects=False,
            unbuffered=True,
            reactor=self.reactor,
        )
        d.addCallback(self._read_body)
        d.addErrback(self._transport_error)
        return d

    def post_streaming(
        self, url: str, headers: dict[bytes, list[bytes]], body: bytes
    ) -> defer.Deferred:
        """POST and fire with the unread response (for streaming collectors)."""
        d = self._http.request(
            "POST",
            self._url(url),
            headers=Headers(headers),
            data=body,
            allow_redirects=False,
            unbuffered=True,
            reactor=self.reactor,
        )
        d.addErrback(self._transport_error)
        return d

    def _url(self, url: str) -> Any:
        """The parsed URL, parsed once per distinct upstream URL (treq would
        parse the string on every call)."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 1024:  # bounded: URLs come from config, but be safe
                self._urls.clear()
            parsed = self._urls[url] = EncodedURL.from_text(url)
        return parsed

    @classmethod
    def read(cls, response: Any) -> defer.Deferred:
        """Read a whole response: fires (status, headers, body); transport
        failures while reading become the 502 GatewayError."""
        d = cls._read_body(response)
        d.addErrback(cls._transport_error)
        return d

    @staticmethod
    def _read_body(response: Any) -> defer.Deferred:
        d = readBody(response.original)

        def close_delimited(failure: Failure) -> bytes:
            # A body without Content-Length or chunking ends when the
            # connection closes; readBody reports that as "partial" though it
            # is the whole body.
            failure.trap(PartialDownloadError)
            return failure.value.response

        d.addErrback(close_delimited)
        d.addCallback(lambda body: (response.code, response.headers, body))
        return d

    @staticmethod
    def _transport_error(failure: Failure) -> Failure:
        if failure.check(defer.CancelledError, GatewayError):
            return failure
        reasons = getattr(failure.value, "reasons", ())  # ResponseFailed and kin wrap them
        if any(r.check(defer.CancelledError) for r in reasons):
            raise defer.CancelledError()  # we cancelled it: a timeout or a client gone
        raise provider_error(describe_failure(failure))

    def close(self) -> defer.Deferred:
        """Close pooled connections (service shutdown)."""
        return self.pool.closeCachedConnections()
