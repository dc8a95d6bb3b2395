"""A whole chat completion relayed as a stream (issue 11, defect 4), pure."""

from __future__ import annotations

from twisted_gw.providers.completion import chunks_from_completion

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 7,
    "model": "m",
    "system_fingerprint": "fp",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "[]"}},
                ],
            },
            "finish_reason": "tool_calls",
        },
        {"index": 1, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"},
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


def test_one_chunk_per_completion_then_usage():
    first, usage = chunks_from_completion(COMPLETION)
    for chunk in (first, usage):
        assert chunk["object"] == "chat.completion.chunk"
        assert (chunk["id"], chunk["created"], chunk["model"]) == ("chatcmpl-1", 7, "m")
        assert chunk["system_fingerprint"] == "fp"
    tools = first["choices"][0]
    assert tools["finish_reason"] == "tool_calls"
    assert [c["index"] for c in tools["delta"]["tool_calls"]] == [0, 1]
    assert tools["delta"]["tool_calls"][1]["function"] == {"name": "g", "arguments": "[]"}
    assert first["choices"][1]["delta"] == {"role": "assistant", "content": "hi"}
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7


def test_without_usage_there_is_no_usage_chunk():
    doc = {**COMPLETION, "usage": None}
    assert len(chunks_from_completion(doc)) == 1


def test_not_a_completion_is_none():
    assert chunks_from_completion({"error": {"message": "x"}}) is None
    assert chunks_from_completion({"choices": "x"}) is None
    assert chunks_from_completion({"choices": [1]}) is None
