"""Anthropic Messages API streams for tests: event objects shaped like the
ones Anthropic sends, and their SSE framing (``event: <type>`` + ``data:``),
for the mock upstream (``set_sse``) and for the stream translator's tests."""

from __future__ import annotations

import json
from typing import Any

MODEL = "claude-test-20250101"


def frame(event: dict[str, Any]) -> bytes:
    """One Anthropic SSE event, framed as Anthropic frames it."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def frames(events: list[dict[str, Any]]) -> list[bytes]:
    return [frame(e) for e in events]


def message_start(
    msg_id: str = "msg_01stream", model: str = MODEL, usage: dict | None = None
) -> dict:
    return {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 12, "output_tokens": 1},
        },
    }


def text_block(index: int, *pieces: str) -> list[dict]:
    events: list[dict] = [
        {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "text", "text": ""},
        }
    ]
    events += [
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}
        for p in pieces
    ]
    events.append({"type": "content_block_stop", "index": index})
    return events


def tool_block(index: int, tool_id: str, name: str, *json_pieces: str) -> list[dict]:
    start = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    events: list[dict] = [{"type": "content_block_start", "index": index, "content_block": start}]
    events += [
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": p},
        }
        for p in json_pieces
    ]
    events.append({"type": "content_block_stop", "index": index})
    return events


def message_end(stop_reason: str = "end_turn", output_tokens: int = 5) -> list[dict]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


PING = {"type": "ping"}


def text_stream(*pieces: str, stop_reason: str = "end_turn") -> list[dict]:
    """message_start, one text block, message_delta, message_stop."""
    return [message_start(), *text_block(0, *pieces), *message_end(stop_reason)]


def tool_stream() -> list[dict]:
    """Text, a ping, then two tool calls with arguments in fragments (the
    first fragment empty, as Anthropic sends it), stop_reason tool_use."""
    return [
        message_start(
            usage={
                "input_tokens": 20,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 3,
                "output_tokens": 1,
            }
        ),
        *text_block(0, "Let me ", "check."),
        PING,
        *tool_block(1, "toolu_01A", "get_weather", "", '{"city": ', '"Paris"}'),
        *tool_block(2, "toolu_01B", "get_time", '{"tz": "CET"}'),
        *message_end("tool_use", output_tokens=42),
    ]


def error_event(kind: str = "overloaded_error", message: str = "Overloaded") -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}
