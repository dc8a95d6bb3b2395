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

        Fires with a chunk source (see twisted_gw.streaming.source) once the
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
