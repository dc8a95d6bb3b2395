"""The gateway's one token estimate (twisted_gw.tokens), used by
``/v1/messages/count_tokens`` for providers that cannot count and by the
``mock`` provider's usage: pure, pinned on small golden inputs."""

from __future__ import annotations

from twisted_gw.config.entities import parse_model
from twisted_gw.providers.mock import mock_chat_chunks, mock_chat_completion, mock_usage
from twisted_gw.proxy.wire import estimate_tokens
from twisted_gw.tokens import prompt_tokens, text_tokens


def test_text_tokens_are_four_characters_rounded_up() -> None:
    assert [text_tokens(t) for t in ("", "a", "abcd", "abcde", "x" * 400)] == [0, 1, 1, 2, 100]


def test_prompt_tokens_count_the_json_of_messages_and_tools_plus_four_a_message() -> None:
    # '[{"role":"user","content":"hi"}]' is 32 characters: 8, and 4 for its message
    assert prompt_tokens({"messages": [{"role": "user", "content": "hi"}]}) == 12
    tools = [{"type": "function", "function": {"name": "f"}}]  # 48 characters: 12
    doc = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    assert prompt_tokens(doc) == 12 + 12
    assert prompt_tokens({"system": "abcd", "messages": []}) == 2  # '"abcd"' and '[]': 8 / 4
    assert prompt_tokens({}) == 0


def test_count_tokens_estimate_is_the_same_estimate() -> None:
    doc = {"model": "m", "system": "be brief", "messages": [{"role": "user", "content": "x"}]}
    assert estimate_tokens(doc) == prompt_tokens(doc)


def test_mock_usage_is_the_estimate_of_what_it_was_sent_and_answered() -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
    assert mock_usage(body, "hello there") == {
        "prompt_tokens": prompt_tokens(body),
        "completion_tokens": 3,
        "total_tokens": prompt_tokens(body) + 3,
    }


def test_mock_stream_reports_the_usage_of_the_whole_answer() -> None:
    model = parse_model("demo", {"name": "demo", "model": "mock/demo", "provider_config": {}})
    body = {"model": "demo", "messages": [{"role": "user", "content": "one two three"}]}
    whole = mock_chat_completion(model, body, 0)["usage"]
    assert mock_chat_chunks(model, body, 0)[-1]["usage"] == whole
    assert whole == {"prompt_tokens": 15, "completion_tokens": 4, "total_tokens": 19}
