"""StreamRelay: writes one upstream stream to the client as SSE (CONTRACT 4.3).

The relay is the request's IChunkSink (a chunk source feeds it) and its push
producer (the client's backpressure reaches the upstream through it). It
owns the bytes on the wire, nothing else: every decision about how the
request ends is its owner's (:class:`twisted_gw.proxy.exchange.Exchange`),
which it tells what happened and which tells it what to write:

======================================  =======================================
what happened                           what the client gets (end reason)
======================================  =======================================
clean end after >= 1 chunk              ``data: [DONE]``, end (``done``)
clean end, no chunk                     200 event-stream, no events (``empty``)
cut / malformed event after a chunk     end without ``[DONE]`` (``upstream_cut``)
cut / malformed before the first chunk  502 JSON (``upstream_error``)
no chunk for timeout mid-stream         end without ``[DONE]`` (``timeout``)
client gone                             nothing more written (``client_gone``)
======================================  =======================================

Headers are held until the first chunk, so every failure before it can still
be a JSON error. With the gateway's reactor (twisted_gw.reactor.ITurnWrites)
the headers and the first event are sent at once, and the frames of the
rest of an upstream read go out as one write at the turn's end; with
another reactor each ``flush`` writes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

from twisted_gw.headernames import canonical
from twisted_gw.hooks.context import RequestContext
from twisted_gw.jsonutil import read
from twisted_gw.providers.interfaces import IChunkSink
from twisted_gw.proxy.headers import set_answer_headers
from twisted_gw.reactor import ITurnWrites
from twisted_gw.spend.prices import content_chars

if TYPE_CHECKING:
    from twisted_gw.proxy.wire import Framer

_DONE_FRAME = b"data: [DONE]\n\n"
#: an event stream's own headers (``x-accel-buffering``: reverse proxies must not buffer it)
_SSE_HEADERS = (
    (canonical(b"content-type"), b"text/event-stream"),
    (canonical(b"cache-control"), b"no-cache"),
    (canonical(b"x-accel-buffering"), b"no"),
)
_REQUEST_ID = canonical(b"x-request-id")


class RelayOwner(Protocol):
    """What the relay tells the request's owner."""

    #: the reactor the request is served by
    reactor: Any

    def first_chunk(self) -> None: ...

    def activity(self) -> None: ...

    def paused(self, paused: bool) -> None: ...

    def upstream_ended(self, clean: bool, detail: str) -> None: ...

    def malformed(self) -> None: ...

    def client_gone(self) -> None: ...


@implementer(IChunkSink, IPushProducer)
class StreamRelay:
    """Relays one upstream stream to one client request."""

    def __init__(
        self,
        request: Request,
        ctx: RequestContext,
        owner: RelayOwner,
        framer: Framer | None = None,
        tap: Callable[[dict], None] | None = None,
    ) -> None:
        self.request = request
        #: sees each parsed chunk (the request's trace); None: tracing is off
        self.tap = tap
        self.ctx = ctx
        self.owner = owner
        #: writes the client API's events (Messages, Responses); None: chat as it came
        self.framer = framer
        self.chunks = 0
        self.started = False
        self.ended = False
        self._producing = False
        self._frames: list[bytes] = []  # parsed from the current upstream read
        reactor = owner.reactor
        #: the reactor's end of turn, where one read's frames are written (None: at once)
        self._turns = reactor if ITurnWrites.providedBy(reactor) else None
        self._flush_due = False  # a write at the turn's end is asked for

    # -- IChunkSink: what the source feeds ------------------------------------------

    def chunk(self, data: bytes) -> None:
        """One upstream chunk (raw JSON bytes): check it, then queue its frame."""
        if self.ended:
            return
        try:
            doc = read(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.owner.malformed()
            return
        ctx = self.ctx
        usage = doc.get("usage")
        if isinstance(usage, dict):
            ctx.usage = usage
        if ctx.priced:  # what a cost estimate counts when no usage comes (issue 17)
            ctx.relayed_chars += content_chars(doc)
        if self.tap is not None:
            self.tap(doc)
        first = not self.started
        if first:
            self.owner.first_chunk()
            self.start_response()
        self.owner.activity()
        self.chunks += 1
        framer = self.framer
        if framer is not None:
            self._frames.append(framer.chunk(doc, data))
            if framer.done:  # the chunk cannot be carried: the framer said so
                self.owner.malformed()
                return
        else:
            if 10 in data:  # an LF: a multi-line data field upstream, kept one event
                data = data.replace(b"\n", b"\ndata: ")
            self._frames.append(b"data: " + data + b"\n\n")
        if first and self._turns is not None:
            # the head and the first token leave now, not after the rest of the read
            self._write()
            channel = self.request.channel
            if channel is not None:
                self._turns.send_now(channel.transport)

    def flush(self) -> None:
        """The source read what it had: write its frames. With the gateway's
        reactor the write waits for the turn's end, so the frames of every
        event of one read (an HTTP chunk each, so many ``flush`` calls) go
        out as one write; the reactor sends then anyway, so this costs no
        latency and saves a write per event. Else at once."""
        if self._frames and not self.ended:
            if self._turns is None:
                self._write()
            elif not self._flush_due:
                self._flush_due = True
                self._turns.at_turn_end(self._turn_end)

    def _turn_end(self) -> None:
        self._flush_due = False
        if not self.ended:
            self._write()

    def _write(self) -> None:
        frames = self._frames
        if frames:
            self._frames = []
            self.request.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def upstream_ended(self, clean: bool, detail: str) -> None:
        if not self.ended:
            self.owner.upstream_ended(clean, detail)

    # -- what the owner tells it to write ------------------------------------------------

    def start_response(self) -> None:
        """The stream's status and headers (at the first chunk, or for an empty stream)."""
        request = self.request
        self.started = True
        self.ctx.status = 200
        request.setResponseCode(200)
        set_answer_headers(
            request.responseHeaders,
            (*_SSE_HEADERS, (_REQUEST_ID, self.ctx.request_id.encode())),
            self.ctx.response_headers,
        )
        request.registerProducer(self, True)
        self._producing = True

    def end(self, done: bool, clean: bool | None = None, detail: str = "") -> None:
        """End the event stream (the headers are out): ``[DONE]`` only after a
        clean end with chunks; a cut stream just stops, so the client can
        tell. A framer writes its own last events instead (``clean``: the
        upstream ended well, with or without chunks; ``detail``: why not)."""
        if self.ended:
            return
        if self.framer is not None:
            self._frames.append(self.framer.end(done if clean is None else clean, detail))
        elif done:
            self._frames.append(_DONE_FRAME)
        self._write()
        self.ended = True
        self._unregister()
        self.request.finish()

    def stop(self) -> None:
        """The client is gone: write nothing more."""
        self.ended = True
        self._frames = []
        self._unregister()

    def _unregister(self) -> None:
        if self._producing:  # the transport calls stopProducing before connectionLost
            self._producing = False
            if self.request.channel is not None:  # a lost connection forgot it already
                self.request.unregisterProducer()

    # -- IPushProducer: the client's side of backpressure ------------------------------

    def pauseProducing(self) -> None:
        self.owner.paused(True)

    def resumeProducing(self) -> None:
        self.owner.paused(False)

    def stopProducing(self) -> None:
        self.owner.client_gone()
