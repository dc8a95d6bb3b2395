"""Chunk sources for upstreams that stream in another wire format.

A *translator* (e.g. :class:`~twisted_gw.providers.anthropic_stream.AnthropicStreamTranslator`)
has ``feed(event) -> list[dict]`` (OpenAI chunk objects, maybe none), raises
:class:`UpstreamStreamError` when the upstream reports a failure in the stream
or sends an event it cannot read, and has ``complete``: true once the upstream
said its stream is whole (Anthropic's ``message_stop``). :class:`TranslatingDialect`
makes it a dialect of the one SSE body reader, so parsing, transport handling,
backpressure, cancellation and the end-of-stream rules
(:func:`~twisted_gw.providers.sources.stream_end`) are the same for every
provider: the stream ends at the terminal event even if the upstream keeps
its body open, and a body that ends after chunks without it was cut.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted_gw.jsonutil import dumps
from twisted_gw.providers.sources import HTTPSSESource, UpstreamStreamError
from twisted_gw.sse import SSEEvent

__all__ = ["StreamTranslator", "TranslatedSSESource", "TranslatingDialect", "UpstreamStreamError"]


class StreamTranslator(Protocol):
    complete: bool

    def feed(self, event: SSEEvent) -> list[dict]: ...


class TranslatingDialect:
    """A translator as a dialect: its chunk objects, serialized."""

    requires_terminal = True

    def __init__(self, translator: StreamTranslator) -> None:
        self.translator = translator

    @property
    def complete(self) -> bool:
        return self.translator.complete

    def feed(self, event: SSEEvent) -> list[bytes]:
        return [dumps(chunk) for chunk in self.translator.feed(event)]


class TranslatedSSESource(HTTPSSESource):
    """An upstream SSE body in a foreign format, as a source of OpenAI chunks."""

    def __init__(
        self,
        response: Any,
        translator: StreamTranslator,
        max_event_bytes: int = 1 << 20,
        reactor: Any = None,
    ) -> None:
        super().__init__(
            response,
            reactor,
            max_event_bytes=max_event_bytes,
            dialect=TranslatingDialect(translator),
        )
        self.translator = translator
