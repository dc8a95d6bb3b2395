"""Anthropic Messages API (``POST /v1/messages``) to and from chat completions.

The pure half of CONTRACT-NEXT 2 for models whose provider is not
``anthropic`` ("via chat"): no I/O, no Twisted. The route validates the
client's body, sends :func:`to_chat`'s request to the chat provider, and
answers with :func:`from_chat` (non-stream) or with the events of a
:class:`ChatToMessagesStream`, each written with :func:`frame`. Every
failure is a :class:`MessagesError`, written with :func:`error_body`;
:func:`map_error` gives the 2.4 row for the gateway's own failures. The
opposite direction (chat clients on anthropic models) is
:mod:`twisted_gw.providers.anthropic_translate`.

Request checks (CONTRACT-NEXT 2.1)
==================================

AISIX reads the body into typed structs (unknown keys dropped), then runs the
chat bridge on it. :func:`validate_request` does the same in that order:

- **422** (``invalid_request_error``) for what the typed read refuses, with
  axum's text for a typed-deserialization failure,
  ``Failed to deserialize the JSON body into the target type: <path>: <what>``.
  ``<what>`` is serde's wording (``missing field `model```, ``invalid type:
  string "x", expected u32``, ``unknown variant `thinking`, expected one of
  ...``) without serde's ``at line L column C`` (the body was parsed already);
  where AISIX's untagged enums would only say ``data did not match any
  variant``, the field that failed is named instead. This covers the required
  fields (``model``, ``messages`` with ``role`` and ``content`` each,
  ``max_tokens`` as u32), every listed field of the wrong type, and what is
  not supported at all: ``thinking``/``document``/other blocks, an image
  source other than ``base64`` (url images), server tools (a tool whose
  ``type`` is not ``custom``), ``tool_choice`` ``none``.
- **400** ``Invalid request`` for the bridge's refusals, only when
  ``translating`` (**[ours]**: AISIX runs the bridge on the native path too):
  a top-level ``cache_control``; ``cache_control`` on any message block; more
  than one system block with ``cache_control``; a role other than ``user`` or
  ``assistant``; ``tool_use`` in a user turn, ``tool_result`` in an assistant
  turn; image ``data`` that is not base64; and (ours, a chat assistant message
  has no images) an image in an assistant turn. The reason is kept in
  :attr:`MessagesError.detail` for the log, never shown to the client.

Request mapping (CONTRACT-NEXT 2.2, :func:`to_chat`)
====================================================

========================  =====================================================
Messages field            chat completions
========================  =====================================================
model                     ``model`` as sent (the caller puts the upstream id)
system                    one ``system`` message per block (a string: one)
user turn                 each ``tool_result`` -> a ``tool`` message (first,
                          in order); text/image blocks -> one ``user``
                          message: text only -> the texts joined with ``\\n``,
                          with images -> ``text``/``image_url`` parts
                          (``data:<media type>;base64,<data>``); a turn with
                          nothing -> ``""``
assistant turn            texts joined with ``\\n`` (none: ``null`` beside
                          tool calls, else ``""``); ``tool_use`` ->
                          ``tool_calls`` (arguments: compact JSON text)
max_tokens                ``max_tokens``
temperature, top_p        as is
top_k                     an extra key ``top_k`` (chat has none; many
                          OpenAI-compatible servers read it)
stop_sequences            ``stop``: a string for one, a list for more,
                          dropped when empty
stream                    ``stream: true`` + ``stream_options.include_usage``
metadata.user_id          ``user``
tools                     ``{type: function, function: {name, description,
                          parameters}}`` (description only when given)
tool_choice               auto -> ``"auto"``, any -> ``"required"``, tool ->
                          ``{type: function, function: {name}}``
cache_control, unknown    dropped (the typed read drops unknown keys; a
keys, is_error,           single cached system block is allowed and sent as
disable_parallel_tool_use a plain system message)
========================  =====================================================

``tool_result`` content: a string as is, blocks -> their texts joined with
``\\n``; an image in a tool result (chat ``tool`` messages carry text only)
goes into the ``user`` message of the same turn, before the turn's own blocks.
"""

from __future__ import annotations

import binascii
import uuid
from typing import Any

from twisted_gw.errors import GatewayError
from twisted_gw.formats._serde import DESERIALIZE, unexpected
from twisted_gw.jsonutil import dumps
from twisted_gw.providers.anthropic_translate import tool_input

#: the content blocks of a message the typed read knows
_BLOCKS = ("text", "image", "tool_use", "tool_result")
#: ... and the ones a ``tool_result``'s content may hold
_RESULT_BLOCKS = ("text", "image")
_TOOL_CHOICES = ("auto", "any", "tool")
_U32_MAX = 2**32 - 1


class MessagesError(GatewayError):
    """A failure on ``/v1/messages``, in Anthropic's terms: ``status``, error
    ``type`` and the ``message`` shown to the client; ``detail`` says why,
    for the log (it may name what the client sent; the message never shows
    an upstream's body). A :class:`~twisted_gw.errors.GatewayError`, so the
    request's owner ends it as any other failure; write it with
    :func:`error_body`, not ``GatewayError.body``."""

    def __init__(self, status: int, type: str, message: str, detail: str | None = None) -> None:
        super().__init__(status, message, type=type)
        self.detail = message if detail is None else detail

    def __repr__(self) -> str:
        return f"MessagesError({self.status}, {self.type!r}, {self.message!r})"


def _bridge(detail: str) -> MessagesError:
    """AISIX's ``format bridge`` error: 400 ``Invalid request`` (2.4)."""
    return MessagesError(
        400, "invalid_request_error", "Invalid request", f"format bridge: {detail}"
    )


def _transform(detail: str) -> MessagesError:
    """AISIX's ``data transform`` error: 422 ``Server error`` (2.4)."""
    return MessagesError(422, "api_error", "Server error", f"data transform: {detail}")


# -- typed read (422) --------------------------------------------------------------------


def _shape(path: str, what: str) -> MessagesError:
    """422 with axum's typed-deserialization text; ``path`` as serde_path_to_error
    writes it (none at the top level)."""
    text = f"{path}: {what}" if path else what
    return MessagesError(422, "invalid_request_error", DESERIALIZE + text)


def _invalid_type(path: str, value: Any, expected: str) -> MessagesError:
    return _shape(path, f"invalid type: {unexpected(value)}, expected {expected}")


def _unknown_variant(path: str, value: Any, expected: tuple[str, ...]) -> MessagesError:
    if not isinstance(value, str):
        return _invalid_type(path, value, "a string")
    if len(expected) == 1:
        return _shape(path, f"unknown variant `{value}`, expected `{expected[0]}`")
    names = ", ".join(f"`{name}`" for name in expected)
    return _shape(path, f"unknown variant `{value}`, expected one of {names}")


def _field(doc: dict, name: str, path: str, required: bool = False) -> Any:
    """``doc[name]``; null is absent (serde's ``Option``), absent may not be required."""
    value = doc.get(name)
    if value is None and required:
        if name in doc:
            return value  # present but null: the caller's type check says so
        raise _shape(path, f"missing field `{name}`")
    return value


def _sub(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _string(doc: dict, name: str, path: str, required: bool = False) -> str | None:
    value = _field(doc, name, path, required)
    if (value is not None or required) and not isinstance(value, str):
        raise _invalid_type(_sub(path, name), value, "a string")
    return value


def _u32(doc: dict, name: str, path: str = "", required: bool = False) -> None:
    value = _field(doc, name, path, required)
    if value is None and not required:
        return
    where = _sub(path, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid_type(where, value, "u32")
    if not 0 <= value <= _U32_MAX:
        raise _shape(where, f"invalid value: integer `{value}`, expected u32")


def _number(doc: dict, name: str) -> None:
    value = doc.get(name)
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise _invalid_type(name, value, "f32")


def _object(doc: dict, name: str, path: str, expected: str, required: bool = False) -> dict | None:
    value = _field(doc, name, path, required)
    if (value is not None or required) and not isinstance(value, dict):
        raise _invalid_type(_sub(path, name), value, expected)
    return value


def _array(doc: dict, name: str, path: str, required: bool = False) -> list | None:
    value = _field(doc, name, path, required)
    if (value is not None or required) and not isinstance(value, list):
        raise _invalid_type(_sub(path, name), value, "a sequence")
    return value


def _cache_control(block: dict, path: str) -> None:
    control = _object(block, "cache_control", path, "struct CacheControl")
    if control is not None:
        where = _sub(path, "cache_control")
        _string(control, "type", where, required=True)
        _string(control, "ttl", where)


def _text_block(block: dict, path: str) -> None:
    _string(block, "text", path, required=True)


def _image_block(block: dict, path: str) -> None:
    source = _object(block, "source", path, "struct ImageSource", required=True)
    assert source is not None
    where = f"{path}.source"
    kind = _string(source, "type", where, required=True)
    if kind != "base64":
        raise _unknown_variant(f"{where}.type", kind, ("base64",))
    _string(source, "media_type", where, required=True)
    _string(source, "data", where, required=True)


def _tool_use_block(block: dict, path: str) -> None:
    _string(block, "id", path, required=True)
    _string(block, "name", path, required=True)
    _object(block, "input", path, "a map", required=True)


def _tool_result_block(block: dict, path: str) -> None:
    _string(block, "tool_use_id", path, required=True)
    content = block.get("content")
    if isinstance(content, list):
        _blocks(content, f"{path}.content", _RESULT_BLOCKS)
    elif content is not None and not isinstance(content, str):
        raise _invalid_type(f"{path}.content", content, "a string or a sequence of blocks")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _invalid_type(f"{path}.is_error", is_error, "a boolean")


_BLOCK_CHECKS = {
    "text": _text_block,
    "image": _image_block,
    "tool_use": _tool_use_block,
    "tool_result": _tool_result_block,
}


def _blocks(blocks: list, path: str, kinds: tuple[str, ...]) -> None:
    for i, block in enumerate(blocks):
        here = f"{path}[{i}]"
        if not isinstance(block, dict):
            raise _invalid_type(here, block, "internally tagged enum ContentBlock")
        kind = _string(block, "type", here, required=True)
        if kind not in kinds:
            raise _unknown_variant(f"{here}.type", kind, kinds)
        _BLOCK_CHECKS[kind](block, here)
        _cache_control(block, here)


def _content(message: dict, path: str) -> None:
    content = _field(message, "content", path, required=True)
    if isinstance(content, list):
        _blocks(content, f"{path}.content", _BLOCKS)
    elif not isinstance(content, str):
        raise _invalid_type(f"{path}.content", content, "a string or a sequence of blocks")


def _system(doc: dict) -> None:
    system = doc.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            here = f"system[{i}]"
            if not isinstance(block, dict):
                raise _invalid_type(here, block, "struct SystemBlock")
            kind = _string(block, "type", here, required=True)
            if kind != "text":
                raise _unknown_variant(f"{here}.type", kind, ("text",))
            _text_block(block, here)
            _cache_control(block, here)
    elif system is not None and not isinstance(system, str):
        raise _invalid_type("system", system, "a string or a sequence of system blocks")


def _tools(doc: dict) -> None:
    for i, tool in enumerate(_array(doc, "tools", "") or ()):
        here = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid_type(here, tool, "struct Tool")
        kind = tool.get("type")
        if kind is not None and kind != "custom":  # web_search_*, bash_*, ...: server tools
            raise _unknown_variant(f"{here}.type", kind, ("custom",))
        _string(tool, "name", here, required=True)
        _string(tool, "description", here)
        _object(tool, "input_schema", here, "a map", required=True)


def _tool_choice(doc: dict) -> None:
    choice = _object(doc, "tool_choice", "", "internally tagged enum ToolChoice")
    if choice is not None:
        kind = _string(choice, "type", "tool_choice", required=True)
        if kind not in _TOOL_CHOICES:
            raise _unknown_variant("tool_choice.type", kind, _TOOL_CHOICES)
        if kind == "tool":
            _string(choice, "name", "tool_choice", required=True)


def _typed(doc: Any) -> None:
    """What AISIX's typed read (``Json<MessagesRequest>``) refuses: 422."""
    if not isinstance(doc, dict):
        raise _invalid_type("", doc, "struct MessagesRequest")
    _string(doc, "model", "", required=True)
    messages = _array(doc, "messages", "", required=True)
    assert messages is not None
    for i, message in enumerate(messages):
        here = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid_type(here, message, "struct Message")
        _string(message, "role", here, required=True)
        _content(message, here)
    _u32(doc, "max_tokens", required=True)
    _system(doc)
    _cache_control(doc, "")
    _number(doc, "temperature")
    _number(doc, "top_p")
    _u32(doc, "top_k")
    for i, stop in enumerate(_array(doc, "stop_sequences", "") or ()):
        if not isinstance(stop, str):
            raise _invalid_type(f"stop_sequences[{i}]", stop, "a string")
    stream = doc.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", stream, "a boolean")
    metadata = _object(doc, "metadata", "", "struct Metadata")
    if metadata is not None:
        _string(metadata, "user_id", "metadata")
    _tools(doc)
    _tool_choice(doc)


# -- the chat bridge (400) ---------------------------------------------------------------


def _is_base64(data: str) -> bool:
    try:
        binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeEncodeError):  # binascii.Error is a ValueError
        return False
    return True


def _bridge_block(block: dict, where: str, role: str) -> None:
    if block.get("cache_control") is not None:
        raise _bridge(f"{where}: cache_control on a message block")
    kind = block["type"]
    if kind == "image":
        if role == "assistant":
            raise _bridge(f"{where}: an image in an assistant message")
        if not _is_base64(block["source"]["data"]):
            raise _bridge(f"{where}: image data is not base64")
    elif kind == "tool_use" and role == "user":
        raise _bridge(f"{where}: tool_use in a user message")
    elif kind == "tool_result":
        if role == "assistant":
            raise _bridge(f"{where}: tool_result in an assistant message")
        content = block.get("content")
        for j, inner in enumerate(content if isinstance(content, list) else ()):
            _bridge_block(inner, f"{where}.content[{j}]", role)


def _bridged(doc: dict) -> None:
    """What the chat bridge refuses of a typed request: 400 (only when translating)."""
    if doc.get("cache_control") is not None:
        raise _bridge("top-level cache_control")
    system = doc.get("system")
    if isinstance(system, list):
        cached = [block for block in system if block.get("cache_control") is not None]
        if len(cached) > 1:
            raise _bridge("more than one system block with cache_control")
    for i, message in enumerate(doc["messages"]):
        role = message["role"]
        if role not in ("user", "assistant"):
            raise _bridge(f"messages[{i}].role {role!r} is not user or assistant")
        content = message["content"]
        for j, block in enumerate(content if isinstance(content, list) else ()):
            _bridge_block(block, f"messages[{i}].content[{j}]", role)


def validate_request(doc: Any, translating: bool = True) -> None:
    """Refuse a ``/v1/messages`` body as CONTRACT-NEXT 2.1 does (see the module
    docstring): 422 for what the typed read refuses, then, only when
    ``translating`` (the via-chat path), 400 ``Invalid request`` for what the
    chat bridge refuses. Returns None for a body that may be sent on."""
    _typed(doc)
    if translating:
        _bridged(doc)


# -- request: Messages -> chat -----------------------------------------------------------


def _joined(texts: list[str]) -> str:
    return "\n".join(texts)


def _data_url(source: dict) -> str:
    return f"data:{source['media_type']};base64,{source['data']}"


def _image_part(block: dict) -> dict:
    return {"type": "image_url", "image_url": {"url": _data_url(block["source"])}}


def _tool_message(block: dict, images: list[dict]) -> dict:
    """A ``tool`` message for a ``tool_result``; its images go to ``images``."""
    content = block.get("content")
    if isinstance(content, list):
        images.extend(_image_part(b) for b in content if b["type"] == "image")
        content = _joined([b["text"] for b in content if b["type"] == "text"])
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": content or ""}


def _user_messages(content: str | list) -> list[dict]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    messages: list[dict] = []
    parts: list[dict] = []
    for block in content:
        kind = block["type"]
        if kind == "tool_result":
            messages.append(_tool_message(block, parts))
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        else:
            parts.append(_image_part(block))
    if any(part["type"] == "image_url" for part in parts):
        messages.append({"role": "user", "content": parts})
    elif parts or not messages:
        messages.append({"role": "user", "content": _joined([p["text"] for p in parts])})
    return messages


def _assistant_message(content: str | list) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts = [block["text"] for block in content if block["type"] == "text"]
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": dumps(block["input"]).decode()},
        }
        for block in content
        if block["type"] == "tool_use"
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": _joined(texts) if texts else (None if calls else ""),
    }
    if calls:
        message["tool_calls"] = calls
    return message


def _chat_tool(tool: dict) -> dict:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: dict) -> Any:
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return "required" if kind == "any" else "auto"


def to_chat(doc: Any) -> dict:
    """The chat-completions request for a ``/v1/messages`` body (the table of
    the module docstring). Validates it first (:func:`validate_request`,
    translating): raises :class:`MessagesError` and nothing else."""
    validate_request(doc, translating=True)
    system = doc.get("system")
    blocks = [{"text": system}] if isinstance(system, str) else system or []
    messages = [{"role": "system", "content": block["text"]} for block in blocks]
    for message in doc["messages"]:
        if message["role"] == "user":
            messages.extend(_user_messages(message["content"]))
        else:
            messages.append(_assistant_message(message["content"]))
    chat: dict[str, Any] = {"model": doc["model"], "messages": messages}
    chat["max_tokens"] = doc["max_tokens"]
    for name in ("temperature", "top_p"):
        if doc.get(name) is not None:
            chat[name] = doc[name]
    stops = doc.get("stop_sequences") or []
    if stops:
        chat["stop"] = stops[0] if len(stops) == 1 else stops
    if doc.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    user = (doc.get("metadata") or {}).get("user_id")
    if user is not None:
        chat["user"] = user
    if doc.get("tools"):
        chat["tools"] = [_chat_tool(tool) for tool in doc["tools"]]
    if doc.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(doc["tool_choice"])
    if doc.get("top_k") is not None:
        chat["top_k"] = doc["top_k"]
    return chat


# -- response: chat -> Messages ----------------------------------------------------------

#: chat ``finish_reason`` -> Messages ``stop_reason``; any other passes verbatim
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def stop_reason(finish_reason: Any) -> Any:
    """The Messages ``stop_reason`` for a chat ``finish_reason`` (None stays None)."""
    return STOP_REASONS.get(finish_reason, finish_reason)


def _count(usage: dict, name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage_counts(usage: Any) -> tuple[int, int, int]:
    """(input, output, cache read) of a chat ``usage``: Messages counts the
    cached prompt tokens apart from ``input_tokens``."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _count(details, "cached_tokens") if isinstance(details, dict) else 0
    prompt = _count(usage, "prompt_tokens")
    return max(prompt - cached, 0), _count(usage, "completion_tokens"), cached


def messages_usage(usage: Any) -> dict:
    """The Messages ``usage`` for a chat ``usage`` (2.2): input = prompt - cached,
    cache read = cached, cache creation 0 (chat does not report it)."""
    input_tokens, output_tokens, cached = _usage_counts(usage)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _tool_input(arguments: Any, where: str) -> dict:
    """A chat tool call's JSON-text ``arguments`` as a ``tool_use.input`` object
    (none or ``""``: ``{}``); anything else is the bridge's 400."""
    try:
        return tool_input(arguments, where)
    except GatewayError as error:
        raise _bridge(error.message) from None


def _tool_use(call: Any, where: str) -> dict:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise _transform(f"{where} is not a function call")
    if not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
        raise _transform(f"{where} has no id or name")
    return {
        "type": "tool_use",
        "id": call["id"],
        "name": function["name"],
        "input": _tool_input(function.get("arguments"), where),
    }


def from_chat(completion: Any) -> dict:
    """The Messages response for a chat completion (2.2): exactly one choice
    with role assistant (else 400 ``Invalid request``); its text, even ``""``,
    then its tool calls (arguments that are not a JSON object: 400); a shape
    no chat completion has: 422 ``Server error``. Keys in AISIX's order."""
    if not isinstance(completion, dict):
        raise _transform("the completion is not a JSON object")
    choices = completion.get("choices")
    if not isinstance(choices, list):
        raise _transform("the completion has no choices")
    if len(choices) != 1:
        raise _bridge(f"expected exactly one choice, got {len(choices)}")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _transform("choices[0].message is not an object")
    if message.get("role") != "assistant":
        raise _bridge(f"choices[0].message.role {message.get('role')!r} is not assistant")
    content: list[dict] = []
    text = message.get("content")
    if isinstance(text, str):
        content.append({"type": "text", "text": text})
    elif text is not None:
        raise _transform("choices[0].message.content is not a string")
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _transform("choices[0].message.tool_calls is not an array")
    for k, call in enumerate(calls or ()):
        content.append(_tool_use(call, f"choices[0].message.tool_calls[{k}]"))
    return {
        "id": completion.get("id"),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": completion.get("model"),
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": messages_usage(completion.get("usage")),
    }


# -- streaming: chat chunks -> Messages events -------------------------------------------

Event = tuple[str, dict]


class _Fault(Exception):
    """The stream cannot go on: ends it with one ``error`` event."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def starts_output(event_type: str) -> bool:
    """Whether an event of this type "starts output" (2.5: the first
    ``content_block_start``), for the first-token metric."""
    return event_type == "content_block_start"


class ChatToMessagesStream:
    """Turns one chat-completions stream into Messages events (2.3, 2.5).

    Feed it every parsed chunk (:meth:`feed`), then :meth:`end` once. Each
    call returns ``(event type, data)`` pairs, for :func:`frame`. Guarantees:
    no events at all unless a chunk with a choice came; ``message_start``
    first; blocks numbered 0, 1, ... each started before its deltas and
    stopped before the next starts; the stream ends with ``message_stop``
    (clean end) or with exactly one ``error`` event (a chunk with more than
    one choice, a choice index other than 0, a role other than assistant, a
    tool call without type, id and name, arguments for a tool call that is
    not the open one, a chunk of the wrong shape, or a cut), and nothing
    comes after either. Empty text deltas start no block.

    **[ours]**, where AISIX's events break Anthropic's SDKs (its Python SDK's
    ``messages.stream()`` appends to ``message.content`` and reads
    ``usage.output_tokens``): ``message_start`` carries Anthropic's full
    message, ``content: []``, ``stop_reason``/``stop_sequence`` null and
    ``usage`` with ``input_tokens`` and ``output_tokens`` (0 until a usage
    chunk told them, the cache counts only once told); ``message_delta``
    carries ``stop_sequence: null`` and always ``output_tokens``, the other
    usage keys only after a usage chunk (so the real counts arrive there,
    where the SDKs overwrite the start's).
    """

    def __init__(self) -> None:
        #: true once ``message_start`` went out
        self.started = False
        #: true once the stream ended (``message_stop``, ``error``, or nothing to say)
        self.done = False
        #: true once the first ``content_block_start`` went out (:func:`starts_output`)
        self.output_started = False
        #: the latest chat ``usage`` object of the stream, for token accounting
        self.usage: dict | None = None
        self._stop_reason: Any = None
        self._index = -1  # of the open (or last) block
        self._open: str | None = None  # "text" | "tool_use" | None
        self._tool: tuple[Any, str] | None = None  # (chat index, id) of the open tool block
        self._events: list[Event] = []

    # -- the two calls -------------------------------------------------------------------

    def feed(self, chunk: Any) -> list[Event]:
        """The events for one parsed chat chunk (often none)."""
        if self.done:
            return []
        try:
            self._chunk(chunk)
        except _Fault as fault:
            self._fail(fault.text)
        return self._take()

    def end(self, clean: bool, error_text: str | None = None) -> list[Event]:
        """The last events: on a clean end, if started, the open block's stop,
        ``message_delta`` and ``message_stop``; else one ``error`` event with
        ``error_text`` (AISIX's Display of the failure, ``HTTP: ...``, ``stream:
        ...``). Before any choice a clean end says nothing (2.5); a failed one
        still gives the error event: the caller that sent nothing yet may
        answer with a JSON error instead."""
        if self.done:
            return []
        if not clean:
            self._fail(error_text or "stream: the upstream stream ended early")
        elif self.started:
            self._close_block()
            delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
            self._emit("message_delta", {"delta": delta, "usage": self._delta_usage()})
            self._emit("message_stop", {})
        self.done = True
        return self._take()

    # -- events --------------------------------------------------------------------------

    def _emit(self, kind: str, body: dict) -> None:
        self._events.append((kind, {"type": kind, **body}))

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _fail(self, text: str) -> None:
        self._emit("error", {"error": {"type": "api_error", "message": text}})
        self.done = True

    def _start_usage(self) -> dict:
        if self.usage is None:
            return {"input_tokens": 0, "output_tokens": 0}
        return messages_usage(self.usage)

    def _delta_usage(self) -> dict:
        if self.usage is None:
            return {"output_tokens": 0}
        usage = messages_usage(self.usage)
        return {"output_tokens": usage.pop("output_tokens"), **usage}

    def _start(self, chunk: dict) -> None:
        chunk_id, model = chunk.get("id"), chunk.get("model")
        message = {
            "id": chunk_id if isinstance(chunk_id, str) else "",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model if isinstance(model, str) else "",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._start_usage(),
        }
        self._emit("message_start", {"message": message})
        self.started = True

    def _close_block(self) -> None:
        if self._open is not None:
            self._emit("content_block_stop", {"index": self._index})
            self._open = None
            self._tool = None

    def _open_block(self, block: dict) -> None:
        self._close_block()
        self._index += 1
        self._open = block["type"]
        self._emit("content_block_start", {"index": self._index, "content_block": block})
        self.output_started = True

    def _delta(self, delta: dict) -> None:
        self._emit("content_block_delta", {"index": self._index, "delta": delta})

    # -- chunks --------------------------------------------------------------------------

    def _chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            raise _Fault("data transform: a stream chunk is not a JSON object")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        elif usage is not None:
            raise _Fault("data transform: a stream chunk's usage is not an object")
        choices = chunk.get("choices")
        if choices is None or choices == []:
            return  # the usage chunk (choices: []), or one with nothing to say
        if not isinstance(choices, list):
            raise _Fault("data transform: a stream chunk's choices is not an array")
        if len(choices) > 1:
            raise _Fault(f"format bridge: a stream chunk with {len(choices)} choices")
        choice = choices[0]
        if not isinstance(choice, dict):
            raise _Fault("data transform: a stream chunk's choice is not an object")
        if choice.get("index", 0) != 0:
            raise _Fault(f"format bridge: a stream chunk with choice index {choice['index']!r}")
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        elif not isinstance(delta, dict):
            raise _Fault("data transform: a stream chunk's delta is not an object")
        role = delta.get("role")
        if role is not None and role != "assistant":
            raise _Fault(f"format bridge: a stream chunk with role {role!r}")
        if not self.started:
            self._start(chunk)
        self._text(delta.get("content"))
        calls = delta.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise _Fault("data transform: a stream chunk's tool_calls is not an array")
        for call in calls or ():
            self._tool_call(call)
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._stop_reason = stop_reason(finish)
        elif finish is not None:
            raise _Fault("data transform: a stream chunk's finish_reason is not a string")

    def _text(self, text: Any) -> None:
        if text is None or text == "":
            return
        if not isinstance(text, str):
            raise _Fault("data transform: a stream chunk's content is not a string")
        if self._open != "text":
            self._open_block({"type": "text", "text": ""})
        self._delta({"type": "text_delta", "text": text})

    def _tool_call(self, call: Any) -> None:
        if not isinstance(call, dict):
            raise _Fault("data transform: a stream chunk's tool call is not an object")
        function = call.get("function")
        if function is None:
            function = {}
        elif not isinstance(function, dict):
            raise _Fault("data transform: a stream chunk's tool call function is not an object")
        index, call_id = call.get("index"), call.get("id")
        open_tool = self._tool
        continues = open_tool is not None and index in (None, open_tool[0])
        if call_id is not None and not (continues and call_id == open_tool[1]):
            # a new tool call (some upstreams repeat the id on every delta: not new)
            name = function.get("name")
            if call.get("type") != "function" or not isinstance(call_id, str) or not call_id:
                raise _Fault("format bridge: a new tool call without type, id and name")
            if not isinstance(name, str) or not name:
                raise _Fault("format bridge: a new tool call without type, id and name")
            self._open_block({"type": "tool_use", "id": call_id, "name": name, "input": {}})
            self._tool = (index, call_id)
        elif not continues:
            raise _Fault("format bridge: arguments for a tool call that is not open")
        arguments = function.get("arguments")
        if arguments is None or arguments == "":
            return
        if not isinstance(arguments, str):
            raise _Fault("data transform: a stream chunk's tool arguments are not a string")
        self._delta({"type": "input_json_delta", "partial_json": arguments})


# -- the wire ----------------------------------------------------------------------------


def frame(event_type: str, data: dict) -> bytes:
    """One SSE event as Anthropic's API frames it: ``event: <type>\\ndata:
    <json>\\n\\n`` (compact JSON).

    AISIX writes ``data:<json>\\nevent:<type>\\n\\n`` (axum's ``Sse``); both
    parse the same in any SSE reader, but the clients of this endpoint
    (Claude Code, Anthropic's SDKs) are written against Anthropic's API, so
    its order and spacing are the safer ones to match."""
    return b"event: " + event_type.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def new_request_id() -> str:
    """An id for an error body's ``request_id``: ``req_<uuid4 hex>``."""
    return "req_" + uuid.uuid4().hex


def error_body(error_type: str, message: str, request_id: str | None = None) -> bytes:
    """The Messages error body (2.4):
    ``{"type":"error","error":{"type":T,"message":M},"request_id":"req_..."}``
    (a new id when none is given)."""
    doc = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id or new_request_id(),
    }
    return dumps(doc)


#: the gateway's own failures (2.4): situation -> (status, type, message);
#: ``{model}`` is the model's name as the client sent it
SITUATIONS: dict[str, tuple[int, str, str]] = {
    "model_not_found": (404, "not_found_error", "Model '{model}' not found"),
    "model_forbidden": (403, "permission_error", "Access to model '{model}' is forbidden"),
    "rate_limited": (429, "rate_limit_error", "Rate limit exceeded"),  # rate or concurrency
    "internal": (500, "api_error", "Internal server error"),  # also a limiter's own failure
    "timeout": (504, "timeout_error", "Provider request timed out"),  # the model's timeout
    "invalid": (400, "invalid_request_error", "Invalid request"),  # validation, bridge, guardrail
    "transform": (422, "api_error", "Server error"),
    "not_supported": (501, "api_error", "Server error"),
    "unavailable": (502, "overloaded_error", "Upstream service unavailable"),  # HTTP, stream
}

#: an upstream's error status (kept as the answer's status) -> (type, message)
UPSTREAM_STATUSES: dict[int, tuple[str, str]] = {
    401: ("authentication_error", "Authentication failed"),
    402: ("billing_error", "Payment required"),
    403: ("permission_error", "Permission denied"),
    404: ("not_found_error", "Requested resource not found"),
    408: ("timeout_error", "Upstream request timed out"),
    413: ("request_too_large", "Request payload too large"),
    429: ("rate_limit_error", "Rate limit exceeded"),
    502: ("overloaded_error", "Upstream service unavailable"),
    503: ("overloaded_error", "Upstream service unavailable"),
    504: ("timeout_error", "Upstream request timed out"),
    529: ("api_error", "overloaded_error"),  # as AISIX writes it: the type's name as message
}


def map_error(
    situation: str, model: str = "", upstream_status: int | None = None, detail: str = ""
) -> MessagesError:
    """The 2.4 row for a failure: ``situation`` is a key of :data:`SITUATIONS`,
    or ``"upstream"`` with the upstream's ``upstream_status`` (its body is
    never shown: other 5xx ``api_error``, other statuses
    ``invalid_request_error``, both ``Provider error``). ``detail`` is for
    the log. Raises KeyError for an unknown situation (a bug of the caller's)."""
    if situation == "upstream":
        if upstream_status is None:
            raise KeyError("an upstream failure needs its upstream_status")
        fallback = "api_error" if upstream_status >= 500 else "invalid_request_error"
        kind, message = UPSTREAM_STATUSES.get(upstream_status, (fallback, "Provider error"))
        return MessagesError(upstream_status, kind, message, detail or None)
    status, kind, template = SITUATIONS[situation]
    return MessagesError(status, kind, template.format(model=model), detail or None)
