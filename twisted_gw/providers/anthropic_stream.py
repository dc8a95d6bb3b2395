"""Anthropic's streaming events -> OpenAI ``chat.completion.chunk`` objects.

A small stateful translator, pure (no I/O), fed one parsed SSE event at a
time by :class:`~twisted_gw.providers.translated.TranslatedSSESource`:

==============================  ===============================================
Anthropic event                 OpenAI chunks
==============================  ===============================================
message_start                   the role chunk (``role: assistant``, ``""``);
                                id, model and input usage are remembered
content_block_start text        content, if the block starts with text
content_block_start tool_use    a tool-call delta: ``index`` (0, 1, ... per
                                tool call, as OpenAI counts), ``id``, ``type``,
                                ``function.name``, empty ``arguments``
content_block_delta text_delta  ``delta.content``
... input_json_delta            ``tool_calls[{index, function.arguments}]``
... thinking_delta              ``delta.reasoning_content`` (DeepSeek's name)
message_delta                   the finish chunk (``finish_reason`` mapped);
                                output usage remembered (cumulative counts)
message_stop                    the finish chunk if none yet, then the usage
                                chunk (``choices: []``); the stream is complete
ping, content_block_stop,       nothing
unknown events and deltas
error                           :class:`UpstreamStreamError`: the stream ends
                                without ``[DONE]``
==============================  ===============================================

The usage chunk is always sent, as on the openai path, where the gateway asks
every upstream for it (CONTRACT 4.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from twisted_gw.jsonutil import loads
from twisted_gw.providers.anthropic_translate import finish_reason, openai_usage, tool_arguments
from twisted_gw.providers.errors import redact
from twisted_gw.providers.translated import UpstreamStreamError
from twisted_gw.sse import SSEEvent

_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class ChunkTranslator:
    """The chunks every foreign stream's translator sends: a subclass sets
    ``id``, ``created``, ``model`` and ``started`` (False)."""

    id: str
    created: int
    model: str
    #: the role chunk was sent
    started: bool

    def chunk(self, delta: dict, finish: str | None = None) -> dict:
        """A ``chat.completion.chunk`` of one choice with ``delta``."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def start(self, out: list[dict]) -> list[dict]:
        """The role chunk first, whatever event comes first."""
        if not self.started:
            self.started = True
            out.insert(0, self.chunk({"role": "assistant", "content": ""}))
        return out


class AnthropicStreamTranslator(ChunkTranslator):
    """Translates one Anthropic stream; keep one per request."""

    def __init__(self, created: int, model: str = "", secrets: Iterable[str | None] = ()) -> None:
        self.created = created
        self.id = ""
        self.model = model
        self.secrets = tuple(secrets)
        #: true once ``message_stop`` arrived: only then does the stream end cleanly
        self.complete = False
        self.usage: dict[str, int] = {}
        self.started = False
        self._finished = False
        self._stop_reason: Any = None
        self._tools: dict[Any, int] = {}  # Anthropic block index -> OpenAI tool-call index

    def feed(self, event: SSEEvent) -> list[dict]:
        """The OpenAI chunks for one event (often none)."""
        if self.complete:
            return []  # nothing after message_stop is part of the message
        try:
            doc = loads(event.data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise UpstreamStreamError("malformed event in the upstream stream")
        kind = doc.get("type")
        if not isinstance(kind, str):
            kind = event.event.decode("utf-8", "replace")
        handler = self._handlers.get(kind)
        return handler(self, doc) if handler is not None else []  # ping and the unknown: none

    # -- chunks ----------------------------------------------------------------

    def _remember_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for name in _USAGE_FIELDS:
                value = usage.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.usage[name] = value  # cumulative counts: the latest wins

    # -- events ----------------------------------------------------------------

    def _on_message_start(self, doc: dict) -> list[dict]:
        message = doc.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("id"), str):
                self.id = message["id"]
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            self._remember_usage(message.get("usage"))
        return self.start([])

    def _on_content_block_start(self, doc: dict) -> list[dict]:
        block = doc.get("content_block")
        if not isinstance(block, dict):
            return []
        kind = block.get("type")
        if kind == "tool_use":
            index = self._tools[doc.get("index")] = len(self._tools)
            initial = block.get("input")
            call = {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {
                    "name": block.get("name"),
                    # streamed tools start with {} and send their input as deltas
                    "arguments": tool_arguments(initial) if initial else "",
                },
            }
            return self.start([self.chunk({"tool_calls": [call]})])
        if kind == "text" and block.get("text"):
            return self.start([self.chunk({"content": block["text"]})])
        if kind == "thinking" and block.get("thinking"):
            return self.start([self.chunk({"reasoning_content": block["thinking"]})])
        return []

    def _on_content_block_delta(self, doc: dict) -> list[dict]:
        delta = doc.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            return self.start([self.chunk({"content": delta["text"]})])
        if kind == "input_json_delta":
            index = self._tools.get(doc.get("index"))
            fragment = delta.get("partial_json")
            if index is None or not isinstance(fragment, str) or not fragment:
                return []
            call = {"index": index, "function": {"arguments": fragment}}
            return self.start([self.chunk({"tool_calls": [call]})])
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            return self.start([self.chunk({"reasoning_content": delta["thinking"]})])
        return []  # signature_delta, citations_delta: no OpenAI form

    def _on_message_delta(self, doc: dict) -> list[dict]:
        self._remember_usage(doc.get("usage"))
        delta = doc.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self._stop_reason = delta["stop_reason"]
            return self._finish([])
        return []

    def _finish(self, out: list[dict]) -> list[dict]:
        if not self._finished:
            self._finished = True
            out.append(self.chunk({}, finish_reason(self._stop_reason)))
        return self.start(out)

    def _on_message_stop(self, doc: dict) -> list[dict]:
        self.complete = True
        out = self._finish([])
        usage = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": openai_usage(self.usage),
        }
        out.append(usage)
        return out

    def _on_error(self, doc: dict) -> list[dict]:
        error = doc.get("error")
        kind = message = None
        if isinstance(error, dict):
            kind, message = error.get("type"), error.get("message")
        detail = "upstream error event"
        if isinstance(kind, str):
            detail += f" ({kind})"
        if isinstance(message, str):
            detail += f": {message}"
        raise UpstreamStreamError(redact(detail, self.secrets))

    _handlers: ClassVar[dict[str, Callable[..., list[dict]]]] = {
        "message_start": _on_message_start,
        "content_block_start": _on_content_block_start,
        "content_block_delta": _on_content_block_delta,
        "message_delta": _on_message_delta,
        "message_stop": _on_message_stop,
        "error": _on_error,
    }
