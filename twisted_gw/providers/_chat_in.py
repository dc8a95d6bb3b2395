"""What every foreign-dialect translator checks in an OpenAI chat request.

The Anthropic and Bedrock translators (:mod:`~twisted_gw.providers.anthropic_translate`,
:mod:`~twisted_gw.providers.bedrock_translate`) read an OpenAI chat request the
same way and differ only in the blocks they build from it: the walks and the
checks are here, each dialect passes the builders of its own blocks and its
family name (``"anthropic"``, ``"bedrock"``) for the error texts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted_gw.errors import GatewayError


def unsupported(message: str) -> GatewayError:
    """400 for a field or value the upstream cannot honour."""
    return GatewayError(400, message, "unsupported_parameter")


def invalid(message: str) -> GatewayError:
    """400 for a request that cannot be translated as written."""
    return GatewayError(400, message, "invalid_request_error")


def reject_unsupported(body: dict, family: str) -> None:
    """400 for the OpenAI fields no foreign dialect can honour when asked for."""
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported(f"'n' other than 1 is not supported by {family} models")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported(f"'logprobs' and 'top_logprobs' are not supported by {family} models")
    if body.get("logit_bias"):
        raise unsupported(f"'logit_bias' is not supported by {family} models")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise unsupported(
            f"'functions' and 'function_call' are deprecated and not supported by {family} "
            "models; use 'tools' and 'tool_choice'"
        )
    modalities = body.get("modalities")
    if body.get("audio") is not None or (
        isinstance(modalities, list) and any(m != "text" for m in modalities)
    ):
        raise unsupported(f"audio output is not supported by {family} models")
    for name in ("web_search_options", "moderation"):
        if body.get(name) is not None:
            raise unsupported(f"'{name}' is not supported by {family} models")


def stop_sequences(stop: Any) -> list[str] | None:
    """The stop sequences of OpenAI's ``stop`` (a string or a list), None for none."""
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise invalid("'stop' must be a string or a list of strings")
        return stop or None
    if stop is not None:
        raise invalid("'stop' must be a string or a list of strings")
    return None


def chat_turns(
    messages: Any,
    family: str,
    content_blocks: Callable[..., list[dict]],
    assistant_blocks: Callable[[dict, str], list[dict]],
    tool_result: Callable[[dict, str], dict],
) -> tuple[list[dict], list[dict]]:
    """(system blocks, alternating turns) for OpenAI ``messages``.

    ``content_blocks(content, where, text_only=...)`` builds the blocks of a
    user or system message, ``assistant_blocks(message, where)`` an
    assistant's, ``tool_result(message, where)`` the block of a tool message
    (in a user turn). A turn with no blocks is left out (both dialects refuse
    an empty turn; its neighbours may merge) and consecutive turns of one role
    are merged (both want alternating roles)."""
    if not isinstance(messages, list):
        raise invalid("'messages' must be an array")
    system: list[dict] = []
    turns: list[dict] = []

    def add(role: str, blocks: list[dict]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"'{where}' must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(content_blocks(message.get("content"), where, text_only=True))
        elif role == "user":
            add("user", content_blocks(message.get("content"), where))
        elif role == "assistant":
            add("assistant", assistant_blocks(message, where))
        elif role == "tool":
            add("user", [tool_result(message, where)])
        elif role == "function":
            raise unsupported(
                f"'{where}': role 'function' is deprecated and not supported by {family} "
                "models; use 'tool'"
            )
        else:
            raise invalid(f"'{where}.role' {role!r} is not a chat role")
    return system, turns


def content_parts(
    content: Any,
    where: str,
    text_only: bool,
    text_block: Callable[[str, dict | None], dict],
    image_block: Callable[[Any, str], dict],
    document_block: Callable[[Any, str], dict],
) -> list[dict]:
    """Blocks for a message's ``content`` (a string, parts, or null): text
    (and an assistant's refusal) by ``text_block(text, part)`` (``part`` None
    for a string content; empty text is left out, both dialects refuse it),
    ``image_url`` by ``image_block``, ``file`` by ``document_block``; any
    other part, and with ``text_only`` any part but text, rejected."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text_block(content, None)] if content else []
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
                blocks.append(text_block(text, part))
        elif text_only:
            raise unsupported(f"'{here}': only text parts are supported in system messages")
        elif kind == "image_url":
            blocks.append(image_block(part.get("image_url"), here))
        elif kind == "file":
            blocks.append(document_block(part.get("file"), here))
        else:
            raise unsupported(f"'{here}': content part type {kind!r} is not supported")
    return blocks


def data_url(url: str, here: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    head, comma, data = url.partition(",")
    media_type, _, encoding = head[len("data:") :].partition(";")
    if not comma or encoding != "base64" or not media_type:
        raise invalid(f"'{here}': a data URL must be 'data:<media type>;base64,<data>'")
    return media_type, data


def image_url(image: Any, here: str) -> str:
    """The URL of an ``image_url`` part's ``image_url`` (an object, or the URL)."""
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise invalid(f"'{here}.image_url.url' must be a string")
    return url


def inline_pdf(file: Any, here: str, fold_case: bool = False) -> tuple[str, str]:
    """(media type, base64 data) of a ``file`` part given inline as a PDF
    ``file_data`` data URL; ``fold_case``: the media type compared lowercased."""
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise unsupported(f"'{here}': only files given inline as 'file_data' are supported")
    media_type, payload = data_url(data, here)
    if fold_case:
        media_type = media_type.lower()
    if media_type != "application/pdf":
        raise unsupported(f"'{here}': only PDF files are supported, not {media_type!r}")
    return media_type, payload


def assistant_parts(
    message: dict,
    where: str,
    family: str,
    content_blocks: Callable[[Any, str], list[dict]],
    tool_use: Callable[[str, str, dict], dict],
    tool_input: Callable[[Any, str], dict],
) -> list[dict]:
    """An assistant message's blocks: its content by ``content_blocks``, then
    each tool call by ``tool_use(id, name, input)``."""
    if message.get("function_call") is not None:
        raise unsupported(
            f"'{where}.function_call' is deprecated and not supported by {family} models; "
            "use 'tool_calls'"
        )
    blocks = content_blocks(message.get("content"), where)
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
            tool_use(call["id"], function["name"], tool_input(function.get("arguments"), here))
        )
    return blocks


def function_tools(tools: Any) -> list[tuple[str, str | None, Any]]:
    """(name, description or None, parameters schema) of each OpenAI ``function``
    tool; other tool types rejected. A tool without parameters gets an empty
    object schema (OpenAI allows none; the foreign dialects do not)."""
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
            schema = {"type": "object", "properties": {}}
        description = function.get("description")
        result.append(
            (function["name"], description if isinstance(description, str) else None, schema)
        )
    return result


def named_tool(choice: dict) -> str:
    """The function name of a ``{"type": "function", "function": {"name"}}`` tool_choice."""
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise invalid("'tool_choice.function.name' must be a string")
    return name
