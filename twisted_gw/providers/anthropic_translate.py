"""OpenAI chat completions <-> Anthropic Messages API, as pure functions.

:func:`to_anthropic_request` turns the client's OpenAI request into the body
of ``POST /v1/messages``; :func:`from_anthropic_response` turns Anthropic's
``message`` into an OpenAI ``chat.completion``. No I/O: golden-tested in
tests/test_anthropic_translate.py. The stream's translation is in
:mod:`twisted_gw.providers.anthropic_stream`.

What happens to each OpenAI request field
=========================================

Anthropic answers 400 to any field it does not know, so nothing is forwarded
blindly: each field is mapped, dropped (the answer is still right without
it), or rejected with 400 ``invalid_request_error`` (code
``unsupported_parameter``) because dropping it would silently give the client
something other than what it asked for. A field whose value is null, or the
OpenAI default, is treated as absent.

==========================  ===================================================
OpenAI field                what the translation does
==========================  ===================================================
model                       the model's upstream id
messages                    mapped: system/developer -> ``system`` text
                            blocks; user/assistant turns -> content blocks;
                            ``tool`` messages -> ``tool_result`` blocks in a
                            user turn; assistant ``tool_calls`` -> ``tool_use``
                            blocks (arguments JSON-parsed); consecutive turns
                            of one role merged; a turn with no content left
                            out; ``name`` dropped (no participant names)
stream                      mapped (``stream: true``)
max_completion_tokens       -> ``max_tokens`` (wins over ``max_tokens``)
max_tokens                  -> ``max_tokens``; when both are absent,
                            :data:`DEFAULT_MAX_TOKENS` (4096), since Anthropic
                            requires it
temperature, top_p          mapped as is (Anthropic's temperature range is
                            0-1: a higher value gets Anthropic's own 400)
stop                        string or list -> ``stop_sequences``
user                        -> ``metadata.user_id``
safety_identifier           -> ``metadata.user_id`` when ``user`` is absent
tools                       ``function`` tools -> ``{name, description,
                            input_schema}`` (``strict`` dropped); other tool
                            types rejected
tool_choice                 ``auto`` -> auto, ``none`` -> ``{"type": "none"}``,
                            ``required`` -> ``any``, a named function ->
                            ``{"type": "tool", "name"}``; sent only with tools;
                            ``allowed_tools``/``custom`` rejected
parallel_tool_calls         ``false`` -> ``disable_parallel_tool_use: true``
response_format             ``text`` dropped (the default); ``json_schema`` ->
                            ``output_config.format`` (``{"type":
                            "json_schema", "schema"}``); ``json_object``
                            rejected (Anthropic needs a schema)
reasoning_effort            ``low``/``medium``/``high``/``xhigh`` ->
                            ``output_config.effort``; ``none``/``minimal``
                            dropped (thinking is off unless asked for)
top_k (not OpenAI)          passed through: Anthropic's own sampling knob
stream_options              dropped: Anthropic always reports usage, and the
                            gateway always ends a stream with the usage chunk
n                           1 is fine; more rejected (one completion per call)
logprobs, top_logprobs      rejected when asked for (Anthropic has none)
logit_bias                  rejected when non-empty (a hard constraint we
                            could not honour)
functions, function_call    rejected (deprecated: use tools, tool_choice)
audio, modalities           rejected when audio is asked for (text only)
web_search_options          rejected (a different server tool on Anthropic)
moderation                  rejected when set (OpenAI's moderation of input
                            and output: dropping it would skip a check the
                            client relies on)
seed                        dropped: a best-effort hint in OpenAI too
frequency_penalty,          dropped: sampling hints with no Anthropic
presence_penalty            equivalent
metadata, store             dropped: OpenAI's stored-completions features
prediction                  dropped: a latency optimisation, same answer
service_tier                dropped: the tiers differ; Anthropic's default
prompt_cache_key,           dropped: OpenAI's cache hints (Anthropic caches
prompt_cache_retention,     through ``cache_control`` on content parts, which
prompt_cache_options        text parts pass through)
verbosity                   dropped: a hint
any other field             dropped (Anthropic would refuse it)
==========================  ===================================================

Content parts: ``text`` -> text block (``cache_control`` kept); ``image_url``
with a ``data:<type>;base64,`` URL -> base64 image source, with an
``http(s)`` URL -> url image source (``detail`` dropped); ``file`` with a PDF
``file_data`` data URL -> ``document`` block; ``refusal`` (assistant) -> text;
``input_audio``, ``file_id`` and anything else rejected.
"""

from __future__ import annotations

import json
from typing import Any

from twisted_gw.errors import GatewayError

#: ``max_tokens`` sent when the client set neither ``max_tokens`` nor
#: ``max_completion_tokens``: Anthropic requires one, OpenAI does not.
DEFAULT_MAX_TOKENS = 4096

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_EFFORTS = ("low", "medium", "high", "xhigh")


def unsupported(message: str) -> GatewayError:
    """400 for a field or value Anthropic cannot honour."""
    return GatewayError(400, message, "unsupported_parameter")


def invalid(message: str) -> GatewayError:
    """400 for a request that cannot be translated as written."""
    return GatewayError(400, message, "invalid_request_error")


# -- request ---------------------------------------------------------------------------


def to_anthropic_request(body: dict, upstream_model: str) -> dict:
    """The Messages API body for an OpenAI chat request (see the module table).

    Raises a 400 GatewayError for what cannot be translated."""
    _reject_unsupported(body)
    system, messages = _messages(body.get("messages"))
    request: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if system:
        request["system"] = system
    request["max_tokens"] = _max_tokens(body)
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            request[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise invalid("'stop' must be a string or a list of strings")
        if stop:
            request["stop_sequences"] = stop
    elif stop is not None:
        raise invalid("'stop' must be a string or a list of strings")
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    output_config = _output_config(body)
    if output_config:
        request["output_config"] = output_config
    if body.get("stream") is True:
        request["stream"] = True
    return request


def _reject_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported("'n' other than 1 is not supported by anthropic models")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported("'logprobs' and 'top_logprobs' are not supported by anthropic models")
    if body.get("logit_bias"):
        raise unsupported("'logit_bias' is not supported by anthropic models")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise unsupported(
            "'functions' and 'function_call' are deprecated and not supported by anthropic "
            "models; use 'tools' and 'tool_choice'"
        )
    modalities = body.get("modalities")
    if body.get("audio") is not None or (
        isinstance(modalities, list) and any(m != "text" for m in modalities)
    ):
        raise unsupported("audio output is not supported by anthropic models")
    for name in ("web_search_options", "moderation"):
        if body.get(name) is not None:
            raise unsupported(f"'{name}' is not supported by anthropic models")


def _max_tokens(body: dict) -> Any:
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            return body[name]
    return DEFAULT_MAX_TOKENS


def _output_config(body: dict) -> dict:
    config: dict[str, Any] = {}
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise invalid("'response_format.json_schema.schema' must be an object")
            config["format"] = {"type": "json_schema", "schema": schema}
        elif kind == "json_object":
            raise unsupported(
                "'response_format' json_object is not supported by anthropic models; "
                "use json_schema"
            )
        elif kind != "text":
            raise unsupported(f"'response_format' type {kind!r} is not supported")
    elif fmt is not None:
        raise invalid("'response_format' must be an object")
    effort = body.get("reasoning_effort")
    if effort in _EFFORTS:
        config["effort"] = effort
    elif effort not in (None, "none", "minimal"):
        raise unsupported(f"'reasoning_effort' {effort!r} is not supported by anthropic models")
    return config


# -- messages ----------------------------------------------------------------------------


def _messages(messages: Any) -> tuple[list[dict], list[dict]]:
    """(system blocks, alternating turns) for OpenAI ``messages``."""
    if not isinstance(messages, list):
        raise invalid("'messages' must be an array")
    system: list[dict] = []
    turns: list[dict] = []

    def add(role: str, blocks: list[dict]) -> None:
        if not blocks:
            return  # an empty turn is refused upstream; its neighbours may merge
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # the API wants alternating roles
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"'{where}' must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_content_blocks(message.get("content"), where, text_only=True))
        elif role == "user":
            add("user", _content_blocks(message.get("content"), where))
        elif role == "assistant":
            add("assistant", _assistant_blocks(message, where))
        elif role == "tool":
            add("user", [_tool_result(message, where)])
        elif role == "function":
            raise unsupported(
                f"'{where}': role 'function' is deprecated and not supported by anthropic "
                "models; use 'tool'"
            )
        else:
            raise invalid(f"'{where}.role' {role!r} is not a chat role")
    return system, turns


def _text_block(text: str, part: dict | None = None) -> dict:
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]  # Anthropic's prompt caching
    return block


def _content_blocks(content: Any, where: str, text_only: bool = False) -> list[dict]:
    """Blocks for a message's ``content`` (a string, parts, or null)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_block(content)] if content else []  # empty text blocks are refused
    if not isinstance(content, list):
        raise invalid(f"'{where}.content' must be a string or an array of parts")
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise invalid(f"'{here}' must be an object")
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise invalid(f"'{here}.{kind}' must be a string")
            if text:
                blocks.append(_text_block(text, part))
        elif text_only:
            raise unsupported(f"'{here}': only text parts are supported in system messages")
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), here))
        elif kind == "file":
            blocks.append(_document_block(part.get("file"), here))
        else:
            raise unsupported(f"'{here}': content part type {kind!r} is not supported")
    return blocks


def _data_url(url: str, here: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    head, comma, data = url.partition(",")
    media_type, _, encoding = head[len("data:") :].partition(";")
    if not comma or encoding != "base64" or not media_type:
        raise invalid(f"'{here}': a data URL must be 'data:<media type>;base64,<data>'")
    return media_type, data


def _image_block(image: Any, here: str) -> dict:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise invalid(f"'{here}.image_url.url' must be a string")
    if url.startswith("data:"):
        media_type, data = _data_url(url, here)
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise invalid(f"'{here}.image_url.url' must be an http(s) or data URL")
    return {"type": "image", "source": source}


def _document_block(file: Any, here: str) -> dict:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise unsupported(f"'{here}': only files given inline as 'file_data' are supported")
    media_type, payload = _data_url(data, here)
    if media_type != "application/pdf":
        raise unsupported(f"'{here}': only PDF files are supported, not {media_type!r}")
    source = {"type": "base64", "media_type": media_type, "data": payload}
    return {"type": "document", "source": source}


def _assistant_blocks(message: dict, where: str) -> list[dict]:
    if message.get("function_call") is not None:
        raise unsupported(
            f"'{where}.function_call' is deprecated and not supported by anthropic models; "
            "use 'tool_calls'"
        )
    blocks = _content_blocks(message.get("content"), where)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise invalid(f"'{where}.tool_calls' must be an array")
    for k, call in enumerate(calls):
        here = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"'{here}' must be a function call with a name")
        if not isinstance(call.get("id"), str):
            raise invalid(f"'{here}.id' must be a string")
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": tool_input(function.get("arguments"), here),
            }
        )
    return blocks


def tool_input(arguments: Any, here: str) -> dict:
    """A tool call's JSON-string arguments as the object ``tool_use.input`` wants."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise invalid(f"'{here}.function.arguments' must be a JSON object")
    return value


def _tool_result(message: dict, where: str) -> dict:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise invalid(f"'{where}.tool_call_id' must be a string")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, str):
        block["content"] = content
    elif content is not None:
        block["content"] = _content_blocks(content, where)
    return block


# -- tools -------------------------------------------------------------------------------


def _tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("'tools' must be an array")
    result = []
    for i, tool in enumerate(tools):
        here = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise unsupported(f"'{here}': tool type {kind!r} is not supported; use 'function'")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"'{here}.function.name' must be a string")
        schema = function.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}  # OpenAI allows none; Anthropic not
        entry: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        entry["input_schema"] = schema
        result.append(entry)
    return result


def _tool_choice(choice: Any, parallel: Any) -> dict | None:
    if choice is None:  # Anthropic's default is auto too
        mapped: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise invalid("'tool_choice.function.name' must be a string")
        mapped = {"type": "tool", "name": name}
    else:
        raise unsupported("'tool_choice' must be 'auto', 'none', 'required' or a function")
    if mapped is not None and parallel is False:
        mapped["disable_parallel_tool_use"] = True
    return mapped


# -- response ----------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str:
    """The OpenAI ``finish_reason`` for an Anthropic ``stop_reason``."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _count(usage: dict, name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def openai_usage(usage: Any) -> dict:
    """OpenAI usage from Anthropic's: prompt = input + cache read + cache creation
    (Anthropic counts the three apart), completion = output."""
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _count(usage, "cache_read_input_tokens")
    prompt = (
        _count(usage, "input_tokens") + cache_read + _count(usage, "cache_creation_input_tokens")
    )
    completion = _count(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def tool_arguments(value: Any) -> str:
    """A tool_use ``input`` as OpenAI's JSON-string ``arguments``."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def from_anthropic_response(doc: dict, created: int) -> dict:
    """The OpenAI ``chat.completion`` for an Anthropic ``message`` (id and model
    are the upstream's; ``created`` is the gateway's clock, Anthropic has none)."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict] = []
    content = doc.get("content")
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": tool_arguments(block.get("input")),
                    },
                }
            )
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        # redacted_thinking and server-tool blocks have no OpenAI form
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)  # as DeepSeek names it
    return {
        "id": doc.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": doc.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(doc.get("stop_reason")),
            }
        ],
        "usage": openai_usage(doc.get("usage")),
    }
