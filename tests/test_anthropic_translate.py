"""Golden tests of the OpenAI <-> Anthropic Messages translation (pure
functions of twisted_gw.providers.anthropic_translate), and of Anthropic
error bodies mapped to the contract's errors (CONTRACT 4.1)."""

from __future__ import annotations

import json

import pytest

from twisted_gw.errors import GatewayError
from twisted_gw.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    from_anthropic_response,
    to_anthropic_request,
)
from twisted_gw.providers.errors import map_upstream_status

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def translate(**body):
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_anthropic_request({"model": "client-name", **body}, "claude-test")


def rejected(**body) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        translate(**body)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


# -- requests ----------------------------------------------------------------------------


def test_minimal_request_gets_the_documented_max_tokens_default():
    assert translate() == {
        "model": "claude-test",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    assert DEFAULT_MAX_TOKENS == 4096


def test_system_and_developer_messages_become_system_blocks():
    request = translate(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hi"},
            {
                "role": "developer",
                "content": [
                    {"type": "text", "text": "Answer in French."},
                    {"type": "text", "text": "Cache me", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ]
    )
    assert request["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Answer in French."},
        {"type": "text", "text": "Cache me", "cache_control": {"type": "ephemeral"}},
    ]
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_sampling_fields_stop_and_user_are_mapped():
    request = translate(
        temperature=0.2,
        top_p=0.9,
        top_k=5,
        max_tokens=100,
        stop="END",
        user="user-42",
        stream=True,
        stream_options={"include_usage": True},
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.1,
        metadata={"k": "v"},
        store=True,
        service_tier="auto",
        prompt_cache_key="p",
        prompt_cache_retention="24h",
        prompt_cache_options={"mode": "explicit"},
        prediction={"type": "content", "content": "x"},
        verbosity="low",
        reasoning_effort="none",
        response_format={"type": "text"},
        parallel_tool_calls=True,
        modalities=["text"],
        n=1,
        logprobs=False,
        x_unknown_field=1,
    )
    assert request == {
        "model": "claude-test",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
        "stream": True,
    }


def test_max_completion_tokens_wins_and_stop_lists_pass_through():
    request = translate(max_tokens=10, max_completion_tokens=20, stop=["a", "b"])
    assert request["max_tokens"] == 20 and request["stop_sequences"] == ["a", "b"]
    assert translate(safety_identifier="sid")["metadata"] == {"user_id": "sid"}


def test_multi_turn_with_tool_calls_and_tool_results():
    messages = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "22C"}]},
        {"role": "user", "content": "Thanks, and?"},
        {"role": "assistant", "content": "Rome is warmer."},
        {"role": "assistant", "content": [{"type": "text", "text": "By 4 degrees."}]},
        {"role": "user", "content": "ok", "name": "bob"},
    ]
    request = translate(messages=messages, tools=[WEATHER_TOOL])
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",  # both results and the next user text: one turn, results first
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "22C"}],
                },
                {"type": "text", "text": "Thanks, and?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Rome is warmer."},
                {"type": "text", "text": "By 4 degrees."},
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "ok"}]},
    ]
    assert request["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert "tool_choice" not in request  # Anthropic's default is auto


def test_empty_assistant_content_with_tool_calls_and_empty_turns():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": ""},  # nothing to send: left out
        {"role": "user", "content": "b"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}
            ],
        },
    ]
    assert translate(messages=messages)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        },
    ]


@pytest.mark.parametrize(
    "choice, parallel, expected",
    [
        ("auto", None, {"type": "auto"}),
        (None, None, None),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice(choice, parallel, expected):
    body = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    request = translate(**body)
    assert request.get("tool_choice") == expected


def test_tool_choice_without_tools_is_not_sent_and_parameterless_tools_get_a_schema():
    assert "tool_choice" not in translate(tool_choice="required")
    tool = {"type": "function", "function": {"name": "now"}}
    assert translate(tools=[tool])["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_images_data_urls_and_http_urls():
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        },
    ]
    request = translate(messages=[{"role": "user", "content": content}])
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
    ]


def test_response_format_and_reasoning_effort_go_to_output_config():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = translate(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        reasoning_effort="high",
    )
    assert request["output_config"] == {
        "format": {"type": "json_schema", "schema": schema},
        "effort": "high",
    }
    assert "output_config" not in translate(
        response_format={"type": "text"}, reasoning_effort="minimal"
    )


@pytest.mark.parametrize(
    "body, words",
    [
        ({"n": 2}, "'n'"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "deprecated"),
        ({"function_call": "auto"}, "deprecated"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "audio"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tool type"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "deprecated"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "input_audio",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}
                ]
            },
            "file_data",
        ),
    ],
)
def test_fields_anthropic_cannot_honour_are_400_unsupported_parameter(body, words):
    error = rejected(**body)
    assert error.code == "unsupported_parameter" and words in error.message


@pytest.mark.parametrize(
    "messages, words",
    [
        ([{"role": "wizard", "content": "x"}], "role"),
        ([{"role": "tool", "content": "x"}], "tool_call_id"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                }
            ],
            "JSON object",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}],
            "URL",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}],
            "data URL",
        ),
        ("not a list", "messages"),
    ],
)
def test_requests_that_cannot_be_translated_are_400_invalid_request(messages, words):
    error = rejected(messages=messages)
    assert error.code == "invalid_request_error" and words in error.message


# -- responses ---------------------------------------------------------------------------


def test_text_response_with_cache_usage():
    doc = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 7,
        },
    }
    assert from_anthropic_response(doc, 1_700_000_000) == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "claude-test-20250101",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1110,
            "completion_tokens": 7,
            "total_tokens": 1117,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
    }


def test_tool_use_response_has_json_string_arguments_and_null_content():
    doc = {
        "id": "msg_02",
        "model": "claude-test",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Zürich"},
            },
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }
    completion = from_anthropic_response(doc, 1)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
        },
        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Zürich"
    }
    assert completion["usage"]["total_tokens"] == 14


@pytest.mark.parametrize(
    "stop_reason, finish",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop_reason, finish):
    doc = {"id": "m", "model": "c", "content": [], "stop_reason": stop_reason, "usage": {}}
    assert from_anthropic_response(doc, 0)["choices"][0]["finish_reason"] == finish


def test_thinking_blocks_become_reasoning_content():
    doc = {
        "id": "m",
        "model": "c",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "text", "text": "42"},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    message = from_anthropic_response(doc, 0)["choices"][0]["message"]
    assert message["content"] == "42" and message["reasoning_content"] == "Let me think."


# -- Anthropic error bodies (CONTRACT 4.1) ---------------------------------------------------


def anthropic_error(kind, message):
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def test_anthropic_4xx_is_relayed_with_its_message_and_provider_error_code():
    e = map_upstream_status(400, anthropic_error("invalid_request_error", "max_tokens: too big"))
    assert (e.status, e.code, e.type, e.message) == (
        400,
        "provider_error",
        "invalid_request_error",
        "max_tokens: too big",
    )
    e = map_upstream_status(429, anthropic_error("rate_limit_error", "slow down"))
    assert (e.status, e.type, e.message) == (429, "rate_limit_error", "slow down")


def test_anthropic_401_403_and_overloaded_529():
    for status in (401, 403):
        e = map_upstream_status(
            status,
            anthropic_error("authentication_error", "invalid x-api-key sk-ant-secret"),
            secrets=["sk-ant-secret"],
        )
        assert (e.status, e.code) == (502, "provider_error")
        assert e.message == f"Provider error: upstream rejected the provider credentials ({status})"
    e = map_upstream_status(529, anthropic_error("overloaded_error", "Overloaded"))
    assert (e.status, e.code, e.message) == (
        502,
        "provider_error",
        "Provider error: upstream returned status 529: Overloaded",
    )
