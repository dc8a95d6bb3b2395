"""Where stream chunks come from: an upstream SSE body, or a local list.

Both are :class:`~twisted_gw.providers.interfaces.IChunkSource`: a source
calls its sink's ``chunk(data)`` for every OpenAI chunk (the raw JSON bytes of
one event, relayed unchanged), ``flush()`` after each upstream read, and
``upstream_ended(clean, detail)`` once. The relay drives it back with
``pause``/``resume`` (backpressure) and ``cancel`` (client gone, timeout):
cancelling closes the upstream connection.

An upstream body is read by one protocol for every wire format: a *dialect*
turns each parsed SSE event into OpenAI chunks and says when the upstream
declared its stream whole (OpenAI's ``[DONE]``, Anthropic's
``message_stop``). The rules for how a stream ends live in one function,
:func:`stream_end`, whatever the dialect.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from zope.interface import implementer

from twisted_gw._outbound import BodyCloser
from twisted_gw.observability.logsafe import escape
from twisted_gw.providers.interfaces import IChunkSink, IChunkSource
from twisted_gw.sse import EventTooLarge, SSEEvent, SSEParser

DONE = b"[DONE]"

log = Logger()


class UpstreamStreamError(Exception):
    """The upstream failed inside a stream; the text is secret-free."""


class Dialect(Protocol):
    """One upstream stream format, read event by event."""

    #: the upstream said its stream is whole ([DONE], message_stop)
    complete: bool
    #: a body that ends cleanly after chunks but without the terminal event
    #: was cut (Anthropic); else it is whole (OpenAI servers may omit [DONE])
    requires_terminal: bool

    def feed(self, event: SSEEvent) -> list[bytes]:
        """The OpenAI chunks (JSON bytes) of one event; may raise
        :class:`UpstreamStreamError`."""


class OpenAIDialect:
    """OpenAI's own stream: each event's data is a chunk, ``[DONE]`` ends it."""

    requires_terminal = False

    def __init__(self) -> None:
        self.complete = False

    def feed(self, event: SSEEvent) -> list[bytes]:
        if self.complete:
            return []  # nothing after [DONE] is part of the stream
        if event.data == DONE:
            self.complete = True
            return []
        return [event.data]


class AnthropicNativeDialect:
    """Anthropic's own stream relayed to a Messages client as it came
    (CONTRACT-NEXT 2.2, native): each event's data is passed on, ``ping``
    and ``error`` included; ``message_stop`` (passed on too) ends it."""

    requires_terminal = True

    def __init__(self) -> None:
        self.complete = False

    def feed(self, event: SSEEvent) -> list[bytes]:
        if self.complete:
            return []
        if event.event == b"message_stop":
            self.complete = True
        return [event.data]


#: how an upstream body ended: whole by HTTP's rules, ended with the
#: connection (no length, no chunking), or lost
BODY_DONE, BODY_CLOSED, BODY_LOST = "done", "closed", "lost"


def stream_end(
    complete: bool, body: str, emitted: int, requires_terminal: bool
) -> tuple[bool, str]:
    """The one end-of-stream rule, for every dialect: ``(clean, detail)``.

    - The upstream declared the stream whole: clean, however the body then ends
      (the source reports it at once and only drains the rest).
    - A body that is whole by HTTP's rules: clean when it carried no chunk (an
      empty stream), or when the dialect needs no terminal event; cut when the
      dialect does (Anthropic without ``message_stop``).
    - A body that ended with its connection (no length or chunking) could have
      been cut anywhere: whole only if declared so.
    - A lost connection: cut.
    """
    if complete:
        return True, "end of stream"
    if body == BODY_DONE:
        if emitted and requires_terminal:
            return False, "upstream stream ended before its final event"
        return True, "end of stream"
    if body == BODY_CLOSED:
        return False, "connection closed"
    return False, "upstream connection lost mid-stream"


class SSEBodyProtocol(TwistedProtocol):
    """Receives an upstream response body and feeds the dialect's chunks to the
    sink; another framing of events (AWS's binary one) subclasses it and
    replaces ``dataReceived``."""

    def __init__(self, source: HTTPSSESource) -> None:
        self.source = source
        self.parser = SSEParser(source.max_event_bytes)

    def connectionMade(self) -> None:
        if self.source.closed:  # cancelled before the body was asked for
            self.source.abort(self.transport)

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except EventTooLarge as e:
            self.deliver(e.events)  # what came before it still counts
            source = self.source
            if not source.closed:
                source.sink.flush()
                log.warn(
                    "upstream stream cut: {error} (server.proxy.max_event_bytes)",
                    error=escape(str(e)),
                )
                source.fail(str(e))
            return
        if events:
            self.deliver(events)
        source = self.source
        if not source.closed:
            source.sink.flush()

    def deliver(self, events: list[SSEEvent]) -> None:
        """Hand the chunks of parsed events to the sink (stops when the source
        closes; ends the stream at once when the dialect says it is whole)."""
        source = self.source
        dialect = source.dialect
        for event in events:
            if source.closed:
                return
            try:
                chunks = dialect.feed(event)
            except UpstreamStreamError as e:
                source.fail(str(e))
                return
            for chunk in chunks:
                if source.closed:
                    return
                source.emitted += 1
                source.sink.chunk(chunk)
            if dialect.complete:
                source.done()  # the stream is over, whether or not the body ends now
                return

    def connectionLost(self, reason: Failure = None) -> None:
        source = self.source
        source.stop_draining()
        source.closer.body_ended()
        if source.closed:
            return
        source.closed = True
        if reason is None or reason.check(ResponseDone):
            body = BODY_DONE
        elif reason.check(PotentialDataLoss):
            body = BODY_CLOSED
        else:
            body = BODY_LOST
        dialect = source.dialect
        source.sink.upstream_ended(
            *stream_end(dialect.complete, body, source.emitted, dialect.requires_terminal)
        )


@implementer(IChunkSource)
class HTTPSSESource:
    """An upstream ``text/event-stream`` response body as a chunk source."""

    #: reads the body (a subclass with another framing sets its own)
    body_protocol: type[SSEBodyProtocol] = SSEBodyProtocol

    def __init__(
        self,
        response: IResponse,
        reactor: IReactorTime | None = None,
        drain_timeout: float = 5.0,
        max_event_bytes: int = 1 << 20,
        dialect: Dialect | None = None,
    ) -> None:
        self.response = response
        self.reactor = reactor
        self.drain_timeout = drain_timeout
        #: the bound on one event (server.proxy.max_event_bytes)
        self.max_event_bytes = max_event_bytes
        self.dialect: Dialect = dialect if dialect is not None else OpenAIDialect()
        self.sink: IChunkSink | None = None
        self.closed = False
        self.emitted = 0
        self._protocol: SSEBodyProtocol | None = None
        self._drain: IDelayedCall | None = None
        self.closer = BodyCloser(reactor)

    @property
    def saw_done(self) -> bool:
        """The upstream declared its stream whole."""
        return self.dialect.complete

    def done(self) -> None:
        """The upstream declared the stream whole: report a clean end now, then
        let the rest of the body drain so the connection can go back to the
        pool, but abort it if the upstream keeps it open longer than
        ``drain_timeout`` (a client must not wait on an upstream that forgot
        to end its body)."""
        if self.closed:
            return
        self.closed = True
        self.sink.flush()
        self.sink.upstream_ended(True, "end of stream")
        if self.reactor is not None and self._protocol is not None:
            self._drain = self.reactor.callLater(
                self.drain_timeout, self.abort, self._protocol.transport
            )

    def fail(self, detail: str) -> None:
        """The stream cannot go on (an event over the bound, a failure the
        upstream reported in it): drop the upstream connection and end the
        stream unclean (no ``[DONE]``; a 502 if nothing was sent yet)."""
        if self.closed:
            return
        self.closed = True
        transport = self._transport()
        if transport is not None:
            self.abort(transport)
        self.sink.upstream_ended(False, detail)

    def stop_draining(self) -> None:
        if self._drain is not None and self._drain.active():
            self._drain.cancel()
        self._drain = None

    def start(self, sink: IChunkSink) -> None:
        self.sink = sink
        self._protocol = self.body_protocol(self)
        self.response.deliverBody(self._protocol)

    def _transport(self) -> ITransport | None:
        return self._protocol.transport if self._protocol is not None else None

    def pause(self) -> None:
        transport = self._transport()
        if transport is not None and not self.closed:
            transport.pauseProducing()

    def resume(self) -> None:
        transport = self._transport()
        if transport is not None and not self.closed:
            transport.resumeProducing()

    def cancel(self) -> None:
        """Stop reading and close the upstream connection now."""
        if self.closed:
            return
        self.closed = True
        transport = self._transport()
        if transport is None:  # never started: take the body only to drop it
            self.sink = _NullSink()
            self._protocol = self.body_protocol(self)
            self.response.deliverBody(self._protocol)
        else:
            self.abort(transport)

    def abort(self, transport: ITransport) -> None:
        """Close the connection under the body, not to be kept alive (on the
        next reactor turn: see BodyCloser, why)."""
        self.closer.close(transport)


class _NullSink:
    def chunk(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def upstream_ended(self, clean: bool, detail: str) -> None:
        pass


@implementer(IChunkSource)
class ListSource:
    """A finished list of chunks (the mock provider), honouring pause/cancel."""

    def __init__(self, chunks: list[bytes], reactor: IReactorTime) -> None:
        self.chunks = chunks
        self.reactor = reactor
        self.sink: IChunkSink | None = None
        self.closed = False
        self._paused = False
        self._next = 0

    def start(self, sink: IChunkSink) -> None:
        self.sink = sink
        self._pump()

    def _pump(self) -> None:
        while not self.closed and not self._paused and self._next < len(self.chunks):
            data = self.chunks[self._next]
            self._next += 1
            self.sink.chunk(data)
        if not self.closed:
            self.sink.flush()
        if not self.closed and not self._paused:
            self.closed = True
            self.sink.upstream_ended(True, "end of stream")

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        if self._paused and not self.closed:
            self._paused = False
            self.reactor.callLater(0, self._pump)

    def cancel(self) -> None:
        self.closed = True
