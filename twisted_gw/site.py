"""The twisted.web Site, channel and Request both listeners use.

- The request refuses bodies over ``max_body_bytes`` **[beyond]**: twisted.web
  buffers the whole body before dispatch, so without a bound a client could
  make the gateway store gigabytes. A ``Content-Length`` over the bound is
  dispatched at once with an empty body (no ``100 Continue``, the rest of the
  body is never read, the connection closes after the answer); a chunked body
  stops being stored at the bound. Either way the request is marked
  ``body_too_large`` and the route answers 413 after its auth.
- A path that is not UTF-8 cannot be routed by Klein, which would answer an
  HTML 400 and log a traceback; such a request is marked ``url_undecodable``
  and routed to no route, so the app's unmatched handler answers it in the
  listener's shape, after auth where the listener has it. A Host that Klein
  or werkzeug cannot use (not UTF-8, not IDNA-encodable: an HTML 400 or 500
  with a traceback) is a 400 the site answers itself (no route reads Host).
- The channel answers what it refuses itself, in the listener's error shape
  (``error_body``), and closes: request headers over twisted.web's bounds
  (431), headers not complete ``header_timeout`` seconds after the request's
  first byte (408; a slow client cannot hold a connection by trickling), and
  malformed requests (400).
- The site holds at most ``max_connections`` connections open; one past the
  cap gets a 503 and is closed at accept time, with at most one warning a
  minute in the log.
- The site does not parse form bodies (every JSON POST would otherwise run
  its Content-Type through the stdlib ``email`` parser, ~80 us a request) and
  writes no twisted.web access log line: the gateway's own access-log hook
  writes one line per request, without the query string (where a key may be).

- Before any route, the request answers a CORS preflight from an allowed
  origin and marks the response of one (``cors``, :mod:`twisted_gw.cors`),
  answers the probes ``GET /healthz`` and ``GET /readyz`` (``health``,
  :mod:`twisted_gw.health`), and waits while the site holds requests (the
  etcd start-up gate: :meth:`GatewaySite.hold`). A shutdown drains the site
  (:meth:`GatewaySite.drain`; the policy is :mod:`twisted_gw.shutdown`).

The proxy's routes all have fixed paths; its resource
(:class:`FixedRouteResource`) finds them in a dict instead of through
werkzeug, and runs them as Klein does.

HTTP/2 is not offered (the listeners' TLS options advertise no ALPN), so the
site's protocol is the HTTP/1.1 channel itself rather than twisted.web's
HTTP/1.1-or-2 switch.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from klein import Klein
from klein._resource import extractURLparts
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET, Request, Site
from werkzeug.exceptions import BadHost

from twisted_gw.cors import CorsPolicy
from twisted_gw.errors import (
    GatewayError,
    bad_request,
    headers_too_large,
    headers_too_slow,
    invalid_host,
    too_many_connections,
)
from twisted_gw.health import PROBE_METHODS, PROBE_PATHS, Health

log = Logger()

#: how the listener writes an error it answers itself (CONTRACT 3 / 4.1 shapes)
ErrorBody = Callable[[GatewayError], bytes]

#: what an undecodable URL is routed as: a path segment no route matches
_UNROUTABLE = b"\x00"

#: seconds a refused client gets to read its small error before it is dropped
_ABORT_AFTER = 2.0

#: at most one "connection cap reached" warning per this many seconds
_CAP_WARNING_EVERY = 60.0


def _response(error: GatewayError, error_body: ErrorBody) -> bytes:
    """A whole HTTP/1.1 response for ``error``, closing the connection."""
    body = error_body(error)
    return b"HTTP/1.1 %d %s\r\n%s\r\n%s" % (
        error.status,
        HTTPStatus(error.status).phrase.encode(),
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n"
        % len(body),
        body,
    )


class LimitedRequest(Request):
    """Request with a body-size bound; see :func:`limited_request_factory`."""

    max_body_bytes = 32 * 1024 * 1024
    body_too_large = False
    #: the path is not UTF-8 (see the module docstring)
    url_undecodable = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_bytes:
            self.body_too_large = True
            length = 0  # don't allocate a spool file for what we will refuse
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        if self.content.tell() + len(data) > self.max_body_bytes:
            self.body_too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def render(self, resrc: Any) -> None:
        # the common case costs two byte-string scans, a set lookup, two
        # attribute checks and a header lookup (find, not ``b"%" in``: that
        # first tries the bytes as an int, and raises and clears a TypeError)
        if self.path.find(b"%") >= 0 or not self.path.isascii():
            self._check_path()
        site = self.site
        if site.cors is not None and site.cors.apply(self):
            return  # a preflight, answered
        if self.path in PROBE_PATHS and self.method in PROBE_METHODS and site.health is not None:
            site.health.answer(self)
            return
        if site.held is not None:  # the config is not loaded yet (etcd start-up)
            site.held.append((self, resrc))
            return
        self.dispatch(resrc)

    def dispatch(self, resrc: Any) -> None:
        """Hand the request to the listener's resource (the Klein app)."""
        host = self.requestHeaders.getRawHeaders(b"host")
        if host is not None and not host[-1].isascii() and not _is_utf8(host[-1]):
            self._answer(invalid_host())
            return
        try:
            super().render(resrc)
        except BadHost:  # werkzeug cannot IDNA-encode it (".", "a..b"); nothing is written yet
            self._answer(invalid_host())

    def _cleanup(self) -> None:
        super()._cleanup()
        self._drop_adapters()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self._drop_adapters()

    def _drop_adapters(self) -> None:
        # Klein's IKleinRequest adapter is cached on the request and points
        # back at it: a cycle per request, left to the garbage collector
        # (with its headers, its werkzeug MapAdapter...). Dropped once the
        # request is over, the request is freed by its refcount.
        cache = getattr(self, "_adapterCache", None)
        if cache:
            cache.clear()

    def _check_path(self) -> None:
        if not _is_utf8(b"/".join(self.postpath)):
            self.url_undecodable = True
            self.postpath = [_UNROUTABLE]

    def _answer(self, error: GatewayError) -> None:
        """Answer ``error`` in the site's shape, without the resource."""
        body = self.site.error_body(error)
        self.setResponseCode(error.status, HTTPStatus(error.status).phrase.encode())
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def limited_request_factory(max_body_bytes: int) -> type:
    """A LimitedRequest subclass with its own bound (one per listener)."""
    return type("BoundedRequest", (LimitedRequest,), {"max_body_bytes": max_body_bytes})


class GatewayChannel(HTTPChannel):
    """HTTPChannel that answers its own refusals as JSON and bounds slow heads.

    The header deadline is armed only when a read ends inside a request's head
    (a request that arrives in one read, the usual case, costs no timer), so it
    counts from the read that brought the request's first byte; it is
    cancelled when the head is complete. Between requests the idle timeout
    (``Site.timeOut``) applies, as before."""

    #: seconds from a request's first byte to the end of its head (None: none)
    header_timeout: float | None = None
    #: called once when the connection is gone (the site's connection count)
    on_close: Callable[[], None] | None = None

    _head_deadline: Any = None
    #: the connection's local address and TLS-ness, asked once per connection
    #: (twisted.web asks for every request: a getsockname and an adaptation)
    _host: Any = None
    _secure: bool | None = None
    #: an error was answered: the rest of the input is dropped
    _refused = False
    #: the request's body is over the bound and will never be read
    _dropping_body = False

    def __init__(self) -> None:
        super().__init__()
        self.error_body: ErrorBody = GatewayError.body

    def getHost(self) -> Any:
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def isSecure(self) -> bool:
        secure = self._secure
        if secure is None:
            secure = self._secure = super().isSecure()
        return secure

    def dataReceived(self, data: bytes) -> None:
        if self._refused or self._dropping_body:
            return
        super().dataReceived(data)
        if (
            self._head_deadline is None
            and self.line_mode
            and not self._handlingRequest
            and (self._buffer or self._receivedHeaderSize)  # inside a head
            and self.header_timeout
            and not self._refused
        ):
            self._head_deadline = self.callLater(self.header_timeout, self._head_too_slow)

    def rawDataReceived(self, data: bytes) -> None:
        if self._dropping_body:
            return
        super().rawDataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        # twisted.web answers a bare 400 past totalHeadersSize
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(headers_too_large())
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver closes silently on a line over MAX_LENGTH
        self._refuse(headers_too_large())

    def headerReceived(self, line: bytes) -> bool:
        # twisted.web answers a bare 400 past maxHeaders
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuse(headers_too_large())
            return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        request = self.requests[-1]
        length = self.length
        if (
            length is None
            or not isinstance(request, LimitedRequest)
            or length <= request.max_body_bytes
        ):
            super().allHeadersReceived()
            return
        # Refused by its Content-Length: dispatch now with an empty body and
        # no 100 Continue; the body is dropped and the connection closes after
        # the answer, so none of it is parsed as a next request.
        request.parseCookies()
        self.persistent = False
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        request.gotLength(length)  # marks body_too_large, stores nothing
        self.length = 0  # lineReceived dispatches at once
        self._dropping_body = True

    @property
    def busy(self) -> bool:
        """A request is past its head: its body is arriving, or it is being
        answered. A shutdown waits for it; a connection that is idle, or
        still sending a head, is closed once nothing is busy (a client that
        trickles a head cannot hold a shutdown)."""
        return bool(self.requests) and not self.line_mode

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        # a request that arrives while the gateway drains is answered, then
        # the connection closes (and says so: Connection: close)
        if self.site.draining:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return super().checkPersistence(request, version)

    def close_after_response(self) -> None:
        """Shutdown: close once the request in progress is answered, and tell
        its client so if its head is not written yet."""
        self.persistent = False
        for request in self.requests:
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"connection", [b"close"])

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """twisted.web's, written as one bytes: its ``writeSequence`` checks
        and counts four pieces per header one by one (an answer with every
        rate limit has 13 headers: 52 pieces, and the status line's 7)."""
        if not isinstance(headers, Headers):  # the old iterable of pairs: twisted.web's own
            super().writeHeaders(version, code, reason, headers)
            return
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head))

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self.site.draining:
            self.site.request_ended()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's own is a bare 400 without a body
        self._refuse(bad_request())

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        self._refuse(headers_too_slow(self.header_timeout or 0))

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` (unless a response is under way) and close."""
        if self._refused:
            return
        self._refused = True
        self._cancel_deadline()
        if not self._handlingRequest:
            self.transport.write(_response(error, self.error_body))
        self.loseConnection()
        if self._abortingCall is None:
            self._abortingCall = self.callLater(_ABORT_AFTER, self.forceAbortClient)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def connectionLost(self, reason: Any) -> None:
        self._cancel_deadline()
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()
        super().connectionLost(reason)


class _Refusal(Protocol):
    """A connection past the cap: a 503, then closed (see GatewaySite)."""

    def __init__(self, site: GatewaySite) -> None:
        self.site = site
        self._abort: Any = None

    def connectionMade(self) -> None:
        self.site._note_refusal(self.transport)
        self.transport.write(_response(too_many_connections(), self.site.error_body))
        self.transport.loseConnection()
        self._abort = self.site.reactor.callLater(_ABORT_AFTER, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """The request is not read."""

    def connectionLost(self, reason: Any = None) -> None:
        if self._abort is not None and self._abort.active():
            self._abort.cancel()


class GatewaySite(Site):
    """A Site for the gateway's Klein resources; see the module docstring.

    ``error_body`` writes the errors the site answers itself in the
    listener's shape (default: the proxy's OpenAI shape of CONTRACT 4.1).
    ``health`` answers the probes (CONTRACT 5.2) and ``cors`` is the
    listener's CORS policy (CONTRACT 5.6; None: off, and no cost).

    The site also keeps what a start-up gate and a shutdown need: it can
    hold requests (:meth:`hold`, :meth:`release`) and it knows its
    connections (:meth:`drain`, :meth:`close_idle`, :meth:`cut`)."""

    noisy = False
    displayTracebacks = False
    protocol = GatewayChannel

    def __init__(
        self,
        resource: object,
        max_body_bytes: int,
        header_timeout: float = 30.0,
        max_connections: int = 4096,
        reactor: object = None,
        error_body: ErrorBody = GatewayError.body,
        health: Health | None = None,
        cors: CorsPolicy | None = None,
    ) -> None:
        super().__init__(
            resource,
            requestFactory=limited_request_factory(max_body_bytes),
            parsePOSTFormSubmission=False,
            reactor=reactor,
        )
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.error_body = error_body
        self.health = health
        self.cors = cors
        #: requests waiting for the config (None: requests are dispatched)
        self.held: list[tuple[LimitedRequest, Any]] | None = None
        #: a shutdown began: every answer closes its connection
        self.draining = False
        self._on_request_ended: Callable[[], None] | None = None
        #: connections open now (refused ones are not counted)
        self._channels: set[GatewayChannel] = set()
        self._all_closed: list[Deferred[None]] = []
        self._refused_since_warning = 0
        self._last_cap_warning: float | None = None

    @property
    def open_connections(self) -> int:
        """Connections open now (refused ones are not counted)."""
        return len(self._channels)

    def buildProtocol(self, addr: Any) -> Any:
        if len(self._channels) >= self.max_connections:
            return _Refusal(self)
        channel = super().buildProtocol(addr)
        channel.header_timeout = self.header_timeout
        channel.error_body = self.error_body
        channel.on_close = lambda: self._connection_closed(channel)
        self._channels.add(channel)
        return channel

    def _connection_closed(self, channel: GatewayChannel) -> None:
        self._channels.discard(channel)
        if not self.draining:
            return
        if self._on_request_ended is not None:
            self._on_request_ended()  # a busy connection may be the one that went
        if not self._channels:
            waiters, self._all_closed = self._all_closed, []
            for d in waiters:
                d.callback(None)

    # -- the start-up gate -------------------------------------------------

    def hold(self) -> None:
        """Hold every request but the probes and preflights until :meth:`release`."""
        if self.held is None:
            self.held = []

    def release(self) -> None:
        """Dispatch the held requests whose client is still there, in order."""
        held, self.held = self.held or [], None
        for request, resrc in held:
            if request.channel is not None:
                request.dispatch(resrc)

    # -- shutdown ------------------------------------------------------------

    def drain(self, on_request_ended: Callable[[], None]) -> None:
        """Begin a shutdown: every answer from now on closes its connection,
        requests still held are dropped (they will never be served), and
        ``on_request_ended`` is called each time a request ends."""
        self.draining = True
        self._on_request_ended = on_request_ended
        held, self.held = self.held or [], None
        for request, _ in held:
            request.loseConnection()
        for channel in list(self._channels):
            if channel.busy:
                channel.close_after_response()

    def in_progress(self) -> int:
        """How many connections have a request in progress (see GatewayChannel.busy)."""
        return sum(1 for channel in self._channels if channel.busy)

    def request_ended(self) -> None:
        """A channel finished a request while draining (GatewayChannel.requestDone)."""
        if self._on_request_ended is not None:
            self._on_request_ended()

    def close_idle(self) -> None:
        """Close every connection that has no request in progress."""
        for channel in list(self._channels):
            if not channel.busy and not channel.transport.disconnecting:
                channel.loseConnection()

    def cut(self) -> None:
        """Drop every connection now (shutdown's grace is over)."""
        for channel in list(self._channels):
            channel.transport.abortConnection()

    def when_closed(self) -> Deferred[None]:
        """Fires once no connection is open (while draining)."""
        if not self._channels:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._all_closed.append(d)
        return d

    def _note_refusal(self, transport: Any) -> None:
        """Count a refused connection; warn at most once a minute."""
        self._refused_since_warning += 1
        now = self.reactor.seconds()
        if self._last_cap_warning is not None and now - self._last_cap_warning < _CAP_WARNING_EVERY:
            return
        host = transport.getHost()
        log.warn(
            "connection cap reached on port {port}: {cap} connections open, refusing new ones"
            " ({refused} refused since the last warning)",
            port=host.port,
            cap=self.max_connections,
            refused=self._refused_since_warning,
        )
        self._last_cap_warning = now
        self._refused_since_warning = 0

    def log(self, request: object) -> None:
        """No twisted.web access log (see the module docstring)."""


def routes() -> Klein:
    """The Klein app of a gateway listener: no redirects, ever. werkzeug would
    answer ``//x`` with a 308 whose Location is built from the client's Host
    header (an open redirect), so slashes are not merged and such a path is
    simply unknown (the app's not-found handler answers it)."""
    app = Klein()
    app.url_map.merge_slashes = False
    app.url_map.redirect_defaults = False
    return app


#: at most this many distinct Host values are remembered as routable (the
#: header is the client's: an unbounded set would be theirs to grow)
_KNOWN_HOSTS = 256


class FixedRouteResource(KleinResource):
    """Klein's resource, with the app's fixed-path routes looked up in a dict.

    For every request Klein extracts and decodes the URL's parts, binds
    werkzeug's map to them (a MapAdapter), adapts the request to
    ``IKleinRequest``, runs werkzeug's matcher and wraps the route's call in
    two ``maybeDeferred`` and four callbacks: ~5 % of the CPU of a proxied
    chat completion. A route whose path has no variables (all the proxy's)
    needs none of that to be found, so a request whose method and path are
    exactly one of those routes' is run here the way Klein runs it: the same
    prepath/postpath, its Deferred cancelled when the connection is lost,
    bytes or a str it returns written and the request finished, the request
    finished when its Deferred fires with None (the app's routes return
    nothing else: no Resource or Renderable, which only Klein renders).
    Everything else (another
    path, a %-escaped one, a path routed below a resource) goes through
    Klein as before.

    The Host header is checked the way werkzeug checks it (its IDNA
    encoding) the first time each value is seen; a value Klein refuses is
    left to Klein every time, which answers it as it always did (the site
    turns werkzeug's BadHost into its JSON 400).

    What is not Klein's: a failure of a fixed route is not offered to the
    app's error handlers. Those handle werkzeug's routing errors (not found,
    wrong method, a redirect), which only matching raises; a fixed route's
    own failure gets what Klein does when no handler takes it (twisted.web's
    ``processingFailed``, or a log line once the request is finished)."""

    def __init__(self, app: Klein) -> None:
        super().__init__(app)
        self._fixed: dict[tuple[bytes, bytes], tuple[str, int]] = {}
        endpoints = app.endpoints
        for rule in app.url_map.iter_rules():
            if rule.arguments or rule.methods is None or rule.host is not None:
                continue  # a variable part, any method, host matching: werkzeug's to match
            segments = endpoints[rule.endpoint].segment_count
            for method in rule.methods:
                self._fixed.setdefault(
                    (method.encode("ascii"), rule.rule.encode("utf-8")),
                    (rule.endpoint, segments),
                )
        self._hosts: set[bytes | None] = set()

    def render(self, request: Any) -> Any:
        route = self._fixed.get((request.method, request.path))
        if route is None or request.prepath or not self._routable_host(request):
            return super().render(request)
        endpoint, segments = route
        request.prepath.extend(request.postpath[:segments])
        request.postpath = request.postpath[segments:]
        try:
            result = self._app.execute_endpoint(endpoint, request)
        except Exception:  # noqa: BLE001 - Klein's maybeDeferred: handled below
            d: Deferred = fail()
        else:
            d = result if isinstance(result, Deferred) else succeed(result)
        request.notifyFinish().addErrback(lambda _: d.cancel())

        def finished() -> bool:
            # what Klein's first notifyFinish observer records, read off the
            # request instead (one Deferred less): finished, or its connection lost
            return bool(request.finished or request._disconnected)

        def failed(failure: Failure) -> None:
            if finished():
                if not failure.check(CancelledError):
                    legacy_log.err(failure, "Unhandled Error Processing Request.")
                return
            request.processingFailed(failure)

        def write(result: object) -> None:
            if isinstance(result, str):
                result = result.encode("utf-8")
            if isinstance(result, bytes):
                request.write(result)
            if not finished():
                request.finish()

        d.addErrback(failed)
        d.addCallback(write)
        d.addErrback(legacy_log.err, _why="Unhandled Error writing response")
        return NOT_DONE_YET

    def _routable_host(self, request: Any) -> bool:
        """Whether werkzeug takes the request's Host (as Klein would bind it)."""
        values = request.requestHeaders.getRawHeaders(b"host")
        host = values[-1] if values else None
        if host in self._hosts:
            return True
        try:
            scheme, server_name, _, path_info, script_name = extractURLparts(request)
            self._app.url_map.bind(
                server_name,
                script_name,
                path_info=path_info,
                default_method=request.method.decode("utf-8"),
                url_scheme=scheme,
            )
        except Exception:  # noqa: BLE001 - Klein answers it, as before
            return False
        if len(self._hosts) >= _KNOWN_HOSTS:
            self._hosts.clear()
        self._hosts.add(host)
        return True
