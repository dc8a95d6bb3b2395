"""The one outbound HTTP stack: every call the gateway makes goes through it.

Upstream providers (:mod:`twisted_gw.providers.http`) and the etcd client
(:mod:`twisted_gw.config.etcd_client`) build their treq client here and read
their answers with what is here, so the rules below are written once:

- **One persistent pool per client, never retried behind its back**
  (``retryAutomatically`` off): a POST to an upstream is not ours to replay,
  and the etcd client's fail-over decides itself what to send again.
- **Endpoints built once** per (scheme, host, port): IP literals are dialled
  directly (Agent's default resolves them through the thread-pool resolver,
  and waits 0.3 s before it reports a refused connection), names through
  ``HostnameEndpoint``, https through a TLS policy (system trust, a given CA
  file, or no check at all). No log line per connection. pyOpenSSL is
  imported at the first https connection (or a CA file's load), not before:
  Twisted's own https helpers are imported without it
  (:mod:`twisted_gw._lazytls`), so the policy and the TLS endpoint are ours.
- **Bodies read whole, with a bound** when the caller has one; cancelling the
  read closes the connection under it. A body given up inside a read is
  closed one reactor turn later unless it ends first (:class:`BodyCloser`).
- **One way to name a transport failure** (:func:`describe_failure`, in each
  caller's words) and one test for "we cancelled it" (:func:`is_cancellation`).

Public Twisted and treq APIs (checked against Twisted 26.10 and treq 26.7),
but for one attribute: aborting the connection under a body needs the
connection's transport, which only ``TransportProxyProducer._producer`` holds
(:func:`close_connection` says why an abort, and why there is no public way).
The pool's per-connection factory is made quiet through the public
``Factory.noisy``, set by the endpoints we hand the pool.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PartialDownloadError,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import (
    UNKNOWN_LENGTH,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

if TYPE_CHECKING:
    from treq.client import HTTPClient
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from twisted.internet.ssl import Certificate, CertificateOptions
    from twisted.web.client import URI

# -- the pool, the endpoints, the client ----------------------------------------------


def connection_pool(
    reactor: IReactorTime, max_per_host: int, idle_timeout: float
) -> HTTPConnectionPool:
    """A persistent pool that keeps ``max_per_host`` idle connections per
    host for ``idle_timeout`` seconds and never replays a request itself."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool.cachedConnectionTimeout = idle_timeout
    pool.retryAutomatically = False  # a POST is not ours to replay
    return pool


def tls_policy(ca_file: str | None = None, verify: bool = True) -> IPolicyForHTTPS:
    """The https policy: system trust, a given CA (``ca_file``), or (``verify``
    false) no certificate check at all."""
    if not verify:
        return _Unverified()
    if ca_file:
        from twisted.internet import ssl

        with open(ca_file, "rb") as f:
            root = ssl.Certificate.loadPEM(f.read())
        return _Verified(root)
    return _Verified()


@implementer(IPolicyForHTTPS)
class _Verified:
    """https with the server's certificate checked: ``BrowserLikePolicyForHTTPS``'s
    check (the host name, against the system trust store or ``trust_root``),
    with pyOpenSSL imported at the first https connection, not with Twisted."""

    def __init__(self, trust_root: Certificate | None = None) -> None:
        self.trust_root = trust_root

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        from twisted.internet.ssl import optionsForClientTLS

        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self.trust_root)


@implementer(IPolicyForHTTPS)
class _Unverified:
    """https without a certificate check (etcd's ``tls.verify: false``)."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> CertificateOptions:
        from twisted.internet import ssl

        return ssl.CertificateOptions(verify=False)


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """Connects through ``endpoint`` with the factory made quiet.

    The pool builds one factory per connection, and ``Factory.doStart``
    logs "Starting factory ..." for each unless ``noisy`` is false: one log
    line per upstream or etcd connection, of no use to an operator."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred:
        protocolFactory.noisy = False  # type: ignore[attr-defined]
        return self._endpoint.connect(protocolFactory)

    def __repr__(self) -> str:
        return repr(self._endpoint)  # the pool names its connections with it


@implementer(IStreamClientEndpoint)
class _TLSEndpoint:
    """TLS over ``endpoint``, from the connection's start: what Twisted's
    ``wrapClientTLS`` builds, with the TLS layer imported at the first connect."""

    def __init__(self, creator: Any, endpoint: IStreamClientEndpoint) -> None:
        self._creator = creator
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        tls = TLSMemoryBIOFactory(self._creator, True, protocolFactory)
        d = self._endpoint.connect(tls)
        return d.addCallback(lambda protocol: protocol.wrappedProtocol)

    def __repr__(self) -> str:
        return f"<TLS over {self._endpoint!r}>"


@implementer(IAgentEndpointFactory)
class EndpointFactory:
    """One client endpoint per (scheme, host, port), built once.

    Agent's default builds a HostnameEndpoint per request (IDNA encoding and
    all) and resolves even IP literals in a thread; the hosts a client talks
    to are few and fixed by config, so each endpoint is built once, and IP
    literals are connected to directly. https goes through ``tls`` (default:
    the system trust store)."""

    def __init__(
        self,
        reactor: Any,  # TCP, time and name resolution: what HostnameEndpoint needs
        connect_timeout: float = 30.0,
        tls: IPolicyForHTTPS | None = None,
    ) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.tls = tls if tls is not None else tls_policy()
        self._cache: dict[Hashable, IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            endpoint = self._cache[key] = _QuietEndpoint(self._build(uri))
        return endpoint

    def _build(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        timeout = self.connect_timeout
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(self.reactor, host, uri.port, timeout=timeout)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self.reactor, host, uri.port, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(self.reactor, host, uri.port, timeout=timeout)
        if uri.scheme == b"https":
            endpoint = _TLSEndpoint(self.tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


@implementer(IBodyProducer)
class BytesProducer:
    """Writes a bytes body at once (treq's default goes through a cooperator)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body) if body is not None else UNKNOWN_LENGTH

    def startProducing(self, consumer: IConsumer) -> defer.Deferred:
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def http_client(
    reactor: IReactorTime, pool: HTTPConnectionPool, endpoints: EndpointFactory
) -> HTTPClient:
    """The treq ``HTTPClient`` over ``pool`` and ``endpoints``.

    Cookies are never stored: a shared jar would hand one tenant's
    Set-Cookie back to an upstream on another tenant's call. Bytes bodies
    are written in one go (:class:`BytesProducer`)."""
    import treq.client

    agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
    no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    return treq.client.HTTPClient(agent, cookiejar=no_cookies, data_to_body_producer=BytesProducer)


# -- closing the connection under a body -------------------------------------------------


def close_connection(transport: IPushProducer | None) -> None:
    """Abort the connection under a response body now; it is not kept alive.

    ``transport`` is the one a body protocol was given: the pool's
    ``TransportProxyProducer`` around the connection's own transport.

    The one private Twisted attribute the gateway uses, on purpose
    (checked against Twisted 26.10): ``TransportProxyProducer._producer``,
    the connection's transport (TCP, or the TLS layer over it), to call its
    public ``abortConnection``. The proxy's public ``loseConnection`` and
    ``stopProducing`` close gracefully, which is not a close we can count on:
    a TCP close first waits for the unsent part of the request to drain (an
    upstream that stopped reading keeps the socket for ever), and a TLS close
    waits for the peer's close_notify, which a paused transport never reads.
    Twisted offers no public way from a response to its connection (neither
    ``IResponse`` nor the proxy has one). Once the response is over the proxy
    lets go of the connection (``_producer`` is None): nothing is aborted
    then, and a connection the pool took back is left alone."""
    if transport is None:
        return
    producer = getattr(transport, "_producer", None)  # see the docstring
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

    def __init__(self, reactor: IReactorTime | None) -> None:
        self.reactor = reactor
        self._call: IDelayedCall | None = None

    def close(self, transport: IPushProducer | None) -> None:
        """Close the connection under ``transport`` on the next turn (see the
        class docstring); asked again while that close is pending, nothing more."""
        if transport is None or self._call is not None:
            return
        if self.reactor is None:
            close_connection(transport)
            return
        transport.pauseProducing()
        self._call = self.reactor.callLater(0, self._close_now, transport)

    def _close_now(self, transport: IPushProducer) -> None:
        self._call = None
        close_connection(transport)

    def body_ended(self) -> None:
        """The body ended (whole or cut): nothing is left to close."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class _Discard(Protocol):
    """Takes a response body only to close its connection (see BodyCloser)."""

    def __init__(self, reactor: IReactorTime | None) -> None:
        self.closer = BodyCloser(reactor)

    def connectionMade(self) -> None:
        self.closer.close(self.transport)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closer.body_ended()


def discard(response: IResponse, reactor: IReactorTime | None = None) -> None:
    """Drop an unread response and close its connection (unless its body
    ends in the read at hand, when it may go back to the pool whole)."""
    response.deliverBody(_Discard(reactor))


# -- reading a whole body ------------------------------------------------------------------


class BodyTooLarge(Exception):
    """A response body (or its Content-Length) went past the reader's bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body exceeds {limit} bytes")
        self.limit = limit


#: how a whole body ends: its length read, its chunks ended, or (no length)
#: its connection closed
_BODY_ENDS = (ResponseDone, PotentialDataLoss, ConnectionDone)


class _BoundedBody(Protocol):
    """Collects a response body of at most ``limit`` bytes into ``finished``.

    Past the limit (or a Content-Length above it, before any byte is read)
    the connection is closed and ``finished`` fails with BodyTooLarge. A body
    without length or chunking ends when the connection closes; that is the
    whole body, not a partial one."""

    def __init__(
        self,
        finished: defer.Deferred,
        limit: int | None,
        length: int | object,
        reactor: IReactorTime | None,
    ) -> None:
        self.finished = finished
        self.closer = BodyCloser(reactor)
        self.limit = limit
        self.length = length
        self.parts: list[bytes] = []
        self.size = 0

    def connectionMade(self) -> None:
        length, limit = self.length, self.limit
        if limit is not None and length is not UNKNOWN_LENGTH and length > limit:
            self._too_large()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            self._too_large()
            return
        self.parts.append(data)

    def _too_large(self) -> None:
        assert self.limit is not None  # only a bounded read is ever too large
        self.parts = []
        self.closer.close(self.transport)
        if not self.finished.called:
            self.finished.errback(BodyTooLarge(self.limit))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closer.body_ended()
        if self.finished.called:
            return
        # isinstance, not Failure.check: that works out the qualified names of
        # the exception's classes, on every body read, for the same answer
        if reason is None or isinstance(reason.value, _BODY_ENDS):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


def read_body(
    response: IResponse, limit: int | None = None, reactor: IReactorTime | None = None
) -> defer.Deferred[bytes]:
    """The whole body of ``response``: at most ``limit`` bytes (None: no
    bound), else a BodyTooLarge failure and the connection closed.

    A connection lost mid-body fails with the transport's failure (a
    ResponseFailed). Cancelling the Deferred closes the connection.
    ``reactor`` times the close of a body given up (see BodyCloser)."""
    protocol: list[_BoundedBody] = []

    def cancel(_: defer.Deferred) -> None:
        if protocol:
            close_connection(protocol[0].transport)

    d: defer.Deferred[bytes] = defer.Deferred(cancel)
    body = _BoundedBody(d, limit, response.length, reactor)
    protocol.append(body)
    response.deliverBody(body)
    return d


# -- what went wrong -----------------------------------------------------------------------


def is_cancellation(failure: Failure) -> bool:
    """Whether ``failure`` is a cancellation we made (a timeout, a client gone),
    whatever shape the transport gave it: Twisted reports a request
    cancelled while connecting as ConnectingCancelledError, and one
    cancelled mid-exchange as a ResponseFailed wrapping CancelledError."""
    if failure.check(defer.CancelledError, ConnectingCancelledError):
        return True
    reasons = getattr(failure.value, "reasons", None) or ()
    return any(r.check(defer.CancelledError) for r in reasons)


@dataclass(frozen=True)
class FailureWords:
    """How one caller names each kind of transport failure: its texts are
    part of its contract (a 502's message, a store error), so each caller
    keeps its words while the classification is one.

    ``connect`` and ``tls`` may use ``{error}`` (the failure's message, the
    TLS error's); ``tls`` None names a TLS failure by how the connection
    ended; ``other`` None uses the failure's own message."""

    refused: str
    dns: str
    timed_out: str
    connect: str
    no_response: str
    lost: str
    other: str | None
    tls: str | None = None


#: the upstream providers' words (the text of the 502 "Provider error: ...")
UPSTREAM_WORDS = FailureWords(
    refused="connection refused",
    dns="DNS lookup failed",
    timed_out="connect timed out",
    connect="could not connect to upstream",
    no_response="connection closed before a response",
    lost="connection lost while reading the response",
    other="upstream request failed",
)


def _tls_reason(failure: Failure) -> Failure | None:
    for reason in getattr(failure.value, "reasons", None) or ():
        kind = type(reason.value)
        if "SSL" in kind.__module__ or "OpenSSL" in repr(kind):
            return reason
    return None


def describe_failure(failure: Failure, words: FailureWords = UPSTREAM_WORDS) -> str:
    """A short, secret-free phrase for a transport failure, in ``words``."""
    if failure.check(ConnectionRefusedError):
        return words.refused
    if failure.check(DNSLookupError):
        return words.dns
    if failure.check(TCPTimedOutError, TimeoutError):
        return words.timed_out
    if failure.check(ConnectError):
        return words.connect.format(error=failure.getErrorMessage())
    if words.tls is not None:
        tls = _tls_reason(failure)
        if tls is not None:
            return words.tls.format(error=tls.getErrorMessage())
    if failure.check(ResponseNeverReceived):
        return words.no_response
    if failure.check(PartialDownloadError, ResponseFailed):
        return words.lost
    if words.other is not None:
        return words.other
    return failure.getErrorMessage() or type(failure.value).__name__


__all__ = [
    "UPSTREAM_WORDS",
    "BodyCloser",
    "BodyTooLarge",
    "BytesProducer",
    "EndpointFactory",
    "FailureWords",
    "close_connection",
    "connection_pool",
    "describe_failure",
    "discard",
    "http_client",
    "is_cancellation",
    "read_body",
    "tls_policy",
]
