"""The built-in ``mock`` provider: local, fast and deterministic **[beyond]**.

A demo model works with no network and no key, and tests of everything above
the provider get stable answers: chat echoes the last user message;
embeddings are 16-dimension vectors derived from a hash of the input.

Its usage is the gateway's token estimate (:mod:`twisted_gw.tokens`, one
token per 4 characters) of what it was sent and what it answered, so a
demo's token limits, metrics and dashboards move with the traffic as they
would with a real upstream: ``prompt_tokens`` is
:func:`~twisted_gw.tokens.prompt_tokens` of the request (its messages and
tools, 4 per message), ``completion_tokens`` the echoed text's
:func:`~twisted_gw.tokens.text_tokens`; an embeddings request counts each
input's text (at least 1 token an input). Streamed and whole answers of the
same request report the same usage.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from twisted_gw.config.entities import Model
from twisted_gw.jsonutil import dumps
from twisted_gw.providers.interfaces import (
    CHAT,
    EMBEDDINGS,
    IProvider,
    ProviderResult,
    last_user_text,
)
from twisted_gw.providers.sources import ListSource
from twisted_gw.tokens import prompt_tokens, text_tokens

DIMENSIONS = 16


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def mock_usage(body: dict, answer: str) -> dict[str, int]:
    """The usage the mock reports for a chat ``body`` answered with ``answer``
    (see the module docstring: the gateway's estimate, not a constant)."""
    prompt = prompt_tokens(body)
    completion = text_tokens(answer)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def mock_chat_completion(model: Model, body: dict, created: int) -> dict:
    """The mock's chat.completion for a request (pure)."""
    text = last_user_text(body.get("messages"))
    return {
        "id": "chatcmpl-mock-" + _digest(model.upstream_model, text)[:24],
        "object": "chat.completion",
        "created": created,
        "model": model.upstream_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": mock_usage(body, text),
    }


def mock_chat_chunks(model: Model, body: dict, created: int) -> list[dict]:
    """The mock's stream (pure): a role chunk, one chunk per word of the echoed
    prompt, a finish chunk and the usage chunk (CONTRACT 2)."""
    text = last_user_text(body.get("messages"))
    base = {
        "id": "chatcmpl-mock-" + _digest(model.upstream_model, text)[:24],
        "object": "chat.completion.chunk",
        "created": created,
        "model": model.upstream_model,
    }

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    pieces = re.findall(r"\s*\S+", text)  # words with the spaces before them
    tail = text[sum(map(len, pieces)) :]
    chunks += [chunk({"content": piece}) for piece in pieces + ([tail] if tail else [])]
    chunks.append(chunk({}, "stop"))
    chunks.append({**base, "choices": [], "usage": mock_usage(body, text)})
    return chunks


def mock_vector(text: str) -> list[float]:
    """A unit vector of DIMENSIONS floats that depends only on ``text``."""
    raw = hashlib.sha256(text.encode()).digest()
    values = [(b - 127.5) / 127.5 for b in raw[:DIMENSIONS]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def mock_embeddings(model: Model, body: dict) -> dict:
    """The mock's embeddings response (pure)."""
    inputs = body.get("input")
    if not isinstance(inputs, list):
        inputs = [inputs]
    texts = [x if isinstance(x, str) else dumps(x).decode() for x in inputs]
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vector: Any = mock_vector(text)
        if b64:
            vector = base64.b64encode(struct.pack(f"<{DIMENSIONS}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(max(1, text_tokens(t)) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@implementer(IProvider)
class MockProvider:
    """Answers in-process; never touches the network."""

    name = "mock"
    endpoints = frozenset({CHAT, EMBEDDINGS})

    def chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        doc = mock_chat_completion(model, body, int(reactor.seconds()))
        return defer.succeed(ProviderResult(dumps(doc), doc["usage"]))

    def stream_chat(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        chunks = mock_chat_chunks(model, body, int(reactor.seconds()))
        return defer.succeed(ListSource([dumps(c) for c in chunks], reactor))

    def embeddings(self, model: Model, body: dict, reactor: Any) -> defer.Deferred:
        doc = mock_embeddings(model, body)
        return defer.succeed(ProviderResult(dumps(doc), doc["usage"]))
