"""A whole chat completion as the chunks of a stream (pure).

Some OpenAI-compatible servers ignore ``"stream": true`` and answer one
``application/json`` chat completion. The gateway relays that as the stream
the client asked for (CONTRACT 4.3's spirit: never an empty stream, and the
tokens are counted): one chunk holding each choice's whole message as its
delta, with its ``finish_reason``, then the usage chunk; the relay adds
``[DONE]``. Fields of the message are carried over as they came (``content``,
``refusal``, ``reasoning_content``, ...); tool calls get the ``index`` a
streamed tool-call delta carries.
"""

from __future__ import annotations

from typing import Any

#: top-level fields of a completion that its chunks carry too
_SHARED = ("id", "created", "model", "system_fingerprint", "service_tier")


def chunks_from_completion(doc: dict) -> list[dict] | None:
    """The ``chat.completion.chunk`` objects equal to ``doc``; None when
    ``doc`` is not a chat completion (no ``choices`` list of objects)."""
    choices = doc.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        return None
    base: dict[str, Any] = {k: doc[k] for k in _SHARED if k in doc}
    base["object"] = "chat.completion.chunk"
    deltas = []
    for position, choice in enumerate(choices):
        message = choice.get("message")
        delta = dict(message) if isinstance(message, dict) else {}
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            delta["tool_calls"] = [
                {"index": i, **call} if isinstance(call, dict) else call
                for i, call in enumerate(tool_calls)
            ]
        deltas.append(
            {
                "index": choice.get("index", position),
                "delta": delta,
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason"),
            }
        )
    chunks = [{**base, "choices": deltas}] if deltas else []
    usage = doc.get("usage")
    if isinstance(usage, dict):
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks
