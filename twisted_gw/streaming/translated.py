"""A chunk source for upstreams that stream in another wire format.

:class:`TranslatedSSESource` reads an upstream ``text/event-stream`` body with
the same parser, transport handling, backpressure and cancellation as
:class:`~twisted_gw.streaming.source.HTTPSSESource`, but hands each parsed
event to a *translator* (e.g. the Anthropic one) and feeds the sink the OpenAI
chunks it returns. So the relay, and every guarantee of CONTRACT 4.3, is the
same for every provider.

A translator has ``feed(event) -> list[dict]`` (OpenAI chunk objects, maybe
none), raises :class:`UpstreamStreamError` when the upstream reports a failure
in the stream or sends an event it cannot read, and has ``complete``: true once
the upstream said its stream is whole (Anthropic's ``message_stop``). Only a
complete stream ends cleanly (``[DONE]``); an upstream that closes its body
before that was cut, unless it sent nothing at all (an empty stream).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from twisted_gw.jsonutil import dumps
from twisted_gw.streaming.source import ChunkSink, HTTPSSESource, _SSEBodyProtocol
from twisted_gw.streaming.sse import SSEEvent


class UpstreamStreamError(Exception):
    """The upstream failed inside a stream; the text is secret-free."""


class StreamTranslator(Protocol):
    complete: bool

    def feed(self, event: SSEEvent) -> list[dict]: ...


class _TranslatingBodyProtocol(_SSEBodyProtocol):
    """Like the plain SSE body protocol, but each event goes through the
    source's translator, which may emit zero or more OpenAI chunks."""

    def deliver(self, events: list[SSEEvent]) -> None:
        source = self.source
        translator = source.translator
        for event in events:
            if source.closed:
                return
            try:
                chunks = translator.feed(event)
            except UpstreamStreamError as e:
                source.fail(str(e))
                return
            for chunk in chunks:
                if source.closed:
                    return
                source.emitted += 1
                source.sink.chunk(dumps(chunk))

    def connectionLost(self, reason: Failure = None) -> None:
        source = self.source
        if source.closed:
            return
        source.closed = True
        if source.translator.complete:  # whole, however the connection then ended
            source.sink.upstream_ended(True, "end of stream")
        elif (reason is None or reason.check(ResponseDone)) and not source.emitted:
            source.sink.upstream_ended(True, "end of stream")  # empty: not an error
        elif reason is None or reason.check(ResponseDone):
            source.sink.upstream_ended(False, "upstream stream ended before its final event")
        else:
            source.sink.upstream_ended(False, "upstream connection lost mid-stream")


class TranslatedSSESource(HTTPSSESource):
    """An upstream SSE body in a foreign format, as a source of OpenAI chunks."""

    def __init__(
        self,
        response: Any,
        translator: StreamTranslator,
        max_event_bytes: int = 1 << 20,
        reactor: Any = None,
    ) -> None:
        super().__init__(response, reactor, max_event_bytes=max_event_bytes)
        self.translator = translator
        self.emitted = 0

    def start(self, sink: ChunkSink) -> None:
        self.sink = sink
        self._protocol = _TranslatingBodyProtocol(self)  # type: ignore[assignment]
        self.response.deliverBody(self._protocol)
