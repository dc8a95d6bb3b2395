"""Golden tests of ``/v1/messages`` via chat (CONTRACT-NEXT 2.1-2.5), the pure
half in twisted_gw.formats.messages: request checks (422 typed read, 400
bridge only when translating), the request and response mappings, the stream
translator's event sequence and its failures, SSE frames, error bodies and the
2.4 error table; round trips through the opposite translators
(twisted_gw.providers.anthropic_translate, anthropic_stream); hypothesis
properties that nothing but MessagesError escapes and no event follows the
end of a stream."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.anthropic_events import tool_stream
from twisted_gw.errors import GatewayError
from twisted_gw.formats.messages import (
    SITUATIONS,
    ChatToMessagesStream,
    MessagesError,
    error_body,
    frame,
    from_chat,
    map_error,
    new_request_id,
    starts_output,
    stop_reason,
    to_chat,
    validate_request,
)
from twisted_gw.providers.anthropic_stream import AnthropicStreamTranslator
from twisted_gw.providers.anthropic_translate import (
    from_anthropic_response,
    to_anthropic_request,
)
from twisted_gw.sse import SSEEvent, SSEParser

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "
PNG = "iVBORw0KGgo="  # valid base64


def request(**fields: Any) -> dict:
    doc: dict[str, Any] = {
        "model": "m",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    doc.update(fields)
    return doc


def user(*blocks: Any) -> dict:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: Any) -> dict:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str, **extra: Any) -> dict:
    return {"type": "text", "text": value, **extra}


def image(data: str = PNG, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def tool_use(tool_id: str, name: str, arguments: dict) -> dict:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}


def tool_result(tool_id: str, content: Any = None) -> dict:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id}
    if content is not None:
        block["content"] = content
    return block


def refused(doc: Any, translating: bool = True) -> MessagesError:
    with pytest.raises(MessagesError) as info:
        validate_request(doc, translating)
    return info.value


# -- 2.1: the typed read (422) -----------------------------------------------------------

SHAPE_ERRORS = [
    # (name, the body, the text after axum's prefix)
    ("not an object", [], "invalid type: sequence, expected struct MessagesRequest"),
    ("no model", {"messages": [], "max_tokens": 1}, "missing field `model`"),
    ("no messages", {"model": "m", "max_tokens": 1}, "missing field `messages`"),
    ("no max_tokens", {"model": "m", "messages": []}, "missing field `max_tokens`"),
    ("model null", request(model=None), "model: invalid type: null, expected a string"),
    ("model number", request(model=7), "model: invalid type: integer `7`, expected a string"),
    ("messages object", request(messages={}), "messages: invalid type: map, expected a sequence"),
    (
        "message not object",
        request(messages=["hi"]),
        'messages[0]: invalid type: string "hi", expected struct Message',
    ),
    ("no role", request(messages=[{"content": "x"}]), "messages[0]: missing field `role`"),
    (
        "no content",
        request(messages=[{"role": "user"}]),
        "messages[0]: missing field `content`",
    ),
    (
        "content number",
        request(messages=[{"role": "user", "content": 1.5}]),
        (
            "messages[0].content: invalid type: floating point `1.5`, expected a string or a "
            "sequence of blocks"
        ),
    ),
    (
        "max_tokens negative",
        request(max_tokens=-1),
        "max_tokens: invalid value: integer `-1`, expected u32",
    ),
    (
        "max_tokens past u32",
        request(max_tokens=2**32),
        "max_tokens: invalid value: integer `4294967296`, expected u32",
    ),
    (
        "max_tokens float",
        request(max_tokens=10.0),
        "max_tokens: invalid type: floating point `10.0`, expected u32",
    ),
    (
        "max_tokens bool",
        request(max_tokens=True),
        "max_tokens: invalid type: boolean `true`, expected u32",
    ),
    (
        "thinking block",
        request(messages=[assistant({"type": "thinking", "thinking": "hm", "signature": "s"})]),
        (
            "messages[0].content[0].type: unknown variant `thinking`, expected one of `text`, "
            "`image`, `tool_use`, `tool_result`"
        ),
    ),
    (
        "document block",
        request(messages=[user({"type": "document", "source": {}})]),
        (
            "messages[0].content[0].type: unknown variant `document`, expected one of `text`, "
            "`image`, `tool_use`, `tool_result`"
        ),
    ),
    (
        "url image",
        request(messages=[user({"type": "image", "source": {"type": "url", "url": "https://x"}})]),
        "messages[0].content[0].source.type: unknown variant `url`, expected `base64`",
    ),
    (
        "image without media_type",
        request(messages=[user({"type": "image", "source": {"type": "base64", "data": PNG}})]),
        "messages[0].content[0].source: missing field `media_type`",
    ),
    (
        "block without type",
        request(messages=[user({"text": "x"})]),
        "messages[0].content[0]: missing field `type`",
    ),
    (
        "block not an object",
        request(messages=[user("x")]),
        (
            'messages[0].content[0]: invalid type: string "x", expected internally tagged enum '
            "ContentBlock"
        ),
    ),
    (
        "text without text",
        request(messages=[user({"type": "text"})]),
        "messages[0].content[0]: missing field `text`",
    ),
    (
        "tool_use without input",
        request(messages=[assistant({"type": "tool_use", "id": "t", "name": "f"})]),
        "messages[0].content[0]: missing field `input`",
    ),
    (
        "tool_use input not an object",
        request(messages=[assistant({"type": "tool_use", "id": "t", "name": "f", "input": [1]})]),
        "messages[0].content[0].input: invalid type: sequence, expected a map",
    ),
    (
        "tool_result without tool_use_id",
        request(messages=[user({"type": "tool_result", "content": "r"})]),
        "messages[0].content[0]: missing field `tool_use_id`",
    ),
    (
        "tool_result holding a tool_use",
        request(messages=[user(tool_result("t", [tool_use("u", "f", {})]))]),
        (
            "messages[0].content[0].content[0].type: unknown variant `tool_use`, expected one of "
            "`text`, `image`"
        ),
    ),
    (
        "tool_result is_error not bool",
        request(messages=[user({**tool_result("t", "r"), "is_error": "yes"})]),
        'messages[0].content[0].is_error: invalid type: string "yes", expected a boolean',
    ),
    (
        "system number",
        request(system=3),
        "system: invalid type: integer `3`, expected a string or a sequence of system blocks",
    ),
    (
        "system image block",
        request(system=[image()]),
        "system[0].type: unknown variant `image`, expected `text`",
    ),
    (
        "cache_control without type",
        request(messages=[user(text("x", cache_control={"ttl": "5m"}))]),
        "messages[0].content[0].cache_control: missing field `type`",
    ),
    (
        "top-level cache_control not an object",
        request(cache_control="ephemeral"),
        'cache_control: invalid type: string "ephemeral", expected struct CacheControl',
    ),
    (
        "temperature string",
        request(temperature="hot"),
        'temperature: invalid type: string "hot", expected f32',
    ),
    ("top_k negative", request(top_k=-3), "top_k: invalid value: integer `-3`, expected u32"),
    (
        "stop_sequences item",
        request(stop_sequences=["a", 1]),
        "stop_sequences[1]: invalid type: integer `1`, expected a string",
    ),
    (
        "stream string",
        request(stream="yes"),
        'stream: invalid type: string "yes", expected a boolean',
    ),
    (
        "metadata user_id number",
        request(metadata={"user_id": 5}),
        "metadata.user_id: invalid type: integer `5`, expected a string",
    ),
    (
        "server tool",
        request(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        "tools[0].type: unknown variant `web_search_20250305`, expected `custom`",
    ),
    (
        "tool without input_schema",
        request(tools=[{"name": "f"}]),
        "tools[0]: missing field `input_schema`",
    ),
    (
        "tool_choice none",
        request(tool_choice={"type": "none"}),
        "tool_choice.type: unknown variant `none`, expected one of `auto`, `any`, `tool`",
    ),
    (
        "tool_choice tool without name",
        request(tool_choice={"type": "tool"}),
        "tool_choice: missing field `name`",
    ),
    (
        "long string value is shortened",
        request(max_tokens="x" * 70),
        'max_tokens: invalid type: string "' + "x" * 64 + '...", expected u32',
    ),
]


@pytest.mark.parametrize("translating", [True, False], ids=["via-chat", "native"])
@pytest.mark.parametrize(
    "doc, what", [(doc, what) for _, doc, what in SHAPE_ERRORS], ids=[n for n, *_ in SHAPE_ERRORS]
)
def test_typed_read_refuses_with_422_and_axums_text(doc, what, translating):
    error = refused(doc, translating)
    assert (error.status, error.type, error.message) == (
        422,
        "invalid_request_error",
        DESERIALIZE + what,
    )


def test_typed_read_drops_unknown_keys_and_takes_null_as_absent():
    doc = request(
        thinking={"type": "enabled", "budget_tokens": 1000},
        service_tier="auto",
        system=None,
        temperature=None,
        stop_sequences=None,
        tools=None,
        tool_choice=None,
        metadata=None,
        stream=None,
        messages=[user(text("x", citations=None), image())],
    )
    assert validate_request(doc) is None
    assert to_chat(doc) == {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
        "max_tokens": 100,
    }


def test_messages_error_is_a_gateway_error():
    error = refused({})
    assert isinstance(error, GatewayError)
    assert error.detail == error.message
    assert repr(error) == f"MessagesError(422, 'invalid_request_error', {error.message!r})"


# -- 2.1: the chat bridge (400, only when translating) -----------------------------------

BRIDGE_ERRORS = [
    (
        "top-level cache_control",
        request(cache_control={"type": "ephemeral"}),
        "top-level cache_control",
    ),
    (
        "message block cache_control",
        request(messages=[user(text("x", cache_control={"type": "ephemeral"}))]),
        "messages[0].content[0]: cache_control on a message block",
    ),
    (
        "tool_result inner block cache_control",
        request(
            messages=[user(tool_result("t", [text("r", cache_control={"type": "ephemeral"})]))]
        ),
        "messages[0].content[0].content[0]: cache_control on a message block",
    ),
    (
        "two cached system blocks",
        request(
            system=[
                text("a", cache_control={"type": "ephemeral"}),
                text("b", cache_control={"type": "ephemeral", "ttl": "1h"}),
            ]
        ),
        "more than one system block with cache_control",
    ),
    (
        "role system",
        request(messages=[{"role": "system", "content": "x"}]),
        "messages[0].role 'system' is not user or assistant",
    ),
    (
        "role tool",
        request(messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "x"}]),
        "messages[1].role 'tool' is not user or assistant",
    ),
    (
        "user tool_use",
        request(messages=[user(tool_use("t", "f", {}))]),
        "messages[0].content[0]: tool_use in a user message",
    ),
    (
        "assistant tool_result",
        request(messages=[assistant(tool_result("t", "r"))]),
        "messages[0].content[0]: tool_result in an assistant message",
    ),
    (
        "image data not base64",
        request(messages=[user(image("not base64!"))]),
        "messages[0].content[0]: image data is not base64",
    ),
    (
        "image data with bad padding",
        request(messages=[user(text("x"), image("abc"))]),
        "messages[0].content[1]: image data is not base64",
    ),
    (
        "tool_result image not base64",
        request(messages=[user(tool_result("t", [image("%%%")]))]),
        "messages[0].content[0].content[0]: image data is not base64",
    ),
    (
        "assistant image (ours)",
        request(messages=[assistant(image())]),
        "messages[0].content[0]: an image in an assistant message",
    ),
]


@pytest.mark.parametrize(
    "doc, detail", [(doc, d) for _, doc, d in BRIDGE_ERRORS], ids=[n for n, *_ in BRIDGE_ERRORS]
)
def test_bridge_refuses_with_400_invalid_request_only_when_translating(doc, detail):
    error = refused(doc, translating=True)
    assert (error.status, error.type, error.message) == (
        400,
        "invalid_request_error",
        "Invalid request",
    )
    assert error.detail == f"format bridge: {detail}"
    with pytest.raises(MessagesError) as info:
        to_chat(doc)
    assert info.value.detail == error.detail
    assert validate_request(doc, translating=False) is None  # [ours]: native passes through


def test_one_cached_system_block_is_allowed_and_sent_as_a_plain_system_message():
    doc = request(system=[text("a"), text("b", cache_control={"type": "ephemeral"})])
    assert to_chat(doc)["messages"][:2] == [
        {"role": "system", "content": "a"},
        {"role": "system", "content": "b"},
    ]


def test_typed_read_runs_before_the_bridge():
    doc = request(cache_control={"type": "ephemeral"}, max_tokens="many")
    assert refused(doc).status == 422


# -- 2.2: request mapping ----------------------------------------------------------------


def chat_messages(*messages: dict, **fields: Any) -> list[dict]:
    return to_chat(request(messages=list(messages), **fields))["messages"]


def test_minimal_request():
    assert to_chat(request()) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
    }


def test_system_string_is_one_system_message_and_blocks_one_each():
    assert chat_messages({"role": "user", "content": "q"}, system="be terse") == [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "q"},
    ]
    assert chat_messages({"role": "user", "content": "q"}, system=[text("a"), text("b")]) == [
        {"role": "system", "content": "a"},
        {"role": "system", "content": "b"},
        {"role": "user", "content": "q"},
    ]


def test_user_text_blocks_join_into_one_string():
    assert chat_messages(user(text("one"), text("two"))) == [
        {"role": "user", "content": "one\ntwo"}
    ]


def test_user_blocks_with_an_image_become_parts_with_a_data_url():
    assert chat_messages(user(text("see"), image("R0lG", "image/gif"), text("ok?"))) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
                {"type": "text", "text": "ok?"},
            ],
        }
    ]


@pytest.mark.parametrize("content", ["", []], ids=["empty string", "no blocks"])
def test_empty_user_turn_is_an_empty_string(content):
    assert chat_messages({"role": "user", "content": content}) == [{"role": "user", "content": ""}]


def test_each_tool_result_is_a_tool_message_before_the_turns_text():
    assert chat_messages(
        user(
            tool_result("t1", "sunny"),
            tool_result("t2", [text("12"), text("degrees")]),
            tool_result("t3"),
            {**tool_result("t4", "boom"), "is_error": True},
            text("thanks"),
        )
    ) == [
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": "12\ndegrees"},
        {"role": "tool", "tool_call_id": "t3", "content": ""},
        {"role": "tool", "tool_call_id": "t4", "content": "boom"},
        {"role": "user", "content": "thanks"},
    ]


def test_a_turn_of_tool_results_only_has_no_user_message():
    assert chat_messages(user(tool_result("t1", "r"))) == [
        {"role": "tool", "tool_call_id": "t1", "content": "r"}
    ]


def test_tool_result_images_go_to_the_user_message_of_the_turn():
    assert chat_messages(user(tool_result("t1", [text("shot:"), image()]), text("what now?"))) == [
        {"role": "tool", "tool_call_id": "t1", "content": "shot:"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "what now?"},
            ],
        },
    ]


def test_assistant_text_joined_and_tool_use_to_tool_calls():
    assert chat_messages(
        {"role": "user", "content": "q"},
        assistant(
            text("Let me"),
            text("check."),
            tool_use("toolu_1", "get_weather", {"city": "Paris", "units": ["c"]}),
            tool_use("toolu_2", "get_time", {}),
        ),
    )[1] == {
        "role": "assistant",
        "content": "Let me\ncheck.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"city":"Paris","units":["c"]}',
                },
            },
            {
                "id": "toolu_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }


def test_assistant_with_tool_use_only_has_null_content_and_empty_one_an_empty_string():
    messages = chat_messages(
        assistant(tool_use("t", "f", {"a": "é"})),
        assistant(),
        {"role": "assistant", "content": "plain"},
    )
    assert messages == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": '{"a":"é"}'}}
            ],
        },
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "plain"},
    ]


@pytest.mark.parametrize(
    "stops, expected",
    [([], None), (["END"], "END"), (["a", "b"], ["a", "b"])],
    ids=["empty: dropped", "one: a string", "more: a list"],
)
def test_stop_sequences_to_stop(stops, expected):
    chat = to_chat(request(stop_sequences=stops))
    assert chat.get("stop") == expected
    assert ("stop" in chat) == (expected is not None)


def test_sampling_user_and_extra_top_k():
    assert to_chat(request(temperature=0.5, top_p=1, top_k=40, metadata={"user_id": "u-1"})) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 1,
        "user": "u-1",
        "top_k": 40,
    }
    assert "user" not in to_chat(request(metadata={}))


def test_stream_asks_for_usage():
    assert to_chat(request(stream=True)) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "stream" not in to_chat(request(stream=False))


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_tools_become_functions():
    chat = to_chat(
        request(
            tools=[
                {"name": "get_weather", "description": "Weather", "input_schema": WEATHER},
                {"type": "custom", "name": "noop", "input_schema": {}, "cache_control": None},
            ]
        )
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
        },
        {"type": "function", "function": {"name": "noop", "parameters": {}}},
    ]
    assert "tool_choice" not in chat


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any", "disable_parallel_tool_use": True}, "required"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
    ids=["auto", "any", "tool"],
)
def test_tool_choice_mapping(choice, expected):
    tools = [{"name": "get_weather", "input_schema": WEATHER}]
    assert to_chat(request(tools=tools, tool_choice=choice))["tool_choice"] == expected


def test_to_chat_leaves_its_argument_unchanged():
    doc = request(
        system=[text("s")],
        messages=[user(text("a"), image()), assistant(tool_use("t", "f", {"x": 1}))],
        stream=True,
    )
    before = copy.deepcopy(doc)
    to_chat(doc)
    assert doc == before


# -- 2.2: response mapping ---------------------------------------------------------------


def completion(message: dict, finish: Any = "stop", usage: Any = None, **extra: Any) -> dict:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-up",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        doc["usage"] = usage
    doc.update(extra)
    return doc


def test_text_response_with_cached_usage_in_exact_key_order():
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    reply = from_chat(completion({"role": "assistant", "content": "Hello"}, usage=usage))
    assert reply == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Hello"}],
        "model": "gpt-up",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 40,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 60,
        },
    }
    assert list(reply) == [
        "id",
        "type",
        "role",
        "content",
        "model",
        "stop_reason",
        "stop_sequence",
        "usage",
    ]
    assert list(reply["usage"]) == [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]


def test_empty_text_is_still_a_block_and_no_usage_is_zeros():
    reply = from_chat(completion({"role": "assistant", "content": ""}))
    assert reply["content"] == [{"type": "text", "text": ""}]
    assert reply["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_tool_calls_become_tool_use_blocks_after_the_text():
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
        ],
    }
    assert from_chat(completion(message, "tool_calls"))["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "noop", "input": {}},
    ]


def test_null_content_with_tool_calls_has_no_text_block():
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    assert from_chat(completion(message, "tool_calls"))["content"] == [
        {"type": "tool_use", "id": "c", "name": "f", "input": {}}
    ]


@pytest.mark.parametrize(
    "finish, expected",
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "content_filter"),
        (None, None),
    ],
)
def test_stop_reason_mapping(finish, expected):
    assert stop_reason(finish) == expected
    assert from_chat(completion({"role": "assistant", "content": "x"}, finish))["stop_reason"] == (
        expected
    )


def bad_arguments(arguments: Any) -> dict:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return completion({"role": "assistant", "content": None, "tool_calls": [call]})


RESPONSE_ERRORS = [
    # (name, completion, status, detail)
    (
        "no choices",
        completion({"role": "assistant"}) | {"choices": []},
        400,
        "format bridge: expected exactly one choice, got 0",
    ),
    (
        "two choices",
        completion({"role": "assistant", "content": "a"})
        | {"choices": [{"message": {"role": "assistant"}}] * 2},
        400,
        "format bridge: expected exactly one choice, got 2",
    ),
    (
        "role not assistant",
        completion({"role": "user", "content": "a"}),
        400,
        "format bridge: choices[0].message.role 'user' is not assistant",
    ),
    (
        "arguments not JSON",
        bad_arguments('{"city": '),
        400,
        (
            "format bridge: 'choices[0].message.tool_calls[0].function.arguments' must be a JSON "
            "object"
        ),
    ),
    (
        "arguments not an object",
        bad_arguments("[1]"),
        400,
        (
            "format bridge: 'choices[0].message.tool_calls[0].function.arguments' must be a JSON "
            "object"
        ),
    ),
    (
        "arguments a number",
        bad_arguments(5),
        400,
        (
            "format bridge: 'choices[0].message.tool_calls[0].function.arguments' must be a JSON "
            "object"
        ),
    ),
    ("not an object", [], 422, "data transform: the completion is not a JSON object"),
    ("choices missing", {"id": "x"}, 422, "data transform: the completion has no choices"),
    (
        "message missing",
        {"choices": [{"index": 0}]},
        422,
        "data transform: choices[0].message is not an object",
    ),
    (
        "content a number",
        completion({"role": "assistant", "content": 3}),
        422,
        "data transform: choices[0].message.content is not a string",
    ),
    (
        "tool call without a function",
        completion({"role": "assistant", "tool_calls": [{"id": "c"}]}),
        422,
        "data transform: choices[0].message.tool_calls[0] is not a function call",
    ),
]


@pytest.mark.parametrize(
    "doc, status, detail",
    [(doc, s, d) for _, doc, s, d in RESPONSE_ERRORS],
    ids=[n for n, *_ in RESPONSE_ERRORS],
)
def test_response_errors(doc, status, detail):
    with pytest.raises(MessagesError) as info:
        from_chat(doc)
    error = info.value
    expected = (
        (400, "invalid_request_error", "Invalid request")
        if status == 400
        else (422, "api_error", "Server error")
    )
    assert (error.status, error.type, error.message) == expected
    assert error.detail == detail


# -- round trips with the opposite translators --------------------------------------------


def test_messages_to_chat_to_anthropic_keeps_the_content():
    doc = {
        "model": "client-name",
        "system": [text("You are terse.")],
        "messages": [
            user(text("What is this?"), image()),
            assistant(text("A picture."), tool_use("toolu_1", "lookup", {"q": "png", "n": 2})),
            user(tool_result("toolu_1", "a logo"), text("Thanks")),
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "stop_sequences": ["END", "STOP"],
        "stream": True,
        "metadata": {"user_id": "u-1"},
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": WEATHER}],
        "tool_choice": {"type": "any"},
    }
    again = to_anthropic_request(to_chat(doc), "client-name")
    assert again == doc


def test_anthropic_response_to_chat_to_messages_keeps_the_content():
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [
            text("Let me look."),
            tool_use("toolu_1", "lookup", {"q": "x", "deep": {"a": [1, 2]}}),
        ],
        "model": "claude-up",
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 70,
        },
    }
    assert from_chat(from_anthropic_response(message, created=1)) == message


# -- 2.3 / 2.5: streaming ----------------------------------------------------------------


def chunk(delta: dict | None = None, finish: Any = None, **extra: Any) -> dict:
    doc: dict[str, Any] = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-up"}
    doc["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    doc.update(extra)
    return doc


def usage_chunk(prompt: int = 11, completion: int = 4, cached: int | None = None) -> dict:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-s", "model": "gpt-up", "choices": [], "usage": usage}


def call(index: int, call_id: str | None = None, name: str | None = None, arguments: Any = None):
    doc: dict[str, Any] = {"index": index}
    function: dict[str, Any] = {}
    if call_id is not None:
        doc.update(id=call_id, type="function")
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    doc["function"] = function
    return doc


def run(*chunks: Any, clean: bool = True, error_text: str | None = None) -> list:
    stream = ChatToMessagesStream()
    events = []
    for c in chunks:
        events += stream.feed(c)
    events += stream.end(clean, error_text)
    return events


MESSAGE_START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "chatcmpl-s",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "gpt-up",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    },
)


def block_start(index: int, block: dict) -> tuple:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_delta(index: int, value: str) -> tuple:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": value},
        },
    )


def json_delta(index: int, value: str) -> tuple:
    delta = {"type": "input_json_delta", "partial_json": value}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> tuple:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(reason: Any, usage: dict | None = None) -> tuple:
    return (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": usage or {"output_tokens": 0},
        },
    )


MESSAGE_STOP = ("message_stop", {"type": "message_stop"})


def error_event(message: str) -> tuple:
    return ("error", {"type": "error", "error": {"type": "api_error", "message": message}})


def test_text_stream_with_usage():
    assert run(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        usage_chunk(prompt=11, completion=4, cached=5),
    ) == [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hel"),
        text_delta(0, "lo"),
        block_stop(0),
        message_delta(
            "end_turn",
            {
                "output_tokens": 4,
                "input_tokens": 6,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 5,
            },
        ),
        MESSAGE_STOP,
    ]


def test_usage_keys_only_after_a_usage_chunk():
    assert run(chunk({"content": "x"}, "length")) == [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "x"),
        block_stop(0),
        message_delta("max_tokens", {"output_tokens": 0}),
        MESSAGE_STOP,
    ]


def test_message_start_has_the_usage_when_the_first_chunk_carries_it():
    first = chunk({"role": "assistant"}) | {"usage": usage_chunk(3, 0)["usage"]}
    events = run(first)
    assert events[0][1]["message"]["usage"] == {
        "input_tokens": 3,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    # started but no block: no block stop, stop_reason null
    assert events[1:] == [
        message_delta(
            None,
            {
                "output_tokens": 0,
                "input_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        ),
        MESSAGE_STOP,
    ]


def test_text_then_two_tool_calls_with_arguments_in_pieces():
    assert run(
        chunk({"role": "assistant", "content": "Let me check."}),
        chunk({"tool_calls": [call(0, "call_a", "get_weather", "")]}),
        chunk({"tool_calls": [call(0, arguments='{"city": ')]}),
        chunk({"tool_calls": [call(0, arguments='"Paris"}')]}),
        chunk({"tool_calls": [call(1, "call_b", "get_time", '{"tz": "CET"}')]}),
        chunk({}, "tool_calls"),
    ) == [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Let me check."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        json_delta(1, '{"city": '),
        json_delta(1, '"Paris"}'),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
        json_delta(2, '{"tz": "CET"}'),
        block_stop(2),
        message_delta("tool_use"),
        MESSAGE_STOP,
    ]


def test_two_tool_calls_in_one_chunk_and_an_id_repeated_on_every_delta():
    assert run(
        chunk({"tool_calls": [call(0, "c1", "f", '{"a":'), call(0, "c1", "f", "1}")]}),
        chunk({"tool_calls": [call(1, "c2", "g", "{}")]}),
        chunk({}, "tool_calls"),
    ) == [
        MESSAGE_START,
        block_start(0, {"type": "tool_use", "id": "c1", "name": "f", "input": {}}),
        json_delta(0, '{"a":'),
        json_delta(0, "1}"),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "c2", "name": "g", "input": {}}),
        json_delta(1, "{}"),
        block_stop(1),
        message_delta("tool_use"),
        MESSAGE_STOP,
    ]


def test_text_after_a_tool_call_opens_a_new_text_block():
    assert run(
        chunk({"tool_calls": [call(0, "c1", "f", "{}")]}),
        chunk({"content": "done"}),
    )[3:6] == [block_stop(0), block_start(1, {"type": "text", "text": ""}), text_delta(1, "done")]


@pytest.mark.parametrize(
    "chunks",
    [(), (usage_chunk(),), ({"id": "x", "choices": []},)],
    ids=["nothing", "a usage chunk only", "an empty chunk"],
)
def test_no_chunk_with_a_choice_gives_no_events(chunks):
    assert run(*chunks) == []


STREAM_ERRORS = [
    # (name, the failing chunk, the error event's message)
    (
        "two choices",
        {"choices": [{"index": 0, "delta": {}}, {"index": 1, "delta": {}}]},
        "format bridge: a stream chunk with 2 choices",
    ),
    (
        "choice index 1",
        {"choices": [{"index": 1, "delta": {"content": "x"}}]},
        "format bridge: a stream chunk with choice index 1",
    ),
    (
        "role user",
        chunk({"role": "user", "content": "x"}),
        "format bridge: a stream chunk with role 'user'",
    ),
    (
        "tool call without a name",
        chunk({"tool_calls": [call(0, "c1")]}),
        "format bridge: a new tool call without type, id and name",
    ),
    (
        "tool call without a type",
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}),
        "format bridge: a new tool call without type, id and name",
    ),
    (
        "arguments with no tool open",
        chunk({"tool_calls": [call(0, arguments="{}")]}),
        "format bridge: arguments for a tool call that is not open",
    ),
    ("chunk not an object", ["x"], "data transform: a stream chunk is not a JSON object"),
    (
        "choices not an array",
        {"choices": {}},
        "data transform: a stream chunk's choices is not an array",
    ),
    (
        "delta not an object",
        {"choices": [{"index": 0, "delta": "x"}]},
        "data transform: a stream chunk's delta is not an object",
    ),
    (
        "content not a string",
        chunk({"content": 5}),
        "data transform: a stream chunk's content is not a string",
    ),
    (
        "usage not an object",
        {"choices": [], "usage": 5},
        "data transform: a stream chunk's usage is not an object",
    ),
    (
        "arguments not a string",
        chunk({"tool_calls": [call(0, "c", "f", {"a": 1})]}),
        "data transform: a stream chunk's tool arguments are not a string",
    ),
]


@pytest.mark.parametrize(
    "bad, message", [(b, m) for _, b, m in STREAM_ERRORS], ids=[n for n, *_ in STREAM_ERRORS]
)
def test_a_bad_chunk_ends_the_stream_with_one_error_event_and_no_message_stop(bad, message):
    stream = ChatToMessagesStream()
    assert stream.feed(chunk({"role": "assistant", "content": "hi"})) == [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "hi"),
    ]
    events = stream.feed(bad)
    assert events[-1] == error_event(message)
    assert [kind for kind, _ in events].count("error") == 1
    assert stream.done
    assert stream.feed(chunk({"content": "more"})) == []
    assert stream.end(True) == []


def test_arguments_for_a_tool_that_is_no_longer_open_are_an_error():
    events = run(
        chunk({"tool_calls": [call(0, "c1", "f", "{")]}),
        chunk({"tool_calls": [call(1, "c2", "g", "{}")]}),
        chunk({"tool_calls": [call(0, arguments="}")]}),
    )
    assert events[-1] == error_event("format bridge: arguments for a tool call that is not open")
    assert MESSAGE_STOP not in events


def test_events_of_a_chunk_before_its_fault_are_kept():
    stream = ChatToMessagesStream()
    events = stream.feed(chunk({"content": "x", "tool_calls": [call(0, "c1")]}))
    assert events == [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "x"),
        error_event("format bridge: a new tool call without type, id and name"),
    ]


def test_a_cut_ends_with_one_error_event_with_the_failures_text():
    assert run(chunk({"content": "par"}), clean=False, error_text="HTTP: connection lost") == [
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "par"),
        error_event("HTTP: connection lost"),
    ]
    assert run(chunk({"content": "x"}), clean=False)[-1] == error_event(
        "stream: the upstream stream ended early"
    )


def test_a_cut_before_any_choice_is_still_an_error_event():
    assert run(clean=False, error_text="HTTP: refused") == [error_event("HTTP: refused")]


def test_a_bad_first_chunk_is_an_error_without_message_start():
    assert run(chunk({"role": "tool"})) == [
        error_event("format bridge: a stream chunk with role 'tool'")
    ]


def test_output_starts_at_the_first_content_block_start():
    stream = ChatToMessagesStream()
    assert stream.feed(chunk({"role": "assistant", "content": ""})) == [MESSAGE_START]
    assert stream.started and not stream.output_started
    events = stream.feed(chunk({"content": "a"}))
    assert stream.output_started
    assert [kind for kind, _ in events if starts_output(kind)] == ["content_block_start"]
    assert not starts_output("message_start") and not starts_output("content_block_delta")


def test_usage_is_the_latest_chat_usage_for_accounting():
    stream = ChatToMessagesStream()
    stream.feed(chunk({"content": "a"}))
    assert stream.usage is None
    stream.feed(usage_chunk(prompt=2, completion=3))
    assert stream.usage == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_end_twice_says_nothing_the_second_time():
    stream = ChatToMessagesStream()
    stream.feed(chunk({"content": "a"}))
    assert stream.end(True)[-1] == MESSAGE_STOP
    assert stream.end(True) == []
    assert stream.end(False, "late") == []
    assert stream.feed(chunk({"content": "b"})) == []


def accumulate(events: list) -> dict:
    """The message a Messages stream says, as a client builds it."""
    message: dict = {}
    buffers: dict[int, str] = {}
    for kind, data in events:
        if kind == "message_start":
            message = copy.deepcopy(data["message"])
        elif kind == "content_block_start":
            assert data["index"] == len(message["content"])
            message["content"].append(copy.deepcopy(data["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                buffers[data["index"]] = buffers.get(data["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop" and data["index"] in buffers:
            message["content"][data["index"]]["input"] = json.loads(buffers[data["index"]])
        elif kind == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    return message


def test_anthropic_stream_to_chat_chunks_to_messages_keeps_the_content():
    """A native Anthropic stream through the chat translator and back."""
    native = tool_stream()
    translator = AnthropicStreamTranslator(created=1)
    chunks = []
    for event in native:
        chunks += translator.feed(SSEEvent(data=json.dumps(event).encode()))
    back = run(*chunks)
    assert [kind for kind, _ in back][-1] == "message_stop"
    original = accumulate([(e["type"], e) for e in native])
    again = accumulate(back)
    assert again["content"] == original["content"]
    assert again["stop_reason"] == original["stop_reason"] == "tool_use"
    assert again["usage"] == {
        "input_tokens": 23,  # input + cache creation: chat counts them as one
        "output_tokens": 42,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
    }


def test_anthropic_sdk_accumulates_the_stream():
    """The official SDK's ``messages.stream()`` accumulator reads our events."""
    streaming = pytest.importorskip("anthropic.lib.streaming._messages")
    events = run(
        chunk({"role": "assistant", "content": "Hi "}),
        chunk({"content": "there."}),
        chunk({"tool_calls": [call(0, "call_a", "get_weather", '{"city":')]}),
        chunk({"tool_calls": [call(0, arguments='"Paris"}')]}),
        chunk({}, "tool_calls"),
        usage_chunk(prompt=9, completion=5),
    )
    snapshot, buffers = None, {}
    for kind, data in events:
        # through the wire: the SDK parses what frame() writes
        parsed = SSEParser().feed(frame(kind, data))
        assert len(parsed) == 1 and parsed[0].event == kind.encode()
        snapshot = streaming.accumulate_event(
            event=json.loads(parsed[0].data), current_snapshot=snapshot, json_bufs=buffers
        )
    assert snapshot is not None
    message = snapshot.to_dict()
    assert message["content"] == [
        {"type": "text", "text": "Hi there."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 9 and message["usage"]["output_tokens"] == 5


# -- frames and error bodies -------------------------------------------------------------


def test_frame_is_anthropics_event_then_data():
    data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "é"}}
    assert frame("content_block_delta", data) == (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\xc3\xa9"}}\n\n'
    )
    [event] = SSEParser().feed(frame("content_block_delta", data))
    assert event.event == b"content_block_delta" and json.loads(event.data) == data


def test_error_body():
    assert error_body("not_found_error", "Model 'x' not found", "req_abc") == (
        b'{"type":"error","error":{"type":"not_found_error","message":"Model \'x\' not found"},'
        b'"request_id":"req_abc"}'
    )
    body = json.loads(error_body("api_error", "Server error"))
    assert re.fullmatch(r"req_[0-9a-f]{32}", body["request_id"])
    assert new_request_id() != new_request_id()


SITUATION_ROWS = [
    ("model_not_found", 404, "not_found_error", "Model 'gpt-x' not found"),
    ("model_forbidden", 403, "permission_error", "Access to model 'gpt-x' is forbidden"),
    ("rate_limited", 429, "rate_limit_error", "Rate limit exceeded"),
    ("internal", 500, "api_error", "Internal server error"),
    ("timeout", 504, "timeout_error", "Provider request timed out"),
    ("invalid", 400, "invalid_request_error", "Invalid request"),
    ("transform", 422, "api_error", "Server error"),
    ("not_supported", 501, "api_error", "Server error"),
    ("unavailable", 502, "overloaded_error", "Upstream service unavailable"),
]


@pytest.mark.parametrize("situation, status, kind, message", SITUATION_ROWS)
def test_map_error_gateway_situations(situation, status, kind, message):
    error = map_error(situation, model="gpt-x", detail="why")
    assert (error.status, error.type, error.message, error.detail) == (status, kind, message, "why")
    assert set(SITUATIONS) == {row[0] for row in SITUATION_ROWS}


@pytest.mark.parametrize(
    "status, kind, message",
    [
        (401, "authentication_error", "Authentication failed"),
        (402, "billing_error", "Payment required"),
        (403, "permission_error", "Permission denied"),
        (404, "not_found_error", "Requested resource not found"),
        (413, "request_too_large", "Request payload too large"),
        (429, "rate_limit_error", "Rate limit exceeded"),
        (408, "timeout_error", "Upstream request timed out"),
        (504, "timeout_error", "Upstream request timed out"),
        (502, "overloaded_error", "Upstream service unavailable"),
        (503, "overloaded_error", "Upstream service unavailable"),
        (500, "api_error", "Provider error"),
        (501, "api_error", "Provider error"),
        (529, "api_error", "overloaded_error"),
        (400, "invalid_request_error", "Provider error"),
        (422, "invalid_request_error", "Provider error"),
        (409, "invalid_request_error", "Provider error"),
    ],
)
def test_map_error_upstream_status_is_kept(status, kind, message):
    error = map_error("upstream", upstream_status=status)
    assert (error.status, error.type, error.message) == (status, kind, message)


def test_map_error_refuses_what_it_does_not_know():
    with pytest.raises(KeyError):
        map_error("bogus")
    with pytest.raises(KeyError):
        map_error("upstream")


# -- properties --------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def mostly(valid: st.SearchStrategy, odds: int = 10) -> st.SearchStrategy:
    """``valid``, but once in ``odds`` any JSON value: the search reaches past
    the first check and still tries every wrong type."""
    return st.integers(1, odds).flatmap(lambda n: JSONISH if n == 1 else valid)


WORD = st.sampled_from(["a", "b c", "", "é"])
CACHE = st.sampled_from([{"type": "ephemeral"}, {"ttl": "5m"}])
TEXT_BLOCK = st.fixed_dictionaries(
    {"type": st.just("text"), "text": mostly(WORD)},
    optional={"cache_control": CACHE},
)
IMAGE_BLOCK = st.fixed_dictionaries(
    {
        "type": st.just("image"),
        "source": mostly(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["base64", "base64", "url"]),
                    "media_type": st.just("image/png"),
                    "data": st.sampled_from([PNG, PNG, "%%", "abc"]),
                }
            )
        ),
    }
)
TOOL_USE_BLOCK = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": mostly(st.sampled_from(["t1", "t2"])),
        "name": mostly(st.just("f")),
        "input": mostly(st.dictionaries(st.text(max_size=3), JSONISH, max_size=3)),
    }
)
TOOL_RESULT_BLOCK = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": mostly(st.sampled_from(["t1", "t2"]))},
    optional={
        "content": mostly(
            st.one_of(WORD, st.lists(st.one_of(TEXT_BLOCK, IMAGE_BLOCK), max_size=3))
        ),
        "is_error": mostly(st.booleans()),
    },
)
OTHER_BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["thinking", "document", "redacted_thinking"])}
)
BLOCK = st.one_of(TEXT_BLOCK, IMAGE_BLOCK, TOOL_USE_BLOCK, TOOL_RESULT_BLOCK, mostly(OTHER_BLOCK))
MESSAGE = st.fixed_dictionaries(
    {
        "role": mostly(st.sampled_from(["user", "assistant", "user", "assistant", "system"])),
        "content": mostly(st.one_of(WORD, st.lists(BLOCK, max_size=4))),
    }
)
TOOL = st.fixed_dictionaries(
    {"name": mostly(st.just("f")), "input_schema": mostly(st.just({"type": "object"}))},
    optional={"type": st.sampled_from(["custom", "bash_20250124"]), "description": WORD},
)
BODY = st.fixed_dictionaries(
    {
        "model": mostly(st.just("m")),
        "messages": mostly(st.lists(MESSAGE, max_size=4)),
        "max_tokens": mostly(st.integers(-5, 2**33)),
    },
    optional={
        "system": mostly(st.one_of(WORD, st.lists(TEXT_BLOCK, max_size=3))),
        "stop_sequences": mostly(st.lists(WORD, max_size=3)),
        "stream": mostly(st.booleans()),
        "top_k": mostly(st.integers(0, 50)),
        "temperature": mostly(st.floats(0, 1)),
        "metadata": mostly(st.fixed_dictionaries({}, optional={"user_id": mostly(WORD)})),
        "tools": mostly(st.lists(TOOL, max_size=3)),
        "tool_choice": mostly(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["auto", "any", "tool", "none"])},
                optional={"name": mostly(st.just("f"))},
            )
        ),
        "cache_control": mostly(CACHE),
    },
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(JSONISH, BODY))
def test_to_chat_raises_nothing_but_messages_error(doc):
    try:
        chat = to_chat(doc)
    except MessagesError as error:
        assert error.status in (400, 422)
        return
    assert json.loads(json.dumps(chat))["messages"] is not None


def rare_junk(valid: st.SearchStrategy) -> st.SearchStrategy:
    return mostly(valid, odds=40)


TOOL_CALL = st.fixed_dictionaries(
    {"index": rare_junk(st.integers(0, 2))},
    optional={
        "id": rare_junk(st.sampled_from(["c1", "c2", "c3"])),
        "type": st.sampled_from(["function"] * 9 + ["x"]),
        "function": rare_junk(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["f", "g"]),
                    "arguments": rare_junk(st.sampled_from(["", "{", '"a":1', "}"])),
                },
            )
        ),
    },
)
DELTA = st.fixed_dictionaries(
    {},
    optional={
        "role": rare_junk(st.sampled_from(["assistant"] * 19 + ["user"])),
        "content": rare_junk(st.sampled_from(["", "a", "bc", None])),
        "tool_calls": rare_junk(st.lists(TOOL_CALL, max_size=2)),
    },
)
CHOICE = st.fixed_dictionaries(
    {"delta": rare_junk(DELTA)},
    optional={
        "index": st.sampled_from([0] * 19 + [1]),
        "finish_reason": rare_junk(st.sampled_from(["stop", "tool_calls", None])),
    },
)
# one choice, now and then none or several
one_choice_mostly = st.integers(1, 20).flatmap(
    lambda n: st.lists(CHOICE, max_size=3) if n == 1 else st.lists(CHOICE, min_size=1, max_size=1)
)
CHUNK = rare_junk(
    st.fixed_dictionaries(
        {"choices": one_choice_mostly},
        optional={
            "id": st.just("chatcmpl-h"),
            "model": st.just("gpt-h"),
            "usage": st.sampled_from([None, {"prompt_tokens": 3, "completion_tokens": 1}]),
        },
    )
)


def check_sequence(events: list) -> None:
    """The Messages event grammar: message_start first, blocks in order, each
    delta to the open block, at most one end (message_stop or error), last."""
    kinds = [kind for kind, _ in events]
    ends = [i for i, kind in enumerate(kinds) if kind in ("message_stop", "error")]
    assert len(ends) <= 1
    if ends:
        assert ends[0] == len(events) - 1, "an event after the end"
    if events and kinds[0] != "error":
        assert kinds[0] == "message_start"
        assert kinds.count("message_start") == 1
    open_index, next_index = None, 0
    for kind, data in events:
        assert data["type"] == kind
        if kind == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = next_index, next_index + 1
        elif kind == "content_block_delta":
            assert data["index"] == open_index
        elif kind == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif kind == "message_delta":
            assert open_index is None
            assert kinds[-1] == "message_stop"


@settings(max_examples=400, deadline=None)
@given(st.lists(CHUNK, max_size=8), st.booleans(), st.lists(CHUNK, max_size=2))
def test_stream_events_follow_the_grammar_and_nothing_follows_the_end(chunks, clean, late):
    stream = ChatToMessagesStream()
    events = []
    for c in chunks:
        events += stream.feed(c)
    events += stream.end(clean, "HTTP: cut")
    check_sequence(events)
    for c in late:
        assert stream.feed(c) == []
    assert stream.end(True) == []
    assert all(isinstance(frame(kind, data), bytes) for kind, data in events)
