"""The OpenAI Responses API (``POST /v1/responses``) through chat completions
(CONTRACT-NEXT 3.1-3.5), pure: no I/O, no Twisted.

The route owns the I/O and the history store; this module only translates:

- :func:`to_chat` checks a request body (3.1) and builds the chat request (3.2);
- :func:`from_chat` makes the Response object of a chat completion (3.2);
- :class:`ChatToResponsesStream` turns chat chunks into the Responses event
  lifecycle (3.3, 3.5); :func:`frame` writes one event, :func:`starts_output`
  says which event is the first token;
- :func:`input_messages` and :func:`history_messages` give what the history
  store keeps for a response (3.4).

Errors are :class:`ResponsesError`\\ s with the contract's status and text:

- 422 (``code`` None): the body does not deserialize, axum's rejection (§0);
  the message is the whole text, ``Failed to deserialize the JSON body into
  the target type: <path>: <serde's words>``, without serde's ``at line L
  column C`` (the body is parsed already, positions are gone);
- 400 ``gateway_error``: ``format bridge: ...``, AISIX's texts;
- 422 ``gateway_error``: ``data transform: ...``, an upstream answer that is
  not a chat completion.

Where this differs from AISIX at da5b455, on purpose (**[ours]**):

- ``text.format`` of type ``json_schema`` keeps its flat ``name``,
  ``description``, ``schema`` and ``strict``, nested as chat's
  ``response_format.json_schema`` wants (AISIX drops them);
- every event carries the official ``sequence_number`` (0, 1, ...), and the
  content and delta events the ``item_id`` (and text events ``logprobs: []``)
  the OpenAI SDK's typed events have, so the SDK parses every event;
- a new function call's ``response.output_item.added`` carries the arguments
  before the piece its ``function_call_arguments.delta`` brings (so ``""``):
  the added item plus the deltas is the whole text, as the SDK adds them
  (AISIX counts the first piece twice); its call id is fixed then, so the
  ``.done`` item is the same item;
- a message item's role must be ``system``, ``user`` or ``assistant`` (else
  ``unsupported chat message role: <role>``, as AISIX answers ``developer``);
- an empty ``tools`` list is not sent (chat upstreams refuse ``tools: []``);
- ``usage.total_tokens`` missing upstream is input + output;
- :func:`frame` writes ``event:`` before ``data:``, the order of the official
  API, where AISIX writes ``data:`` first: every SSE parser reads both alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted_gw.errors import GatewayError
from twisted_gw.formats._serde import DESERIALIZE, shown, unexpected
from twisted_gw.jsonutil import dumps


class ResponsesError(GatewayError):
    """A request or answer the Responses bridge refuses, with the contract's
    status, message, code and type (see the module docstring)."""


def new_response_id() -> str:
    """A fresh response id, ``aresp_`` and 32 hex digits (AISIX's uuid4)."""
    return f"aresp_{uuid.uuid4().hex}"


def frame(event_type: str, data: dict) -> bytes:
    """One Server-Sent Event: ``event: <type>``, ``data: <compact JSON>``."""
    return b"event: " + event_type.encode() + b"\ndata: " + dumps(data) + b"\n\n"


# -- errors ------------------------------------------------------------------------------

_EMPTY_STREAM = (
    "Gateway error: validation: responses stream completed without an upstream response id"
)
_CUT = "stream: the upstream stream ended before it was complete"


def _bridge(text: str) -> ResponsesError:
    return ResponsesError(400, f"format bridge: {text}", "gateway_error", "invalid_request_error")


def _transform(text: str) -> ResponsesError:
    return ResponsesError(422, f"data transform: {text}", "gateway_error", "invalid_request_error")


def _rejected(path: str, what: str) -> ResponsesError:
    where = f"{path}: " if path else ""
    return ResponsesError(422, f"{DESERIALIZE}{where}{what}", None, "invalid_request_error")


def _invalid(path: str, value: Any, expected: str) -> ResponsesError:
    return _rejected(path, f"invalid type: {unexpected(value)}, expected {expected}")


# -- the request's types (3.1): what deserializes, else 422 --------------------------------

_Check = Callable[[Any, str], None]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _invalid(path, value, "a string")


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _invalid(path, value, "a boolean")


def _u32(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(path, value, "u32")
    if not 0 <= value <= 0xFFFFFFFF:
        raise _rejected(path, f"invalid value: {unexpected(value)}, expected u32")


def _f32(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(path, value, "f32")


def _anything(value: Any, path: str) -> None:
    """A JSON value kept as it is (or ignored)."""


def _optional(check: _Check) -> _Check:
    def optional(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)

    return optional


def _expected_variants(names: Iterable[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    if len(quoted) == 1:
        return f"expected {quoted[0]}"
    if len(quoted) == 2:
        return f"expected {quoted[0]} or {quoted[1]}"
    return "expected one of " + ", ".join(quoted)


def _one_of(*names: str) -> _Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise _invalid(path, value, "a string")
        if value not in names:
            raise _rejected(path, f"unknown variant `{shown(value)}`, {_expected_variants(names)}")

    return check


def _list_of(check: _Check) -> _Check:
    def sequence(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise _invalid(path, value, "a sequence")
        for position, item in enumerate(value):
            check(item, f"{path}[{position}]")

    return sequence


def _struct(name: str, fields: dict[str, _Check], required: tuple[str, ...] = ()) -> _Check:
    """An object: each known field checked in the order it came (as serde
    reads it), then the required ones that are missing; others ignored."""

    def struct(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _invalid(path, value, f"struct {name}")
        for key, item in value.items():
            check = fields.get(key)
            if check is not None:
                check(item, _join(path, key))
        for key in required:
            if key not in value:
                raise _rejected(path, f"missing field `{key}`")

    return struct


def _tagged(name: str, variants: dict[str, _Check]) -> _Check:
    """An object told apart by its ``type`` (serde's internally tagged enum)."""

    def tagged(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _invalid(path, value, f"internally tagged enum {name}")
        if "type" not in value:
            raise _rejected(path, "missing field `type`")
        tag = value["type"]
        if not isinstance(tag, str):
            raise _invalid(_join(path, "type"), tag, "variant identifier")
        check = variants.get(tag)
        if check is None:
            raise _rejected(path, f"unknown variant `{shown(tag)}`, {_expected_variants(variants)}")
        check(value, path)

    return tagged


def _string_or(many: _Check, expected: str) -> _Check:
    """A string, or a list of what ``many`` checks (serde's untagged enum)."""

    def either(value: Any, path: str) -> None:
        if isinstance(value, list):
            many(value, path)
        elif not isinstance(value, str):
            raise _invalid(path, value, expected)

    return either


_PART = _tagged(
    "ResponsesContentPart",
    {
        "input_text": _struct("InputText", {"text": _string}, ("text",)),
        "input_image": _struct(
            "InputImage",
            {
                "image_url": _optional(_string),
                "file_id": _optional(_string),
                "detail": _optional(_string),
            },
        ),
    },
)

_ITEM = _tagged(
    "ResponsesInputItem",
    {
        "message": _struct(
            "Message",
            {
                "role": _string,
                "content": _string_or(_list_of(_PART), "a string or a sequence of parts"),
            },
            ("role", "content"),
        ),
        "function_call_output": _struct(
            "FunctionCallOutput", {"call_id": _string, "output": _string}, ("call_id", "output")
        ),
    },
)

_TOOL = _tagged(
    "ResponsesTool",
    {
        "function": _struct(
            "Function",
            {
                "name": _string,
                "description": _optional(_string),
                "parameters": _anything,
                "strict": _optional(_boolean),
            },
            ("name",),
        ),
        "web_search_preview": _struct("WebSearchPreview", {}),
        "file_search": _struct("FileSearch", {}),
    },
)

#: every field of a request (3.1); the ones marked ignored are read and dropped
_REQUEST = _struct(
    "ResponsesApiRequest",
    {
        "model": _string,
        "input": _string_or(_list_of(_ITEM), "a string or a sequence of input items"),
        "instructions": _optional(_string),
        "max_output_tokens": _optional(_u32),
        "temperature": _optional(_f32),
        "top_p": _optional(_f32),
        "tools": _optional(_list_of(_TOOL)),
        "tool_choice": _anything,  # its shape is the bridge's (400) to check
        "parallel_tool_calls": _optional(_boolean),
        "stream": _optional(_boolean),
        "text": _optional(
            _struct("ResponseTextConfig", {"format": _anything, "verbosity": _optional(_string)})
        ),
        "top_logprobs": _optional(_u32),
        "previous_response_id": _optional(_string),
        "store": _optional(_boolean),
        "metadata": _anything,
        "background": _optional(_boolean),
        "truncation": _optional(_one_of("auto", "disabled")),
        # ignored
        "include": _optional(_list_of(_string)),
        "max_tool_calls": _optional(_u32),
        "prompt": _anything,
        "prompt_cache_key": _optional(_string),
        "prompt_cache_retention": _optional(_one_of("in-memory", "24h")),
        "reasoning": _anything,
        "safety_identifier": _optional(_string),
        "service_tier": _optional(_string),
        "stream_options": _anything,
        "conversation": _anything,
        "context_management": _anything,
    },
    ("model", "input"),
)

# -- request -> chat (3.1, 3.2) ------------------------------------------------------------

_BUILT_IN_TOOLS = "Responses API built-in tools cannot be bridged through Chat Completions"
_FORMAT = "Responses API text.format cannot be bridged to Chat Completions response_format: "
_FLAT_SCHEMA = ("name", "description", "schema", "strict")  # the json_schema fields, flat
_ITEM_ROLES = ("system", "user", "assistant")


def to_chat(doc: Any, history: list[dict]) -> dict:
    """The chat request for a Responses request ``doc``: the system
    ``instructions`` (if not empty), ``history`` (the stored messages of
    ``previous_response_id``), then the input; the mapped parameters and
    nothing else. ``model`` is the client's: the caller sends the upstream's.
    Raises :class:`ResponsesError`, 422 before 400, and nothing else."""
    _REQUEST(doc, "")
    if doc.get("background") is True:
        raise _bridge("Responses API background mode cannot be bridged through Chat Completions")
    if doc.get("truncation") == "auto":
        raise _bridge("Responses API truncation=auto cannot be bridged through Chat Completions")
    tools = doc.get("tools") or []
    if any(tool["type"] != "function" for tool in tools):
        raise _bridge(_BUILT_IN_TOOLS)

    messages: list[dict] = []
    instructions = doc.get("instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages.extend(history)
    messages.extend(_input_messages(doc["input"]))
    tool_choice = _tool_choice(doc.get("tool_choice"))
    response_format = _response_format(doc.get("text"))
    for item in doc["input"] if isinstance(doc["input"], list) else ():
        if item["type"] == "message" and item["role"] not in _ITEM_ROLES:
            raise _bridge(f"unsupported chat message role: {shown(item['role'])}")

    chat: dict[str, Any] = {"model": doc["model"], "messages": messages}
    if doc.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = doc["max_output_tokens"]
    if doc.get("top_logprobs") is not None:
        chat["logprobs"] = True
        chat["top_logprobs"] = doc["top_logprobs"]
    if response_format is not None:
        chat["response_format"] = response_format
    if doc.get("stream") is not None:
        chat["stream"] = doc["stream"]
        if doc["stream"]:
            chat["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p"):
        if doc.get(name) is not None:
            chat[name] = doc[name]
    if tools:
        chat["tools"] = [_chat_tool(tool) for tool in tools]
    if tool_choice is not None:
        chat["tool_choice"] = tool_choice
    if doc.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = doc["parallel_tool_calls"]
    return chat


def _input_messages(given: str | list[dict]) -> list[dict]:
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    messages = []
    for item in given:
        if item["type"] == "message":
            content = item["content"]
            if isinstance(content, list):
                content = [_chat_part(part) for part in content]
            messages.append({"role": item["role"], "content": content})
        else:
            messages.append(
                {"role": "tool", "content": item["output"], "tool_call_id": item["call_id"]}
            )
    return messages


def _chat_part(part: dict) -> dict:
    if part["type"] == "input_text":
        return {"type": "text", "text": part["text"]}
    url = part.get("image_url")
    if url is None:
        file_id = part.get("file_id") or "<unknown>"
        raise _bridge(
            f"Responses API input_image with file_id {shown(file_id)} cannot be bridged "
            "through Chat Completions"
        )
    image = {"url": url}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _chat_tool(tool: dict) -> dict:
    function = {"name": tool["name"]}
    for name in ("description", "parameters", "strict"):
        if tool.get(name) is not None:
            function[name] = tool[name]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> str | dict | None:
    if choice is None or isinstance(choice, str):
        return choice
    if not isinstance(choice, dict):
        raise _bridge("Responses API tool_choice must be a string or object")
    kind = choice.get("type")
    if not isinstance(kind, str):
        raise _bridge("Responses API tool_choice object requires a type field")
    if kind in ("none", "auto", "required"):
        return kind
    if kind != "function":
        raise _bridge(f"unsupported Responses API tool_choice type {shown(kind)} for hub bridging")
    name = choice.get("name")
    if not isinstance(name, str):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise _bridge("Responses API function tool_choice requires a function name")
    return {"type": "function", "function": {"name": name}}


def _response_format(text: dict | None) -> dict | None:
    given = text.get("format") if text is not None else None
    if given is None:
        return None
    if not isinstance(given, dict):
        raise _bridge(f"{_FORMAT}invalid type: {unexpected(given)}, expected struct ResponseFormat")
    if "type" not in given:
        raise _bridge(f"{_FORMAT}missing field `type`")
    kind = given["type"]
    if not isinstance(kind, str):
        raise _bridge(f"{_FORMAT}invalid type: {unexpected(kind)}, expected a string")
    schema = given.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise _bridge(f"{_FORMAT}invalid type: {unexpected(schema)}, expected struct JsonSchema")
    if schema is None and kind == "json_schema":  # the Responses API's flat form [ours]
        schema = {name: given[name] for name in _FLAT_SCHEMA if given.get(name) is not None}
    return {"type": kind, "json_schema": schema} if schema else {"type": kind}


# -- the Response object (3.2) -------------------------------------------------------------


def _response(
    response_id: str,
    created: Any,
    model: Any,
    output: list[dict],
    status: str,
    usage: dict,
    request_doc: dict,
) -> dict:
    doc = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "model": model,
        "output": output,
        "status": status,
        "usage": usage,
    }
    for name in ("metadata", "previous_response_id"):
        if request_doc.get(name) is not None:
            doc[name] = request_doc[name]
    return doc


def _count(usage: dict, name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(usage: dict) -> dict:
    """A chat ``usage`` (or what a stream learned of it) in Responses terms."""
    prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    total = usage.get("total_tokens")
    if not isinstance(total, int) or isinstance(total, bool):
        total = prompt + completion
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": total}


def _message_item(item_id: str, role: str, texts: list[str], status: str) -> dict:
    return {
        "type": "message",
        "id": item_id,
        "role": role,
        "content": [{"type": "output_text", "text": text} for text in texts],
        "status": status,
    }


def _function_call(call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "type": "function_call",
        "id": call_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _message_id(response_id: str, output_index: int) -> str:
    return f"{response_id}_message_{output_index}"


def _call_id(upstream_id: str, k: int) -> str:
    """A tool call's id where the upstream gave none."""
    return f"{upstream_id}_call_{k}"


def _member(doc: dict, key: str, kind: type, where: str) -> Any:
    """``doc[key]`` if it is a ``kind`` or null/absent (None); else the
    upstream answer is malformed."""
    value = doc.get(key)
    if value is None or isinstance(value, kind):
        return value
    expected = {str: "a string", list: "a sequence", dict: "a map"}[kind]
    raise _transform(
        f"malformed chat completion: {where}.{key}: "
        f"invalid type: {unexpected(value)}, expected {expected}"
    )


def from_chat(completion: Any, response_id: str, request_doc: dict) -> dict:
    """The Response object (3.2) of a chat ``completion`` answering the
    Responses request ``request_doc``: each choice's text as a message item
    ``<response_id>_message_<output index>``, then its tool calls as
    ``function_call`` items; ``created_at`` and ``model`` the upstream's.
    Raises :class:`ResponsesError` (422 data transform, 400 format bridge)."""
    if not isinstance(completion, dict):
        raise _transform("malformed chat completion: not an object")
    choices = _member(completion, "choices", list, "completion")
    if choices is None:
        raise _transform("malformed chat completion: completion.choices: missing")
    upstream_id = completion.get("id") if isinstance(completion.get("id"), str) else ""
    output: list[dict] = []
    for position, choice in enumerate(choices):
        where = f"completion.choices[{position}]"
        if not isinstance(choice, dict):
            raise _transform(f"malformed chat completion: {where}: not an object")
        message = _member(choice, "message", dict, where) or {}
        output.extend(_choice_output(message, f"{where}.message", output, response_id, upstream_id))
    created = completion.get("created")
    model = completion.get("model")
    return _response(
        response_id,
        created if isinstance(created, int) and not isinstance(created, bool) else 0,
        model if isinstance(model, str) else "",
        output,
        "completed",
        _usage(_member(completion, "usage", dict, "completion") or {}),
        request_doc,
    )


def _choice_output(
    message: dict, where: str, output: list[dict], response_id: str, upstream_id: str
) -> list[dict]:
    items = []
    texts = _output_texts(message.get("content"), where)
    if texts:
        role = message.get("role") if isinstance(message.get("role"), str) else "assistant"
        items.append(_message_item(_message_id(response_id, len(output)), role, texts, "completed"))
    for k, call in enumerate(_member(message, "tool_calls", list, where) or ()):
        here = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise _transform(f"malformed chat completion: {here}: not an object")
        function = _member(call, "function", dict, here) or {}
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = dumps(arguments).decode()  # some upstreams send the object
        items.append(
            _function_call(
                _member(call, "id", str, here) or _call_id(upstream_id or response_id, k),
                _member(function, "name", str, f"{here}.function") or f"tool_{k}",
                arguments or "",
                "completed",
            )
        )
    return items


def _output_texts(content: Any, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _transform(
            f"malformed chat completion: {where}.content: invalid type: {unexpected(content)}, "
            "expected a string or a sequence of parts"
        )
    texts = []
    for position, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            raise _bridge("assistant image output cannot be bridged to Responses API output_text")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise _transform(
                f"malformed chat completion: {where}.content[{position}]: not a text part"
            )
        texts.append(part["text"])
    return texts


# -- the history store's value (3.4) -------------------------------------------------------


def input_messages(chat: dict, request_doc: dict) -> list[dict]:
    """The messages of ``to_chat(request_doc, history)`` that the history
    store keeps: the history and this input, not the ``instructions``
    (a message item whose parts are all gone is dropped, as AISIX does)."""
    messages = chat["messages"][1:] if request_doc.get("instructions") else chat["messages"]
    return [message for message in messages if message.get("content") != []]


def history_messages(messages: list[dict], response: dict) -> list[dict]:
    """What the history store keeps under ``response["id"]`` (3.4):
    ``messages`` (see :func:`input_messages`) and the output of ``response``
    (a Response object: :func:`from_chat`'s, or a stream's
    :attr:`ChatToResponsesStream.completed`) as chat messages: a message item
    as its role's message, function calls as the ``tool_calls`` of the
    assistant message before them (one with ``content`` null if none). The
    dicts of ``messages`` are shared, not copied."""
    stored = list(messages)
    assistant: dict | None = None
    for item in response["output"]:
        if item["type"] == "message":
            texts = [part["text"] for part in item["content"]]
            content: Any = texts[0] if len(texts) == 1 else None
            if len(texts) > 1:
                content = [{"type": "text", "text": text} for text in texts]
            message = {"role": item["role"], "content": content}
            stored.append(message)
            assistant = message if item["role"] == "assistant" else None
        elif item["type"] == "function_call":
            if assistant is None:
                assistant = {"role": "assistant", "content": None}
                stored.append(assistant)
            assistant.setdefault("tool_calls", []).append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            )
    return stored


# -- streaming (3.3, 3.5) ------------------------------------------------------------------

_OUTPUT_DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta")
_OUTPUT_DONE = ("response.output_text.done", "response.function_call_arguments.done")


def starts_output(event_type: str, data: dict) -> bool:
    """Whether this event starts output (3.5, the first token): a non-empty
    text or arguments delta, or their ``.done``; the caller takes the first."""
    if event_type in _OUTPUT_DELTAS:
        return bool(data.get("delta"))
    return event_type in _OUTPUT_DONE


@dataclass(slots=True)
class _Text:
    output_index: int
    pieces: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Tool:
    k: int  # the upstream's tool-call index
    output_index: int
    call_id: str
    name: str | None
    pieces: list[str] = field(default_factory=list)


class ChatToResponsesStream:
    """Translates one chat completion stream into the Responses events of
    3.3 and 3.5; keep one per request. :meth:`feed` each parsed chunk, then
    :meth:`end` once. Both return ``(event type, event data)`` pairs, each
    data with its ``type`` and ``sequence_number``.

    An ``error`` event ends the translation (:attr:`over`): the caller ends
    the stream there and stores nothing. After a clean end,
    :attr:`completed` is the ``response.completed`` Response object, for the
    history store; otherwise it stays None."""

    def __init__(self, response_id: str, request_doc: dict) -> None:
        self.response_id = response_id
        self.request_doc = request_doc
        #: the completed Response object, after a clean end
        self.completed: dict | None = None
        #: True after an ``error`` event or :meth:`end`: nothing more comes
        self.over = False
        self._sequence = 0
        self._started = False
        self._outputs = 0  # output indexes given out
        self._upstream_id = ""
        self._model = ""
        self._created: int | None = None
        self._usage: dict[str, int] = {}
        self._text: _Text | None = None
        self._tools: dict[int, _Tool] = {}

    def feed(self, chunk: Any) -> list[tuple[str, dict]]:
        """The events of one chat chunk (a parsed ``chat.completion.chunk``);
        a chunk the bridge cannot carry gives one ``error`` event."""
        if self.over:
            return []
        try:
            events = self._translate(chunk)
        except ResponsesError as error:
            return self._fail(error.message)
        return self._numbered(events)

    def end(self, clean: bool, error_text: str | None = None) -> list[tuple[str, dict]]:
        """The last events: at a ``clean`` end the ``.done`` events and
        ``response.completed`` (or, when no chunk had a choice or usage, the
        empty stream's ``error``); otherwise one ``error`` event whose message
        is ``error_text`` (the failure's Display, e.g. ``stream: ...``)."""
        if self.over:
            return []
        if not clean:
            return self._fail(error_text or _CUT)
        if not self._started:
            return self._fail(_EMPTY_STREAM)
        self.over = True
        events: list[tuple[str, dict]] = []
        if self._text is not None:
            index, text = self._text.output_index, "".join(self._text.pieces)
            located = {"item_id": _message_id(self.response_id, index), "output_index": index}
            part = {"type": "output_text", "text": text}
            events += [
                (
                    "response.output_text.done",
                    {**located, "content_index": 0, "text": text, "logprobs": []},
                ),
                ("response.content_part.done", {**located, "content_index": 0, "part": part}),
                (
                    "response.output_item.done",
                    {"output_index": index, "item": self._text_item("completed")},
                ),
            ]
        for k in sorted(self._tools):
            tool = self._tools[k]
            events += [
                (
                    "response.function_call_arguments.done",
                    {
                        "item_id": tool.call_id,
                        "output_index": tool.output_index,
                        "arguments": "".join(tool.pieces),
                    },
                ),
                (
                    "response.output_item.done",
                    {"output_index": tool.output_index, "item": self._tool_item(tool, "completed")},
                ),
            ]
        self.completed = self._snapshot("completed")
        events.append(("response.completed", {"response": self._snapshot("completed")}))
        return self._numbered(events)

    # -- one chunk -------------------------------------------------------------------------

    def _translate(self, chunk: Any) -> list[tuple[str, dict]]:
        if not isinstance(chunk, dict):
            raise _transform("malformed chat completion: chunk: not an object")
        choices = _member(chunk, "choices", list, "chunk") or []
        if len(choices) > 1:
            raise _bridge("Responses API stream bridge only supports a single chat choice")
        self._remember(chunk)
        usage = _member(chunk, "usage", dict, "chunk")
        if usage is not None:
            self._usage.update(
                (name, value)
                for name, value in usage.items()
                if name in ("prompt_tokens", "completion_tokens", "total_tokens")
                and isinstance(value, int)
                and not isinstance(value, bool)
            )
        events: list[tuple[str, dict]] = []
        if not self._started and (choices or usage is not None):
            self._started = True
            events += [
                ("response.created", {"response": self._snapshot("in_progress")}),
                ("response.in_progress", {"response": self._snapshot("in_progress")}),
            ]
        if not choices:
            return events
        choice = choices[0]
        if not isinstance(choice, dict):
            raise _transform("malformed chat completion: chunk.choices[0]: not an object")
        if choice.get("index", 0) not in (0, None):
            raise _bridge("Responses API stream bridge only supports choice index 0")
        delta = _member(choice, "delta", dict, "chunk.choices[0]") or {}
        content = _member(delta, "content", str, "chunk.choices[0].delta")
        if content:
            events += self._on_text(content)
        calls = _member(delta, "tool_calls", list, "chunk.choices[0].delta") or ()
        for position, call in enumerate(calls):
            events += self._on_tool_call(position, call)
        return events

    def _remember(self, chunk: dict) -> None:
        if not self._upstream_id and isinstance(chunk.get("id"), str):
            self._upstream_id = chunk["id"]
        if not self._model and isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        created = chunk.get("created")
        if self._created is None and isinstance(created, int) and not isinstance(created, bool):
            self._created = created

    def _on_text(self, content: str) -> list[tuple[str, dict]]:
        events: list[tuple[str, dict]] = []
        first = self._text is None
        if self._text is None:
            self._text = _Text(self._next_output_index())
        index = self._text.output_index
        located = {"item_id": _message_id(self.response_id, index), "output_index": index}
        if first:
            item = self._text_item("in_progress")
            part = {"type": "output_text", "text": ""}
            events += [
                ("response.output_item.added", {"output_index": index, "item": item}),
                ("response.content_part.added", {**located, "content_index": 0, "part": part}),
            ]
        self._text.pieces.append(content)
        delta = {**located, "content_index": 0, "delta": content, "logprobs": []}
        return [*events, ("response.output_text.delta", delta)]

    def _on_tool_call(self, position: int, call: Any) -> list[tuple[str, dict]]:
        where = f"chunk.choices[0].delta.tool_calls[{position}]"
        if not isinstance(call, dict):
            raise _transform(f"malformed chat completion: {where}: not an object")
        k = call.get("index")
        if not isinstance(k, int) or isinstance(k, bool):
            k = position
        function = _member(call, "function", dict, where) or {}
        name = _member(function, "name", str, f"{where}.function")
        arguments = _member(function, "arguments", str, f"{where}.function")
        events: list[tuple[str, dict]] = []
        tool = self._tools.get(k)
        if tool is None:
            call_id = _member(call, "id", str, where) or _call_id(
                self._upstream_id or self.response_id, k
            )
            tool = self._tools[k] = _Tool(k, self._next_output_index(), call_id, name or None)
            added = {
                "output_index": tool.output_index,
                "item": self._tool_item(tool, "in_progress"),
            }
            events.append(("response.output_item.added", added))
        elif name:
            tool.name = name
        if arguments:
            tool.pieces.append(arguments)
            delta = {"item_id": tool.call_id, "output_index": tool.output_index, "delta": arguments}
            events.append(("response.function_call_arguments.delta", delta))
        return events

    # -- helpers ---------------------------------------------------------------------------

    def _next_output_index(self) -> int:
        self._outputs += 1
        return self._outputs - 1

    def _text_item(self, status: str) -> dict:
        assert self._text is not None
        item_id = _message_id(self.response_id, self._text.output_index)
        return _message_item(item_id, "assistant", ["".join(self._text.pieces)], status)

    def _tool_item(self, tool: _Tool, status: str) -> dict:
        name = tool.name or f"tool_{tool.k}"
        return _function_call(tool.call_id, name, "".join(tool.pieces), status)

    def _snapshot(self, status: str) -> dict:
        """The Response object as it stands, items in output order."""
        items = [
            (tool.output_index, self._tool_item(tool, status)) for tool in self._tools.values()
        ]
        if self._text is not None:
            items.append((self._text.output_index, self._text_item(status)))
        output = [item for _, item in sorted(items, key=lambda pair: pair[0])]
        return _response(
            self.response_id,
            self._created or 0,
            self._model,
            output,
            status,
            _usage(self._usage),
            self.request_doc,
        )

    def _fail(self, message: str) -> list[tuple[str, dict]]:
        self.over = True
        return self._numbered([("error", {"message": message})])

    def _numbered(self, events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
        numbered = []
        for kind, data in events:
            numbered.append((kind, {"type": kind, "sequence_number": self._sequence, **data}))
            self._sequence += 1
        return numbered
