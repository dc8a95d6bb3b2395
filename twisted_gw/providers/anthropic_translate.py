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

from twisted_gw.providers._chat_in import (
    assistant_parts,
    chat_turns,
    content_parts,
    data_url,
    function_tools,
    image_url,
    inline_pdf,
    invalid,
    named_tool,
    reject_unsupported,
    stop_sequences,
    unsupported,
)

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


# -- request ---------------------------------------------------------------------------


def to_anthropic_request(body: dict, upstream_model: str) -> dict:
    """The Messages API body for an OpenAI chat request (see the module table).

    Raises a 400 GatewayError for what cannot be translated."""
    reject_unsupported(body, "anthropic")
    system, messages = chat_turns(
        body.get("messages"), "anthropic", _content_blocks, _assistant_blocks, _tool_result
    )
    request: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if system:
        request["system"] = system
    request["max_tokens"] = _max_tokens(body)
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            request[name] = body[name]
    stop = stop_sequences(body.get("stop"))
    if stop:
        request["stop_sequences"] = stop
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


def _text_block(text: str, part: dict | None) -> dict:
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]  # Anthropic's prompt caching
    return block


def _content_blocks(content: Any, where: str, text_only: bool = False) -> list[dict]:
    """Blocks for a message's ``content`` (a string, parts, or null)."""
    return content_parts(content, where, text_only, _text_block, _image_block, _document_block)


def _image_block(image: Any, here: str) -> dict:
    url = image_url(image, here)
    if url.startswith("data:"):
        media_type, data = data_url(url, here)
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise invalid(f"'{here}.image_url.url' must be an http(s) or data URL")
    return {"type": "image", "source": source}


def _document_block(file: Any, here: str) -> dict:
    media_type, payload = inline_pdf(file, here)
    source = {"type": "base64", "media_type": media_type, "data": payload}
    return {"type": "document", "source": source}


def _tool_use(call_id: str, name: str, arguments: dict) -> dict:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _assistant_blocks(message: dict, where: str) -> list[dict]:
    return assistant_parts(message, where, "anthropic", _content_blocks, _tool_use, tool_input)


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
    result = []
    for name, description, schema in function_tools(tools):
        entry: dict[str, Any] = {"name": name}
        if description is not None:
            entry["description"] = description
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
        mapped = {"type": "tool", "name": named_tool(choice)}
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
            calls.append(tool_call(block.get("id"), block.get("name"), block.get("input")))
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        # redacted_thinking and server-tool blocks have no OpenAI form
    return chat_completion(
        doc.get("id"),
        created,
        doc.get("model"),
        (texts, thinking, calls),
        finish_reason(doc.get("stop_reason")),
        openai_usage(doc.get("usage")),
    )


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict:
    """An OpenAI ``tool_calls`` entry for a foreign tool use and its input."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": tool_arguments(arguments)},
    }


def chat_completion(
    response_id: Any,
    created: int,
    model: Any,
    parts: tuple[list[str], list[str], list[dict]],
    finish: str,
    usage: dict,
) -> dict:
    """The OpenAI ``chat.completion`` of one choice made of ``parts``: the
    answer's texts, its reasoning texts and its tool calls."""
    texts, reasoning, calls = parts
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)  # as DeepSeek names it
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
