"""The provider seam: one implementation per upstream family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zope.interface import Attribute, Interface

CHAT = "chat/completions"
EMBEDDINGS = "embeddings"


@dataclass
class ProviderResult:
    """A successful non-stream upstream answer.

    ``body`` is relayed to the client as it came (relay, don't reparse);
    ``usage`` is what the finalize hooks count.
    """

    body: bytes
    usage: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


class IChunkSink(Interface):
    """What a chunk source feeds: the relay of one streamed request."""

    def chunk(data):
        """One OpenAI ``chat.completion.chunk`` as the raw JSON bytes to relay."""

    def flush():
        """The chunks of one upstream read are in: write them as one."""

    def upstream_ended(clean, detail):
        """The stream is over, once: ``clean`` (``[DONE]`` follows) or cut;
        ``detail`` says what happened, for a 502 before the first chunk."""


class IChunkSource(Interface):
    """Where a streamed answer's chunks come from (an upstream body, a list).

    ``start(sink)`` once; then the sink is fed until ``upstream_ended``. The
    relay drives flow control with ``pause``/``resume`` and ends it early with
    ``cancel`` (client gone, timeout), which closes the upstream connection;
    after ``cancel`` nothing more reaches the sink."""

    def start(sink):
        """Begin feeding ``sink`` (an IChunkSink)."""

    def pause():
        """Stop feeding until ``resume`` (the client is not reading)."""

    def resume():
        """Feed again after ``pause``."""

    def cancel():
        """Stop for good and release the upstream; no ``upstream_ended`` follows."""


class IProvider(Interface):
    """Turns an OpenAI-shaped request for a configured model into an upstream call."""

    name = Attribute("Provider family name as written in a model's ``model`` field.")
    endpoints = Attribute("frozenset of the endpoints it serves (CHAT, EMBEDDINGS).")

    def chat(model, body, reactor):
        """Non-stream chat completion.

        ``model`` is the Model entity, ``body`` the parsed client request (the
        provider substitutes the upstream model id). Returns a Deferred that
        fires with a ProviderResult or fails with a GatewayError; cancelling it
        cancels the upstream request."""

    def stream_chat(model, body, reactor):
        """Streaming chat completion (CONTRACT 4.3).

        Fires with an IChunkSource once the
        upstream accepted the request; an upstream error status fails with the
        4.1 GatewayError instead. Cancelling it cancels the upstream request.
        The provider sends ``stream_options.include_usage: true`` upstream."""

    def embeddings(model, body, reactor):
        """Embeddings; same contract as ``chat``; the response ``model`` is the
        client's model name."""


def last_user_text(messages: Any) -> str:
    """The text of the last user message (string content or text parts)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    part.get("text", "")
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text"
                )
            return ""
    return ""
