"""Golden tests of the Responses API bridge (twisted_gw.formats.responses),
CONTRACT-NEXT 3.1-3.5: request checks and texts, the chat request, the
Response object, the history store's value, the streaming event lifecycle,
and the official ``openai`` SDK reading what the bridge writes."""

from __future__ import annotations

import json
import re
import typing
from typing import Annotated, Any, Union

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._models import construct_type
from openai.types.responses import ResponseStreamEvent
from pydantic import Field, TypeAdapter

from twisted_gw.formats.responses import (
    ChatToResponsesStream,
    ResponsesError,
    frame,
    from_chat,
    history_messages,
    input_messages,
    new_response_id,
    starts_output,
    to_chat,
)
from twisted_gw.jsonutil import dumps
from twisted_gw.sse import SSEParser

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "
FORMAT = (
    "format bridge: Responses API text.format cannot be bridged to Chat Completions "
    "response_format: "
)
EMPTY = "Gateway error: validation: responses stream completed without an upstream response id"

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}


def chat(history: list[dict] | None = None, **doc: Any) -> dict:
    doc.setdefault("model", "m")
    doc.setdefault("input", "hi")
    return to_chat(doc, history or [])


def refused(doc: Any) -> ResponsesError:
    with pytest.raises(ResponsesError) as info:
        to_chat(doc, [])
    return info.value


# -- 3.2: the chat request -----------------------------------------------------------------


def test_string_input_is_one_user_message_and_nothing_else_is_sent():
    assert chat() == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_instructions_come_first_then_history_then_input():
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert chat(history, instructions="Be brief.")["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "hi"},
    ]


def test_empty_instructions_add_no_system_message():
    assert chat(instructions="")["messages"] == [{"role": "user", "content": "hi"}]


def test_input_items_become_chat_messages():
    items = [
        {"type": "message", "role": "system", "content": "sys"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        },
        {"type": "message", "role": "assistant", "content": "a cat"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    ]
    assert chat(input=items)["messages"] == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {"role": "assistant", "content": "a cat"},
        {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
    ]


def test_every_mapped_parameter_and_only_those():
    doc = {
        "model": "m",
        "input": "hi",
        "max_output_tokens": 50,
        "top_logprobs": 3,
        "stream": True,
        "temperature": 0.5,
        "top_p": 1,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        # read and dropped
        "store": False,
        "metadata": {"k": "v"},
        "previous_response_id": "aresp_0",
        "include": ["message.output_text.logprobs"],
        "max_tool_calls": 2,
        "prompt": {"id": "p"},
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "reasoning": {"effort": "low"},
        "safety_identifier": "s",
        "service_tier": "auto",
        "stream_options": {"include_obfuscation": False},
        "conversation": "conv_1",
        "context_management": [{"type": "compaction"}],
        "truncation": "disabled",
        "background": False,
        "user": "someone",
        "unknown": {"x": 1},
    }
    assert to_chat(doc, []) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 50,
        "logprobs": True,
        "top_logprobs": 3,
        "response_format": {"type": "json_object"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "top_p": 1,
        "tools": [CHAT_WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


def test_stream_false_is_sent_without_stream_options():
    assert chat(stream=False) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }


def test_nulls_are_as_absent():
    doc = {"model": "m", "input": "hi", "instructions": None, "tools": None, "text": None}
    doc |= {"max_output_tokens": None, "stream": None, "tool_choice": None, "top_p": None}
    assert to_chat(doc, []) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_function_tool_with_only_a_name():
    assert chat(tools=[{"type": "function", "name": "f"}])["tools"] == [
        {"type": "function", "function": {"name": "f"}}
    ]


def test_empty_tools_are_not_sent():
    assert "tools" not in chat(tools=[])


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ({"type": "none"}, "none"),
        ({"type": "auto"}, "auto"),
        ({"type": "required"}, "required"),
        ({"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
        (
            {"type": "function", "function": {"name": "g"}},
            {"type": "function", "function": {"name": "g"}},
        ),
    ],
)
def test_tool_choice_mapping(given, sent):
    assert chat(tool_choice=given)["tool_choice"] == sent


def test_json_schema_format_keeps_its_flat_fields_nested_as_chat_wants():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    text = {
        "format": {
            "type": "json_schema",
            "name": "answer",
            "description": "the answer",
            "schema": schema,
            "strict": True,
        }
    }
    assert chat(text=text)["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "description": "the answer",
            "schema": schema,
            "strict": True,
        },
    }


def test_chat_style_json_schema_format_is_kept():
    nested = {"name": "n", "schema": {"type": "object"}}
    text = {"format": {"type": "json_schema", "json_schema": nested, "name": "ignored"}}
    assert chat(text=text)["response_format"] == {"type": "json_schema", "json_schema": nested}


def test_text_format_keeps_only_its_type_otherwise():
    assert chat(text={"format": {"type": "text", "extra": 1}})["response_format"] == {
        "type": "text"
    }
    assert "response_format" not in chat(text={"verbosity": "high"})


# -- 3.1: 422, the body does not deserialize -----------------------------------------------


@pytest.mark.parametrize(
    ("doc", "text"),
    [
        ([], "invalid type: sequence, expected struct ResponsesApiRequest"),
        ({"input": "hi"}, "missing field `model`"),
        ({"model": 1, "input": "hi"}, "model: invalid type: integer `1`, expected a string"),
        ({"model": "m"}, "missing field `input`"),
        (
            {"model": "m", "input": 5},
            "input: invalid type: integer `5`, expected a string or a sequence of input items",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": "hi"}]},
            "input[0]: missing field `type`",
        ),
        (
            {
                "model": "m",
                "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}],
            },
            (
                "input[0]: unknown variant `function_call`, "
                "expected `message` or `function_call_output`"
            ),
        ),
        (
            {"model": "m", "input": [{"type": 3}]},
            "input[0].type: invalid type: integer `3`, expected variant identifier",
        ),
        (
            {"model": "m", "input": ["hi"]},
            (
                'input[0]: invalid type: string "hi", expected internally tagged enum '
                "ResponsesInputItem"
            ),
        ),
        (
            {"model": "m", "input": [{"type": "message", "role": "user"}]},
            "input[0]: missing field `content`",
        ),
        (
            {"model": "m", "input": [{"type": "message", "role": 1, "content": "x"}]},
            "input[0].role: invalid type: integer `1`, expected a string",
        ),
        (
            {
                "model": "m",
                "input": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "x"}],
                    }
                ],
            },
            (
                "input[0].content[0]: unknown variant `output_text`, "
                "expected `input_text` or `input_image`"
            ),
        ),
        (
            {
                "model": "m",
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_file"}]}],
            },
            (
                "input[0].content[0]: unknown variant `input_file`, "
                "expected `input_text` or `input_image`"
            ),
        ),
        (
            {
                "model": "m",
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_text"}]}],
            },
            "input[0].content[0]: missing field `text`",
        ),
        (
            {
                "model": "m",
                "input": [{"type": "function_call_output", "call_id": "c", "output": [1]}],
            },
            "input[0].output: invalid type: sequence, expected a string",
        ),
        (
            {"model": "m", "input": "hi", "tools": [{"type": "web_search"}]},
            (
                "tools[0]: unknown variant `web_search`, "
                "expected one of `function`, `web_search_preview`, `file_search`"
            ),
        ),
        (
            {"model": "m", "input": "hi", "tools": [{"type": "function"}]},
            "tools[0]: missing field `name`",
        ),
        (
            {"model": "m", "input": "hi", "tools": {"type": "function"}},
            "tools: invalid type: map, expected a sequence",
        ),
        (
            {"model": "m", "input": "hi", "max_output_tokens": -1},
            "max_output_tokens: invalid value: integer `-1`, expected u32",
        ),
        (
            {"model": "m", "input": "hi", "max_output_tokens": 1.5},
            "max_output_tokens: invalid type: floating point `1.5`, expected u32",
        ),
        (
            {"model": "m", "input": "hi", "temperature": True},
            "temperature: invalid type: boolean `true`, expected f32",
        ),
        (
            {"model": "m", "input": "hi", "stream": "yes"},
            'stream: invalid type: string "yes", expected a boolean',
        ),
        (
            {"model": "m", "input": "hi", "truncation": "middle"},
            "truncation: unknown variant `middle`, expected `auto` or `disabled`",
        ),
        (
            {"model": "m", "input": "hi", "prompt_cache_retention": "1h"},
            "prompt_cache_retention: unknown variant `1h`, expected `in-memory` or `24h`",
        ),
        (
            {"model": "m", "input": "hi", "text": "json"},
            'text: invalid type: string "json", expected struct ResponseTextConfig',
        ),
        (
            {"model": "m", "input": "hi", "include": "all"},
            'include: invalid type: string "all", expected a sequence',
        ),
    ],
)
def test_bodies_that_do_not_deserialize_are_422(doc, text):
    error = refused(doc)
    assert (error.status, error.code, error.type) == (422, None, "invalid_request_error")
    assert error.message == DESERIALIZE + text


def test_the_first_bad_field_in_the_order_sent_is_named():
    error = refused({"stream": "x", "model": 1, "input": "hi"})
    assert error.message == DESERIALIZE + 'stream: invalid type: string "x", expected a boolean'


def test_a_long_string_is_quoted_bounded():
    error = refused({"model": "m", "input": "hi", "stream": "y" * 1000})
    assert error.message == DESERIALIZE + f'stream: invalid type: string "{"y" * 64}...", ' + (
        "expected a boolean"
    )


def test_422_comes_before_400():
    assert refused({"background": True, "model": 5, "input": "hi"}).status == 422


# -- 3.1: 400, format bridge ---------------------------------------------------------------

IMAGE_WITHOUT_URL = [{"type": "message", "role": "user", "content": [{"type": "input_image"}]}]


@pytest.mark.parametrize(
    ("doc", "text"),
    [
        (
            {"background": True},
            "Responses API background mode cannot be bridged through Chat Completions",
        ),
        (
            {"truncation": "auto"},
            "Responses API truncation=auto cannot be bridged through Chat Completions",
        ),
        (
            {"tools": [WEATHER, {"type": "web_search_preview"}]},
            "Responses API built-in tools cannot be bridged through Chat Completions",
        ),
        (
            {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]},
            "Responses API built-in tools cannot be bridged through Chat Completions",
        ),
        (
            {
                "input": [
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_image", "file_id": "file-1"}],
                    }
                ]
            },
            (
                "Responses API input_image with file_id file-1 cannot be bridged through "
                "Chat Completions"
            ),
        ),
        (
            {"input": IMAGE_WITHOUT_URL},
            (
                "Responses API input_image with file_id <unknown> cannot be bridged through "
                "Chat Completions"
            ),
        ),
        ({"tool_choice": 3}, "Responses API tool_choice must be a string or object"),
        ({"tool_choice": ["auto"]}, "Responses API tool_choice must be a string or object"),
        ({"tool_choice": True}, "Responses API tool_choice must be a string or object"),
        ({"tool_choice": {"name": "f"}}, "Responses API tool_choice object requires a type field"),
        ({"tool_choice": {"type": 1}}, "Responses API tool_choice object requires a type field"),
        (
            {"tool_choice": {"type": "web_search_preview"}},
            "unsupported Responses API tool_choice type web_search_preview for hub bridging",
        ),
        (
            {"tool_choice": {"type": "function"}},
            "Responses API function tool_choice requires a function name",
        ),
        (
            {"tool_choice": {"type": "function", "name": 1, "function": {}}},
            "Responses API function tool_choice requires a function name",
        ),
        (
            {"input": [{"type": "message", "role": "developer", "content": "x"}]},
            "unsupported chat message role: developer",
        ),
        (
            {"input": [{"type": "message", "role": "tool", "content": "x"}]},
            "unsupported chat message role: tool",
        ),
    ],
)
def test_requests_chat_cannot_carry_are_400_format_bridge(doc, text):
    error = refused({"model": "m", "input": "hi", **doc})
    assert (error.status, error.code, error.type) == (400, "gateway_error", "invalid_request_error")
    assert error.message == f"format bridge: {text}"


@pytest.mark.parametrize(
    ("given", "text"),
    [
        ("json", 'invalid type: string "json", expected struct ResponseFormat'),
        ({}, "missing field `type`"),
        ({"type": 1}, "invalid type: integer `1`, expected a string"),
        (
            {"type": "json_schema", "json_schema": "s"},
            'invalid type: string "s", expected struct JsonSchema',
        ),
    ],
)
def test_text_formats_chat_cannot_carry_are_400(given, text):
    error = refused({"model": "m", "input": "hi", "text": {"format": given}})
    assert (error.status, error.message) == (400, FORMAT + text)


def test_bridge_checks_run_in_aisix_order():
    doc = {"model": "m", "background": True, "truncation": "auto", "tool_choice": 1}
    doc["input"] = [{"type": "message", "role": "developer", "content": "x"}]
    assert "background" in refused(doc).message
    del doc["background"]
    assert "truncation" in refused(doc).message
    del doc["truncation"]
    assert "tool_choice" in refused(doc).message
    del doc["tool_choice"]
    assert refused(doc).message == "format bridge: unsupported chat message role: developer"


# -- 3.2: the Response object --------------------------------------------------------------


def completion(message: dict, *, usage: dict | None = None, **top: Any) -> dict:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-up",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage or {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    return {**doc, **top}


def test_text_completion_is_a_response_with_exact_keys_in_order():
    response = from_chat(
        completion({"role": "assistant", "content": "Hello"}),
        "aresp_1",
        {"model": "m", "input": "hi"},
    )
    assert response == {
        "id": "aresp_1",
        "object": "response",
        "created_at": 1700000000,
        "model": "gpt-up",
        "output": [
            {
                "type": "message",
                "id": "aresp_1_message_0",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello"}],
                "status": "completed",
            }
        ],
        "status": "completed",
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
    }
    assert list(response) == [
        "id",
        "object",
        "created_at",
        "model",
        "output",
        "status",
        "usage",
    ]


def test_metadata_and_previous_response_id_only_if_sent():
    doc = {"model": "m", "input": "hi", "metadata": {"k": "v"}, "previous_response_id": "aresp_0"}
    response = from_chat(completion({"role": "assistant", "content": "x"}), "aresp_1", doc)
    assert list(response)[-2:] == ["metadata", "previous_response_id"]
    assert (response["metadata"], response["previous_response_id"]) == ({"k": "v"}, "aresp_0")
    nulls = {"model": "m", "input": "hi", "metadata": None, "previous_response_id": None}
    response = from_chat(completion({"role": "assistant", "content": "x"}), "aresp_1", nulls)
    assert "metadata" not in response and "previous_response_id" not in response


def test_tool_calls_follow_the_text_as_function_call_items():
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {"type": "function", "function": {"arguments": {"x": 1}}},
        ],
    }
    assert from_chat(completion(message), "aresp_1", {})["output"] == [
        {
            "type": "message",
            "id": "aresp_1_message_0",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking."}],
            "status": "completed",
        },
        {
            "type": "function_call",
            "id": "call_a",
            "call_id": "call_a",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
            "status": "completed",
        },
        {
            "type": "function_call",
            "id": "chatcmpl-1_call_1",
            "call_id": "chatcmpl-1_call_1",
            "name": "tool_1",
            "arguments": '{"x":1}',
            "status": "completed",
        },
    ]


def test_tool_calls_without_text_have_no_message_item():
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}],
    }
    assert [item["type"] for item in from_chat(completion(message), "r", {})["output"]] == [
        "function_call"
    ]


def test_empty_text_is_still_a_message_item_as_aisix_does():
    output = from_chat(completion({"role": "assistant", "content": ""}), "r", {})["output"]
    assert output[0]["content"] == [{"type": "output_text", "text": ""}]


def test_each_choice_adds_its_items_and_message_ids_count_output_items():
    doc = completion({"role": "assistant", "content": "a"})
    doc["choices"] = [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "a",
                "tool_calls": [
                    {"id": "c0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}],
            },
        },
    ]
    output = from_chat(doc, "r", {})["output"]
    assert [item["id"] for item in output] == ["r_message_0", "c0", "r_message_2"]
    assert output[2]["content"] == [
        {"type": "output_text", "text": "b"},
        {"type": "output_text", "text": "c"},
    ]


def test_usage_missing_is_zeros_and_a_missing_total_is_the_sum():
    doc = completion({"role": "assistant", "content": "x"})
    del doc["usage"]
    assert from_chat(doc, "r", {})["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
    }
    doc["usage"] = {"prompt_tokens": 3, "completion_tokens": 4}
    assert from_chat(doc, "r", {})["usage"]["total_tokens"] == 7


def test_assistant_image_output_is_400():
    message = {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}
    with pytest.raises(ResponsesError) as info:
        from_chat(completion(message), "r", {})
    assert (info.value.status, info.value.message) == (
        400,
        "format bridge: assistant image output cannot be bridged to Responses API output_text",
    )


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ([], "malformed chat completion: not an object"),
        ({"id": "x"}, "malformed chat completion: completion.choices: missing"),
        ({"choices": {}}, ("malformed chat completion: completion.choices: invalid type: map, "
                          "expected a sequence")),
        ({"choices": [1]}, "malformed chat completion: completion.choices[0]: not an object"),
        ({"choices": [{"message": {"content": 5}}]},
         ("malformed chat completion: completion.choices[0].message.content: invalid type: "
         "integer `5`, expected a string or a sequence of parts")),
        ({"choices": [{"message": {"tool_calls": [{"id": 1}]}}]},
         ("malformed chat completion: completion.choices[0].message.tool_calls[0].id: "
         "invalid type: integer `1`, expected a string")),
    ],
)  # fmt: skip
def test_an_answer_that_is_no_chat_completion_is_422_data_transform(answer, text):
    with pytest.raises(ResponsesError) as info:
        from_chat(answer, "r", {})
    assert (info.value.status, info.value.code) == (422, "gateway_error")
    assert info.value.message == f"data transform: {text}"


def test_new_response_ids_are_aresp_and_32_hex():
    ids = {new_response_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"aresp_[0-9a-f]{32}", i) for i in ids)


# -- 3.4: the history store's value ---------------------------------------------------------

CALL_A = {
    "id": "call_a",
    "type": "function",
    "function": {"name": "get_weather", "arguments": "{}"},
}


def test_history_keeps_input_not_instructions_then_output_as_chat_messages():
    doc = {"model": "m", "instructions": "Be brief.", "input": "Weather?"}
    request = to_chat(doc, [])
    response = from_chat(
        completion({"role": "assistant", "content": "Checking.", "tool_calls": [CALL_A]}), "r", doc
    )
    assert history_messages(input_messages(request, doc), response) == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL_A]},
    ]


def test_function_calls_without_text_are_one_assistant_message_with_null_content():
    second = {**CALL_A, "id": "call_b"}
    response = from_chat(
        completion({"role": "assistant", "content": None, "tool_calls": [CALL_A, second]}), "r", {}
    )
    assert history_messages([], response) == [
        {"role": "assistant", "content": None, "tool_calls": [CALL_A, second]}
    ]


def test_several_text_parts_are_stored_as_text_parts():
    response = {
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "a"},
                    {"type": "output_text", "text": "b"},
                ],
            }
        ]
    }
    assert history_messages([], response) == [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        }
    ]


def test_input_messages_drop_a_message_whose_parts_are_all_gone():
    doc = {"model": "m", "input": [{"type": "message", "role": "user", "content": []}]}
    request = to_chat(doc, [])
    assert request["messages"] == [{"role": "user", "content": []}]
    assert input_messages(request, doc) == []


def test_multi_turn_round_trip_through_the_history():
    # turn 1: a question; the model calls a tool
    doc1 = {
        "model": "m",
        "instructions": "Be brief.",
        "input": "Weather in Paris?",
        "tools": [WEATHER],
    }
    chat1 = to_chat(doc1, [])
    call = {**CALL_A, "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    response1 = from_chat(
        completion({"role": "assistant", "content": None, "tool_calls": [call]}), "aresp_1", doc1
    )
    stored1 = history_messages(input_messages(chat1, doc1), response1)
    # turn 2: the tool's output, chained on turn 1
    doc2 = {
        "model": "m",
        "instructions": "Be brief.",
        "previous_response_id": response1["id"],
        "input": [{"type": "function_call_output", "call_id": "call_a", "output": "18C"}],
        "tools": [WEATHER],
    }
    chat2 = to_chat(doc2, stored1)
    assert chat2["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "18C", "tool_call_id": "call_a"},
    ]
    response2 = from_chat(
        completion({"role": "assistant", "content": "18C in Paris."}), "aresp_2", doc2
    )
    assert response2["previous_response_id"] == "aresp_1"
    stored2 = history_messages(input_messages(chat2, doc2), response2)
    # turn 3: no instructions this time; the history has none either
    doc3 = {"model": "m", "previous_response_id": "aresp_2", "input": "Thanks!"}
    assert to_chat(doc3, stored2)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "18C", "tool_call_id": "call_a"},
        {"role": "assistant", "content": "18C in Paris."},
        {"role": "user", "content": "Thanks!"},
    ]


# -- 3.3, 3.5: streaming -------------------------------------------------------------------

REQUEST = {"model": "m", "input": "hi"}


def chunk(delta: dict | None = None, **top: Any) -> dict:
    doc = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1700000001}
    doc["model"] = "gpt-up"
    doc["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
    return {**doc, **top}


USAGE = chunk(usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})


def run(chunks: list[dict], request: dict = REQUEST, clean: bool = True):
    stream = ChatToResponsesStream("aresp_1", request)
    events = [event for c in chunks for event in stream.feed(c)]
    return stream, events + stream.end(clean)


def response_object(status: str, output: list[dict], usage: tuple[int, int, int]) -> dict:
    return {
        "id": "aresp_1",
        "object": "response",
        "created_at": 1700000001,
        "model": "gpt-up",
        "output": output,
        "status": status,
        "usage": dict(zip(("input_tokens", "output_tokens", "total_tokens"), usage, strict=True)),
    }


def message(text: str, status: str) -> dict:
    return {
        "type": "message",
        "id": "aresp_1_message_0",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
        "status": status,
    }


TEXT_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    USAGE,
]


def test_text_stream_events_exactly():
    stream, events = run(TEXT_CHUNKS)
    at = {"item_id": "aresp_1_message_0", "output_index": 0}
    started = response_object("in_progress", [], (0, 0, 0))
    done = response_object("completed", [message("Hello", "completed")], (5, 2, 7))
    assert events == [
        ("response.created",
         {"type": "response.created", "sequence_number": 0, "response": started}),
        ("response.in_progress",
         {"type": "response.in_progress", "sequence_number": 1, "response": started}),
        ("response.output_item.added",
         {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
          "item": message("", "in_progress")}),
        ("response.content_part.added",
         {"type": "response.content_part.added", "sequence_number": 3, **at, "content_index": 0,
          "part": {"type": "output_text", "text": ""}}),
        ("response.output_text.delta",
         {"type": "response.output_text.delta", "sequence_number": 4, **at, "content_index": 0,
          "delta": "Hel", "logprobs": []}),
        ("response.output_text.delta",
         {"type": "response.output_text.delta", "sequence_number": 5, **at, "content_index": 0,
          "delta": "lo", "logprobs": []}),
        ("response.output_text.done",
         {"type": "response.output_text.done", "sequence_number": 6, **at, "content_index": 0,
          "text": "Hello", "logprobs": []}),
        ("response.content_part.done",
         {"type": "response.content_part.done", "sequence_number": 7, **at, "content_index": 0,
          "part": {"type": "output_text", "text": "Hello"}}),
        ("response.output_item.done",
         {"type": "response.output_item.done", "sequence_number": 8, "output_index": 0,
          "item": message("Hello", "completed")}),
        ("response.completed",
         {"type": "response.completed", "sequence_number": 9, "response": done}),
    ]  # fmt: skip
    assert stream.completed == done and stream.over


TOOL_CHUNKS = [
    chunk({"role": "assistant", "content": "Checking."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    USAGE,
]  # fmt: skip


def call(call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "type": "function_call",
        "id": call_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def test_tool_call_stream_events_exactly():
    _, events = run(TOOL_CHUNKS)
    bodies = [{k: v for k, v in data.items() if k != "sequence_number"} for _, data in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert [kind for kind, _ in events] == [data["type"] for data in bodies]
    text_at = {"item_id": "aresp_1_message_0", "output_index": 0}
    a_at = {"item_id": "call_a", "output_index": 1}
    b_at = {"item_id": "chatcmpl-9_call_1", "output_index": 2}
    final = [
        message("Checking.", "completed"),
        call("call_a", "get_weather", '{"city":"Paris"}', "completed"),
        call("chatcmpl-9_call_1", "tool_1", "{}", "completed"),
    ]
    assert bodies[2:] == [
        {"type": "response.output_item.added", "output_index": 0,
         "item": message("", "in_progress")},
        {"type": "response.content_part.added", **text_at, "content_index": 0,
         "part": {"type": "output_text", "text": ""}},
        {"type": "response.output_text.delta", **text_at, "content_index": 0, "delta": "Checking.",
         "logprobs": []},
        {"type": "response.output_item.added", "output_index": 1,
         "item": call("call_a", "get_weather", "", "in_progress")},
        {"type": "response.function_call_arguments.delta", **a_at, "delta": '{"city":'},
        {"type": "response.output_item.added", "output_index": 2,
         "item": call("chatcmpl-9_call_1", "tool_1", "", "in_progress")},
        {"type": "response.function_call_arguments.delta", **b_at, "delta": "{}"},
        {"type": "response.function_call_arguments.delta", **a_at, "delta": '"Paris"}'},
        {"type": "response.output_text.done", **text_at, "content_index": 0, "text": "Checking.",
         "logprobs": []},
        {"type": "response.content_part.done", **text_at, "content_index": 0,
         "part": {"type": "output_text", "text": "Checking."}},
        {"type": "response.output_item.done", "output_index": 0, "item": final[0]},
        {"type": "response.function_call_arguments.done", **a_at, "arguments": '{"city":"Paris"}'},
        {"type": "response.output_item.done", "output_index": 1, "item": final[1]},
        {"type": "response.function_call_arguments.done", **b_at, "arguments": "{}"},
        {"type": "response.output_item.done", "output_index": 2, "item": final[2]},
        {"type": "response.completed", "response": response_object("completed", final, (5, 2, 7))},
    ]  # fmt: skip


def test_a_call_id_is_fixed_when_its_item_is_added_and_a_later_name_is_kept():
    _, events = run(
        [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "late", "function": {"name": "f", "arguments": "}"}}
                    ]
                }
            ),
        ]
    )
    done = [data["item"] for kind, data in events if kind == "response.output_item.done"]
    assert done == [call("chatcmpl-9_call_0", "f", "{}", "completed")]


def test_tool_calls_first_then_text_take_the_next_output_index():
    _, events = run(
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c", "function": {"name": "f", "arguments": ""}}
                    ]
                }
            ),
            chunk({"content": "after"}),
        ]
    )
    added = [data for kind, data in events if kind == "response.output_item.added"]
    assert [(a["output_index"], a["item"]["id"]) for a in added] == [
        (0, "c"),
        (1, "aresp_1_message_1"),
    ]


def test_the_first_usage_chunk_starts_the_response_and_an_empty_chunk_does_not():
    stream = ChatToResponsesStream("aresp_1", REQUEST)
    assert stream.feed(chunk()) == []
    assert [kind for kind, _ in stream.feed(USAGE)] == ["response.created", "response.in_progress"]
    assert [kind for kind, _ in stream.end(True)] == ["response.completed"]
    assert stream.completed == response_object("completed", [], (5, 2, 7))


def test_response_objects_in_the_stream_carry_metadata_and_previous_response_id():
    request = {**REQUEST, "metadata": {"k": "v"}, "previous_response_id": "aresp_0"}
    _, events = run(TEXT_CHUNKS, request)
    for kind in ("response.created", "response.completed"):
        response = next(data["response"] for k, data in events if k == kind)
        assert (response["metadata"], response["previous_response_id"]) == ({"k": "v"}, "aresp_0")


def test_empty_upstream_is_one_error_event():
    stream = ChatToResponsesStream("aresp_1", REQUEST)
    assert stream.end(True) == [
        ("error", {"type": "error", "sequence_number": 0, "message": EMPTY})
    ]
    assert stream.completed is None and stream.end(True) == []


def test_a_cut_mid_stream_is_one_error_event_and_the_end():
    stream = ChatToResponsesStream("aresp_1", REQUEST)
    events = stream.feed(chunk({"content": "Hel"}))
    error = {"type": "error", "sequence_number": len(events), "message": "stream: connection lost"}
    assert stream.end(False, "stream: connection lost") == [("error", error)]
    assert stream.completed is None and stream.over
    assert stream.feed(chunk({"content": "lo"})) == [] and stream.end(True) == []


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (chunk(choices=[{"index": 0, "delta": {}}, {"index": 1, "delta": {}}]),
         "format bridge: Responses API stream bridge only supports a single chat choice"),
        (chunk(choices=[{"index": 1, "delta": {"content": "x"}}]),
         "format bridge: Responses API stream bridge only supports choice index 0"),
        ("nonsense",
         "data transform: malformed chat completion: chunk: not an object"),
        (chunk({"content": 5}),
         ("data transform: malformed chat completion: chunk.choices[0].delta.content: "
          "invalid type: integer `5`, expected a string")),
        (chunk({"tool_calls": ["x"]}),
         ("data transform: malformed chat completion: chunk.choices[0].delta.tool_calls[0]: "
         "not an object")),
    ],
)  # fmt: skip
def test_a_chunk_the_bridge_cannot_carry_is_one_error_event_and_the_end(bad, text):
    stream = ChatToResponsesStream("aresp_1", REQUEST)
    first = stream.feed(chunk({"content": "a"}))
    assert stream.feed(bad) == [
        ("error", {"type": "error", "sequence_number": len(first), "message": text})
    ]
    assert stream.over and stream.end(True) == [] and stream.completed is None


def test_a_bad_first_chunk_sends_only_the_error():
    stream = ChatToResponsesStream("aresp_1", REQUEST)
    assert [kind for kind, _ in stream.feed(chunk(choices=[{"index": 2, "delta": {}}]))] == [
        "error"
    ]


def test_starts_output_is_the_first_non_empty_delta():
    _, events = run(TOOL_CHUNKS)
    first = next(i for i, (kind, data) in enumerate(events) if starts_output(kind, data))
    assert events[first][1]["delta"] == "Checking."
    assert not starts_output("response.output_text.delta", {"delta": ""})
    assert starts_output("response.function_call_arguments.done", {"arguments": ""})
    assert not starts_output("response.output_item.added", {})


def test_a_stream_completes_as_the_same_completion_would_answer():
    stream, _ = run(TOOL_CHUNKS)
    whole = completion(
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"function": {"arguments": "{}"}},
            ],
        },
        id="chatcmpl-9",
        created=1700000001,
    )
    assert stream.completed == from_chat(whole, "aresp_1", REQUEST)
    assert history_messages([], stream.completed) == history_messages(
        [], from_chat(whole, "aresp_1", REQUEST)
    )


# -- frames --------------------------------------------------------------------------------


def test_frame_is_event_then_data_compact_json():
    assert frame("response.output_text.delta", {"type": "x", "delta": "é\n"}) == (
        b'event: response.output_text.delta\ndata: {"type":"x","delta":"\xc3\xa9\\n"}\n\n'
    )


def test_frames_parse_back_as_the_events():
    _, events = run(TOOL_CHUNKS)
    parsed = SSEParser().feed(b"".join(frame(kind, data) for kind, data in events))
    assert [(e.event.decode(), json.loads(e.data)) for e in parsed] == events


# -- the official openai SDK reads it ------------------------------------------------------

EVENT_TYPES = typing.get_args(typing.get_args(ResponseStreamEvent)[0])
#: the SDK's union of stream events, told apart by ``type`` as the SDK does
STRICT_EVENT = TypeAdapter(
    Annotated[Union[EVENT_TYPES], Field(discriminator="type")]  # noqa: UP007
)


def with_what_32_omits(data: Any) -> Any:
    """``data`` with the fields of the SDK's models that CONTRACT-NEXT 3.2's
    objects deliberately lack: ``annotations`` of output text, a Response's
    ``tools``, ``tool_choice``, ``parallel_tool_calls`` and usage details."""
    if isinstance(data, list):
        return [with_what_32_omits(item) for item in data]
    if not isinstance(data, dict):
        return data
    data = {key: with_what_32_omits(value) for key, value in data.items()}
    if data.get("type") == "output_text":
        data["annotations"] = []
    if data.get("object") == "response":
        data |= {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
        data["usage"] |= {
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    return data


@pytest.mark.parametrize("chunks", [TEXT_CHUNKS, TOOL_CHUNKS, []], ids=["text", "tools", "empty"])
def test_every_event_validates_as_the_sdk_event_of_its_type(chunks):
    _, events = run(chunks)
    for kind, data in events:
        event = STRICT_EVENT.validate_python(with_what_32_omits(data))
        assert event.type == kind and event.sequence_number == data["sequence_number"]
        # and as the SDK's stream reads it, unvalidated
        loose = construct_type(type_=ResponseStreamEvent, value=data)
        assert type(loose) is type(event) and loose.to_dict() == data


def sdk_client(body: bytes, content_type: str) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        return httpx2.Response(200, content=body, headers={"content-type": content_type})

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(api_key="k", base_url="http://gw.test/v1", http_client=http)


def sse(chunks: list[dict], clean: bool = True) -> bytes:
    _, events = run(chunks, clean=clean)
    return b"".join(frame(kind, data) for kind, data in events)


def test_sdk_responses_stream_accumulates_text_and_function_calls():
    client = sdk_client(sse(TOOL_CHUNKS), "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.id == "aresp_1" and final.status == "completed"
    assert final.output_text == "Checking."
    calls = [(item.call_id, item.name, item.arguments) for item in final.output[1:]]
    assert calls == [
        ("call_a", "get_weather", '{"city":"Paris"}'),
        ("chatcmpl-9_call_1", "tool_1", "{}"),
    ]
    assert final.usage.total_tokens == 7
    # the SDK adds each delta to the added item: the snapshots are the text so far
    snapshots = [
        (event.item_id, event.snapshot)
        for event in events
        if event.type == "response.function_call_arguments.delta"
    ]
    assert snapshots == [
        ("call_a", '{"city":'),
        ("chatcmpl-9_call_1", "{}"),
        ("call_a", '{"city":"Paris"}'),
    ]


def test_sdk_create_stream_yields_typed_events_in_sequence():
    client = sdk_client(sse(TEXT_CHUNKS), "text/event-stream")
    events = list(client.responses.create(model="m", input="hi", stream=True))
    assert [type(e).__name__ for e in events] == [
        "ResponseCreatedEvent",
        "ResponseInProgressEvent",
        "ResponseOutputItemAddedEvent",
        "ResponseContentPartAddedEvent",
        "ResponseTextDeltaEvent",
        "ResponseTextDeltaEvent",
        "ResponseTextDoneEvent",
        "ResponseContentPartDoneEvent",
        "ResponseOutputItemDoneEvent",
        "ResponseCompletedEvent",
    ]
    assert [e.sequence_number for e in events] == list(range(10))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["Hel", "lo"]
    assert events[-1].response.output[0].content[0].text == "Hello"


def test_sdk_create_stream_reads_an_error_event():
    client = sdk_client(sse([]), "text/event-stream")
    [event] = list(client.responses.create(model="m", input="hi", stream=True))
    assert (type(event).__name__, event.message, event.sequence_number) == (
        "ResponseErrorEvent",
        EMPTY,
        0,
    )


def test_sdk_create_reads_the_response_object():
    response = from_chat(
        completion({"role": "assistant", "content": "Hello", "tool_calls": [CALL_A]}),
        "aresp_1",
        REQUEST,
    )
    client = sdk_client(dumps(response), "application/json")
    parsed = client.responses.create(model="m", input="hi")
    assert parsed.output_text == "Hello"
    assert (parsed.output[1].call_id, parsed.output[1].name) == ("call_a", "get_weather")
    assert parsed.usage.input_tokens == 5


# -- nothing but ResponsesError, whatever comes ---------------------------------------------

NAMES = [
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools",
    "tool_choice", "parallel_tool_calls", "stream", "text", "top_logprobs", "previous_response_id",
    "store", "metadata", "background", "truncation", "include", "prompt_cache_retention",
    "type", "role", "content", "text", "image_url", "file_id", "detail", "call_id", "output",
    "name", "function", "format", "json_schema", "schema", "strict", "parameters",
    "choices", "delta", "tool_calls", "arguments", "index", "id", "usage", "message",
]  # fmt: skip
TAGS = [
    "message", "function_call_output", "function_call", "input_text", "input_image", "function",
    "web_search_preview", "json_schema", "auto", "none", "developer", "user", "assistant", "text",
    "image_url", "in-memory", "disabled",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(TAGS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=24,
)
bodies = json_values | st.builds(
    lambda extra, base: {**base, **extra},
    st.dictionaries(st.sampled_from(NAMES), json_values, max_size=8),
    st.fixed_dictionaries({"model": st.just("m"), "input": json_values | st.just("hi")}),
)


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_to_chat_raises_nothing_but_responses_error(doc):
    try:
        request = to_chat(doc, [])
    except ResponsesError as error:
        assert error.status in (400, 422)
    else:
        dumps(request)  # whatever it builds can be sent


chunks = json_values | st.builds(
    lambda delta, usage: {"id": "c", "choices": [{"index": 0, "delta": delta}], "usage": usage},
    json_values,
    json_values,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(chunks, max_size=6), st.booleans())
def test_the_stream_and_from_chat_raise_nothing_but_responses_error(docs, clean):
    stream = ChatToResponsesStream("aresp_1", REQUEST)
    events = [event for doc in docs for event in stream.feed(doc)] + stream.end(clean)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert [kind for kind, _ in events].count("error") <= 1
    for kind, data in events:
        frame(kind, data)
    for doc in docs:
        try:
            from_chat(doc, "aresp_1", REQUEST)
        except ResponsesError as error:
            assert error.status in (400, 422)
