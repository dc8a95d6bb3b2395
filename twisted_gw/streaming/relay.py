"""StreamRelay: one streaming request, from the upstream's first byte to
finalize (CONTRACT 4.3, 4.4).

It is the request's single owner of everything the stream holds: the pending
upstream call, the chunk source, the timer, the client's producer slot and
the finalize call. Whatever happens first ends it, through :meth:`_close`:

======================================  =======================================
what happened                           what the client gets (end reason)
======================================  =======================================
clean end after >= 1 chunk              ``data: [DONE]``, end (``done``)
clean end, no chunk                     200 event-stream, no events (``empty``)
cut / malformed event after a chunk     end without ``[DONE]`` (``upstream_cut``)
cut / malformed before the first chunk  502 JSON (``upstream_error``)
upstream error status                   the 4.1 JSON error (``upstream_error``)
no first chunk within timeout           504 JSON (``timeout``)
no chunk for timeout mid-stream         end without ``[DONE]`` (``timeout``)
client gone                             nothing more written (``client_gone``)
======================================  =======================================

Response headers are held until the first chunk, so every failure before it
can still be a JSON error. Backpressure: the relay is the request's push
producer, and pauses the upstream transport while the client is not reading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_gw.errors import GatewayError, internal_error, provider_error, request_timeout
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.manager import HookManager
from twisted_gw.jsonutil import read

log = Logger()

OPENING, WAITING, STREAMING, CLOSED = range(4)
_DONE_FRAME = b"data: [DONE]\n\n"


@implementer(IPushProducer)
class StreamRelay:
    """Relays one upstream stream to one client request; finalizes once."""

    def __init__(
        self,
        request: Any,
        ctx: RequestContext,
        hooks: HookManager,
        reactor: Any,
        timeout: float,
        write_error: Callable[[Any, RequestContext, GatewayError], None],
    ) -> None:
        self.request = request
        self.ctx = ctx
        self.hooks = hooks
        self.reactor = reactor
        self.timeout = timeout
        self.write_error = write_error
        self.state = OPENING
        self.chunks = 0
        self.source: Any = None
        self._opening: defer.Deferred | None = None
        self._last_activity = 0.0
        self._timer: Any = None
        self._producing = False
        self._paused = False  # by the client's backpressure: not an idle upstream
        self._frames: list[bytes] = []  # parsed from the current upstream read
        #: set while the relay cancels the upstream: whatever that fires
        #: synchronously (a failed opening, an end) is the relay's own doing
        self._cancelling = False
        #: fires (with None) when the request is over; cancelling it = client gone
        self.finished = defer.Deferred(lambda _: self._client_gone())

    # -- start ---------------------------------------------------------------

    def run(self, opening: defer.Deferred) -> defer.Deferred:
        """Wait for the provider's source, relay it; returns ``finished``."""
        self._opening = opening
        self._last_activity = self.reactor.seconds()
        self._timer = self.reactor.callLater(self.timeout, self._timed_out)
        self.request.notifyFinish().addErrback(lambda _: self._client_gone())
        opening.addCallbacks(self._opened, self._open_failed).addErrback(self._crashed)
        return self.finished

    def _opened(self, source: Any) -> None:
        self._opening = None
        if self.state == CLOSED:  # raced with a timeout or the client leaving
            source.cancel()
            return
        self.state = WAITING
        self.source = source
        source.start(self)

    def _open_failed(self, failure: Failure) -> None:
        self._opening = None
        if self.state == CLOSED or self._cancelling or failure.check(defer.CancelledError):
            return
        if failure.check(GatewayError):
            self._fail(failure.value)
        else:
            log.failure(
                "stream {rid}: opening the upstream failed", failure, rid=self.ctx.request_id
            )
            self._fail(provider_error("upstream request failed"))

    # -- the sink the source feeds -------------------------------------------------

    def chunk(self, data: bytes) -> None:
        """One upstream chunk (raw JSON bytes): check it, then write it at once."""
        if self.state == CLOSED or self._cancelling:
            return
        try:
            doc = read(data)
        except ValueError:
            self._malformed()
            return
        if not isinstance(doc, dict):
            self._malformed()
            return
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.ctx.usage = usage
        self._last_activity = now = self.reactor.seconds()
        if self.state == WAITING:
            self._start_response()
            self.ctx.first_token_at = now
        self.chunks += 1
        if b"\n" in data:  # an upstream multi-line data field: keep it one event
            data = data.replace(b"\n", b"\ndata: ")
        self._frames.append(b"data: " + data + b"\n\n")

    def flush(self) -> None:
        """Write the frames parsed from one upstream read as one write (the
        source calls it after each read; Twisted sends once per reactor pass
        anyway, so batching costs no latency and saves a write per event)."""
        frames = self._frames
        if frames and self.state != CLOSED:
            self._frames = []
            self.request.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def upstream_ended(self, clean: bool, detail: str) -> None:
        if self.state == CLOSED or self._cancelling:
            return
        self.source = None  # it is over; nothing to cancel
        self.ctx.upstream_finished = self.reactor.seconds()
        if self.state == WAITING:
            if clean:
                self._start_response()
                self._end("empty")
            else:
                self._fail(provider_error(f"{detail} before the first chunk"))
        elif clean:
            self._frames.append(_DONE_FRAME)
            self._end("done")
        else:
            self._end("upstream_cut")

    def _malformed(self) -> None:
        if self.state == WAITING:
            self._fail(provider_error("malformed event in the upstream stream"))
        else:
            log.warn("stream {rid}: malformed upstream event, stream cut", rid=self.ctx.request_id)
            self._end("upstream_cut")

    # -- response ------------------------------------------------------------------

    def _start_response(self) -> None:
        request = self.request
        self.state = STREAMING
        self.ctx.status = 200
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # tell reverse proxies not to buffer
        request.setHeader(b"x-request-id", self.ctx.request_id.encode())
        for name, value in self.ctx.response_headers.items():
            request.setHeader(name, value)
        request.registerProducer(self, True)
        self._producing = True

    def _end(self, reason: str) -> None:
        """End the event stream (the headers are out) and finalize."""
        request = self.request
        self.flush()
        if self._producing:
            self._producing = False
            request.unregisterProducer()
        request.finish()
        self.ctx.finished_at = self.reactor.seconds()
        self._close(reason)

    def _fail(self, error: GatewayError) -> None:
        """A JSON error instead of a stream (nothing was sent yet)."""
        self.write_error(self.request, self.ctx, error)
        self.ctx.finished_at = self.reactor.seconds()
        self._close(error.reason)

    # -- the other ways it ends ----------------------------------------------------------

    def _timed_out(self) -> None:
        self._timer = None
        if self.state == CLOSED:
            return
        idle = self.reactor.seconds() - self._last_activity
        if self.state == STREAMING and (idle < self.timeout or self._paused):
            if self._paused:
                idle = 0.0
            self._timer = self.reactor.callLater(self.timeout - idle, self._timed_out)
            return
        self._cancel_upstream()
        if self.state == STREAMING:
            log.warn(
                "stream {rid}: no chunk for {t}s, stream cut",
                rid=self.ctx.request_id,
                t=self.timeout,
            )
            self._end("timeout")
        else:
            self._fail(request_timeout())

    def _client_gone(self) -> None:
        if self.state == CLOSED:
            return
        self.ctx.client_gone = True  # nothing may be written from now on
        self._cancel_upstream()
        if self._producing:  # the transport calls stopProducing before connectionLost
            self._producing = False
            self.request.unregisterProducer()
        self.ctx.status = self.ctx.status or 499
        self._close("client_gone")

    def _cancel_upstream(self) -> None:
        self._cancelling = True
        try:
            if self._opening is not None:
                opening, self._opening = self._opening, None
                opening.cancel()
            if self.source is not None:
                source, self.source = self.source, None
                source.cancel()
        finally:
            self._cancelling = False

    def _crashed(self, failure: Failure) -> None:
        """A bug in the relay's own callbacks: log it and still end the request
        (a JSON 500 if nothing was sent, else a cut stream) and finalize once,
        rather than leave an unhandled error and a request that never ends."""
        log.failure("stream {rid}: unexpected error", failure, rid=self.ctx.request_id)
        if self.state == CLOSED:
            return
        try:
            if self.state == STREAMING:
                self._end("upstream_cut")
            else:
                self._fail(internal_error())
        except Exception:  # noqa: BLE001 - beyond saving: drop the connection, finalize
            log.failure("stream {rid}: could not end the response", rid=self.ctx.request_id)
            self.request.loseConnection()
            self._close("upstream_error")

    def _close(self, reason: str) -> None:
        """The one exit: stop everything, finalize exactly once."""
        self.state = CLOSED
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._cancel_upstream()
        self.hooks.finalize(self.ctx, reason)
        if not self.finished.called:
            self.finished.callback(None)

    # -- IPushProducer: the client's side of backpressure ------------------------------

    def pauseProducing(self) -> None:
        self._paused = True  # the client is slow: no chunk coming is not the upstream's fault
        if self.source is not None:
            self.source.pause()

    def resumeProducing(self) -> None:
        self._paused = False
        self._last_activity = self.reactor.seconds()
        if self.source is not None:
            self.source.resume()

    def stopProducing(self) -> None:
        self._client_gone()
