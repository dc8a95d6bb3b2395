"""The one HTTP client every upstream call goes through.

A single treq ``HTTPClient`` over one shared persistent ``HTTPConnectionPool``,
built once at start-up. Per request it does as little as possible: the request
body is already bytes and is written in one go (no cooperator round trips),
redirects and response buffering are off. A whole answer is read with a size
bound (``max_response_bytes``): an upstream cannot make the gateway hold an
unbounded body, and cancelling the read closes the upstream connection.
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
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    PartialDownloadError,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from twisted_gw.errors import GatewayError, provider_error
from twisted_gw.observability.logsafe import escape

log = Logger()

#: defaults of server.proxy.max_response_bytes / max_event_bytes (config/file.py)
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


def abort_transport(transport: Any) -> None:
    """Close the connection under a response body at once (not kept alive)."""
    producer = getattr(transport, "_producer", None)  # the TCP transport
    abort = getattr(producer, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.stopProducing()


class BodyCloser:
    """Closes the connection under a response body *one reactor turn later*,
    unless the body ends first.

    Why not at once: a body protocol that gives up inside ``dataReceived``
    (an event over the bound, a malformed event, a body too large) may be
    handed its last bytes in the same read that ends the response. Twisted
    then puts the connection back into the pool right after ``dataReceived``
    returns; an abort made at once would leave a dying connection in the pool
    for the next request, which fails with "connection closed before a
    response" though its upstream never saw it. So: pause reading now, close
    on the next turn; if the body ends meanwhile (``body_ended``), the
    connection is whole and stays pooled. Without a reactor it closes at once.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._call: Any = None

    def close(self, transport: Any) -> None:
        if transport is None or self._call is not None:
            return
        if self.reactor is None:
            abort_transport(transport)
            return
        transport.pauseProducing()
        self._call = self.reactor.callLater(0, self._close_now, transport)

    def _close_now(self, transport: Any) -> None:
        self._call = None
        abort_transport(transport)

    def body_ended(self) -> None:
        """The body ended (whole or cut): nothing is left to close."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class _BoundedBody(Protocol):
    """Collects a response body of at most ``limit`` bytes into ``finished``.

    Past the limit (or a Content-Length above it, before any byte is read)
    the connection is closed and ``finished`` fails with a 502 that says why.
    A body without length or chunking ends when the connection closes; that
    is the whole body, not a partial one."""

    def __init__(
        self, finished: defer.Deferred, limit: int, length: Any, url: str, reactor: Any = None
    ) -> None:
        self.finished = finished
        self.closer = BodyCloser(reactor)
        self.limit = limit
        self.length = length
        self.url = url
        self.parts: list[bytes] = []
        self.size = 0

    def connectionMade(self) -> None:
        if self.length is not UNKNOWN_LENGTH and self.length > self.limit:
            self._too_large()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self._too_large()
            return
        self.parts.append(data)

    def _too_large(self) -> None:
        log.warn(
            "upstream {url}: response body over {limit} bytes "
            "(server.proxy.max_response_bytes), connection closed",
            url=escape(self.url),
            limit=self.limit,
        )
        self.parts = []
        self.closer.close(self.transport)
        if not self.finished.called:
            self.finished.errback(provider_error(f"upstream response exceeds {self.limit} bytes"))

    def connectionLost(self, reason: Failure = None) -> None:
        self.closer.body_ended()
        if self.finished.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss, ConnectionDone):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


class _Discard(Protocol):
    """Takes a response body only to close its connection (see BodyCloser)."""

    def __init__(self, reactor: Any) -> None:
        self.closer = BodyCloser(reactor)

    def connectionMade(self) -> None:
        self.closer.close(self.transport)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:
        self.closer.body_ended()


def discard(response: Any, reactor: Any = None) -> None:
    """Drop an unread response and close its connection (unless its body
    ends in the read at hand, when it may go back to the pool whole)."""
    response.deliverBody(_Discard(reactor))


def media_type(response: Any) -> str:
    """The response's media type, lower case without parameters ("" if none)."""
    values = response.headers.getRawHeaders(b"content-type")
    if not values:
        return ""
    return values[0].split(b";", 1)[0].strip().lower().decode("latin-1")


def read_bounded(response: Any, limit: int, url: str = "-", reactor: Any = None) -> defer.Deferred:
    """The whole body of ``response`` (at most ``limit`` bytes); cancelling
    the Deferred closes the upstream connection."""
    protocol: list[_BoundedBody] = []

    def cancel(_: defer.Deferred) -> None:
        if protocol and protocol[0].transport is not None:
            protocol[0].transport.loseConnection()

    d: defer.Deferred = defer.Deferred(cancel)
    body = _BoundedBody(d, limit, response.length, url, reactor)
    protocol.append(body)
    response.deliverBody(body)
    return d


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


def _host_of(url: str) -> str:
    """``scheme://host:port`` of an upstream URL, for log lines: never its
    path or query string (where a key may be)."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.split("/", 1)[0].rsplit("@", 1)[-1] if sep else "-"


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

    def __init__(
        self,
        reactor: Any,
        pool: HTTPConnectionPool | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        import treq.client

        self.reactor = reactor
        #: the bound on one whole answer read by :meth:`read`
        self.max_response_bytes = max_response_bytes
        #: the bound on one event of a streamed answer (the chunk sources read it)
        self.max_event_bytes = max_event_bytes
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
        d.addCallback(self._read_body, url)
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

    def read(self, response: Any, url: str = "-") -> defer.Deferred:
        """Read a whole response: fires (status, headers, body); transport
        failures while reading, and a body over the bound, become the 502
        GatewayError."""
        d = self._read_body(response, url)
        d.addErrback(self._transport_error)
        return d

    def _read_body(self, response: Any, url: str) -> defer.Deferred:
        d = read_bounded(response, self.max_response_bytes, _host_of(url), self.reactor)
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
