"""OpenAI chat completions <-> Amazon Bedrock's Converse API, as pure functions.

:func:`to_converse_request` turns the client's OpenAI request into the body
of ``POST /model/<model>/converse`` (and ``converse-stream``: the same body);
:func:`from_converse_response` turns Converse's answer into an OpenAI
``chat.completion``; :class:`ConverseStreamTranslator` turns the events of a
``converse-stream`` body, once decoded from their binary frames, into OpenAI
``chat.completion.chunk`` objects. No I/O, no signing (both are in
:mod:`twisted_gw.providers.bedrock`); golden-tested in tests/test_bedrock.py.

What happens to each OpenAI request field
=========================================

Converse refuses fields it does not know, so nothing is forwarded blindly: a
field is mapped, dropped (the answer is still right without it), or rejected
with 400 ``unsupported_parameter`` because dropping it would give the client
something other than what it asked for. A null field is treated as absent.

==========================  ===================================================
OpenAI field                what the translation does
==========================  ===================================================
model                       in the URL (the model's upstream id), not the body
messages                    system/developer -> ``system`` text blocks;
                            user/assistant turns -> ``messages`` with content
                            blocks; ``tool`` messages -> ``toolResult`` blocks
                            in a user turn; assistant ``tool_calls`` ->
                            ``toolUse`` blocks (arguments JSON-parsed);
                            consecutive turns of one role merged (Converse
                            wants them alternating); a turn with no content
                            left out; ``name`` dropped
max_completion_tokens       -> ``inferenceConfig.maxTokens`` (wins over
max_tokens                  ``max_tokens``); none: the model's default
temperature, top_p          -> ``inferenceConfig.temperature``, ``topP``
stop                        string or list -> ``inferenceConfig.stopSequences``
tools                       ``function`` tools -> ``toolConfig.tools[].toolSpec``
                            ``{name, description, inputSchema: {json}}``;
                            other tool types rejected
tool_choice                 ``auto`` -> ``{"auto": {}}``, ``required`` ->
                            ``{"any": {}}``, a named function -> ``{"tool":
                            {"name"}}``; ``none`` -> no ``toolConfig`` at all
                            (Converse has no "none": the model cannot call a
                            tool it is not given)
stream, stream_options      dropped: streaming is the ``converse-stream``
                            path, and Converse always reports usage
n                           1 is fine; more rejected
logprobs, top_logprobs      rejected when asked for
logit_bias                  rejected when non-empty
functions, function_call    rejected (deprecated: use tools, tool_choice)
audio, modalities           rejected when audio is asked for
response_format             ``text`` dropped; any other rejected (Converse
                            has no JSON mode of its own)
web_search_options,         rejected when set
moderation
anything else               dropped (user, seed, penalties, metadata, store,
                            parallel_tool_calls, reasoning_effort, top_k,
                            service_tier, prediction, cache hints, ...)
==========================  ===================================================

Content parts: ``text`` (and an assistant's ``refusal``) -> ``{"text"}``;
``image_url`` with a ``data:image/<png|jpeg|gif|webp>;base64,`` URL ->
``{"image": {"format", "source": {"bytes"}}}`` (bytes stay base64: Converse's
JSON takes blobs so); an http(s) image URL is rejected (Converse reads images
inline or from S3 only); ``file`` with a PDF ``file_data`` data URL ->
``{"document": {"format": "pdf", "name", "source": {"bytes"}}}``; anything
else rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from twisted_gw.jsonutil import loads
from twisted_gw.providers._chat_in import (
    assistant_parts,
    chat_turns,
    content_parts,
    data_url,
    function_tools,
    image_url,
    inline_pdf,
    named_tool,
    reject_unsupported,
    stop_sequences,
)
from twisted_gw.providers.anthropic_stream import ChunkTranslator
from twisted_gw.providers.anthropic_translate import (
    chat_completion,
    invalid,
    tool_call,
    tool_input,
    unsupported,
)
from twisted_gw.providers.errors import redact
from twisted_gw.providers.translated import UpstreamStreamError

#: Converse ``stopReason`` -> OpenAI ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


# -- request ---------------------------------------------------------------------------


def to_converse_request(body: dict) -> dict:
    """The Converse body for an OpenAI chat request (see the module table).

    Raises a 400 GatewayError for what cannot be translated."""
    _reject_unsupported(body)
    system, messages = chat_turns(
        body.get("messages"), "bedrock", _content_blocks, _assistant_blocks, _tool_result
    )
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    inference = _inference_config(body)
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(body.get("tools"), body.get("tool_choice"))
    if tool_config:
        request["toolConfig"] = tool_config
    return request


def _reject_unsupported(body: dict) -> None:
    reject_unsupported(body, "bedrock")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise invalid("'response_format' must be an object")
        kind = fmt.get("type")
        if kind != "text":
            raise unsupported(f"'response_format' type {kind!r} is not supported by bedrock models")


def _inference_config(body: dict) -> dict:
    config: dict[str, Any] = {}
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            config["maxTokens"] = body[name]
            break
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = stop_sequences(body.get("stop"))
    if stop:
        config["stopSequences"] = stop
    return config


# -- messages ----------------------------------------------------------------------------


def _content_blocks(content: Any, where: str, text_only: bool = False) -> list[dict]:
    """Content blocks for a message's ``content`` (a string, parts, or null)."""
    return content_parts(content, where, text_only, _text_block, _image_block, _document_block)


def _text_block(text: str, part: dict | None) -> dict:
    return {"text": text}


def _image_block(image: Any, here: str) -> dict:
    url = image_url(image, here)
    if not url.startswith("data:"):
        raise unsupported(
            f"'{here}': bedrock models take images as data URLs "
            "('data:image/<png|jpeg|gif|webp>;base64,...'), not links"
        )
    media_type, data = data_url(url, here)
    fmt = _IMAGE_FORMATS.get(media_type.lower())
    if fmt is None:
        raise unsupported(f"'{here}': image type {media_type.lower()!r} is not supported")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _document_block(file: Any, here: str) -> dict:
    _, payload = inline_pdf(file, here, fold_case=True)
    # Converse wants a name unique in the request, of letters, digits, single
    # spaces, hyphens and brackets: the part's place is both
    name = "document-" + re.sub(r"[^0-9]+", "-", here).strip("-")
    return {"document": {"format": "pdf", "name": name, "source": {"bytes": payload}}}


def _tool_use(call_id: str, name: str, arguments: dict) -> dict:
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}}


def _assistant_blocks(message: dict, where: str) -> list[dict]:
    return assistant_parts(message, where, "bedrock", _content_blocks, _tool_use, tool_input)


def _tool_result(message: dict, where: str) -> dict:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise invalid(f"'{where}.tool_call_id' must be a string")
    content = message.get("content")
    if isinstance(content, str) or content is None:
        blocks = [{"text": content or ""}]  # Converse requires the content list
    else:
        blocks = _content_blocks(content, where) or [{"text": ""}]
    return {"toolResult": {"toolUseId": tool_call_id, "content": blocks}}


# -- tools -------------------------------------------------------------------------------


def _tool_config(tools: Any, choice: Any) -> dict | None:
    specs = []
    for name, description, schema in function_tools(tools):
        spec: dict[str, Any] = {"name": name}
        if description is not None:
            spec["description"] = description
        spec["inputSchema"] = {"json": schema}
        specs.append({"toolSpec": spec})
    if not specs:
        return None
    if choice is None or choice == "auto":
        mapped: dict | None = {"auto": {}} if choice == "auto" else None
    elif choice == "none":
        return None
    elif choice == "required":
        mapped = {"any": {}}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        mapped = {"tool": {"name": named_tool(choice)}}
    else:
        raise unsupported("'tool_choice' must be 'auto', 'none', 'required' or a function")
    config: dict[str, Any] = {"tools": specs}
    if mapped is not None:
        config["toolChoice"] = mapped
    return config


# -- answer ------------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str:
    """The OpenAI ``finish_reason`` for a Converse ``stopReason``."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def openai_usage(usage: Any) -> dict:
    """OpenAI usage from Converse's: prompt = ``inputTokens`` (+ the cache's
    read and written tokens, which Converse counts apart), completion =
    ``outputTokens``, total = ``totalTokens`` (their sum when absent)."""
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _count(usage, "cacheReadInputTokens")
    prompt = _count(usage, "inputTokens") + cache_read + _count(usage, "cacheWriteInputTokens")
    completion = _count(usage, "outputTokens")
    total = usage.get("totalTokens")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        total = prompt + completion
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def from_converse_response(doc: dict, created: int, response_id: str, model: str) -> dict:
    """The OpenAI ``chat.completion`` for a Converse answer. Converse names
    neither the answer nor its model: ``response_id`` (the gateway makes it
    from AWS's request id) and ``model`` (the upstream id) are given."""
    output = doc.get("output")
    message_doc = output.get("message") if isinstance(output, dict) else None
    content = message_doc.get("content") if isinstance(message_doc, dict) else None
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append(tool_call(use.get("toolUseId"), use.get("name"), use.get("input")))
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
        # images, documents, guard content and redacted reasoning have no OpenAI form
    return chat_completion(
        response_id,
        created,
        model,
        (texts, reasoning, calls),
        finish_reason(doc.get("stopReason")),
        openai_usage(doc.get("usage")),
    )


# -- stream ------------------------------------------------------------------------------


class ConverseStreamTranslator(ChunkTranslator):
    """Translates the events of one ``converse-stream`` body; keep one per request.

    Fed each decoded event-stream message as its headers and payload bytes:

    ============================  =============================================
    event (``:event-type``)       OpenAI chunks
    ============================  =============================================
    messageStart                  the role chunk (``role: assistant``, ``""``)
    contentBlockStart toolUse     a tool-call delta: ``index`` (0, 1, ... per
                                  tool call), ``id``, ``type``, ``function.name``,
                                  empty ``arguments``
    contentBlockDelta text        ``delta.content``
    ... toolUse.input             ``tool_calls[{index, function.arguments}]``
                                  (the input's partial JSON, as it came)
    ... reasoningContent.text     ``delta.reasoning_content``
    contentBlockStop              nothing
    messageStop                   the finish chunk (``stopReason`` mapped)
    metadata                      the usage chunk (``choices: []``); the
                                  stream is complete
    unknown events                nothing
    ============================  =============================================

    An ``exception`` or ``error`` message (a throttling or a model error in
    the middle of the stream), or an event whose payload is not a JSON object,
    raises :class:`UpstreamStreamError`: the stream ends without ``[DONE]``.
    Converse sends ``metadata`` after ``messageStop``; a body that ends whole
    after ``messageStop`` is a whole stream (``stopped``), one that ends after
    chunks before it was cut.
    """

    def __init__(
        self, created: int, response_id: str, model: str, secrets: Iterable[str | None] = ()
    ) -> None:
        self.created = created
        self.id = response_id
        self.model = model
        self.secrets = tuple(secrets)
        #: ``messageStop`` arrived: the message is whole
        self.stopped = False
        #: ``metadata`` arrived after it: nothing more belongs to the stream
        self.complete = False
        self.started = False
        self._usage: dict | None = None
        self._tools: dict[Any, int] = {}  # contentBlockIndex -> OpenAI tool-call index

    def feed(self, headers: Mapping[str, Any], payload: bytes) -> list[dict]:
        """The OpenAI chunks for one event-stream message (often none)."""
        if self.complete:
            return []
        kind = headers.get(":message-type", "event")
        if kind == "exception":
            raise UpstreamStreamError(self._exception(headers, payload))
        if kind == "error":
            code, text = headers.get(":error-code"), headers.get(":error-message")
            detail = f"upstream error event ({code})" if isinstance(code, str) else "upstream error"
            if isinstance(text, str):
                detail += f": {text}"
            raise UpstreamStreamError(redact(detail, self.secrets))
        event = headers.get(":event-type")
        handler = self._handlers.get(event) if isinstance(event, str) else None
        if handler is None:
            return []  # an event type this gateway does not know: nothing of it
        try:
            doc = loads(payload)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise UpstreamStreamError("malformed event in the upstream stream")
        return handler(self, doc)

    def _exception(self, headers: Mapping[str, Any], payload: bytes) -> str:
        name = headers.get(":exception-type")
        detail = "upstream error event"
        if isinstance(name, str):
            detail += f" ({name})"
        try:
            doc = loads(payload)
        except ValueError:
            doc = None
        message = doc.get("message", doc.get("Message")) if isinstance(doc, dict) else None
        if isinstance(message, str):
            detail += f": {message}"
        return redact(detail, self.secrets)

    # -- chunks ----------------------------------------------------------------

    def _usage_chunk(self) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": openai_usage(self._usage),
        }

    # -- events ----------------------------------------------------------------

    def _on_message_start(self, doc: dict) -> list[dict]:
        return self.start([])

    def _on_block_start(self, doc: dict) -> list[dict]:
        start = doc.get("start")
        use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(use, dict):
            return []
        index = self._tools[doc.get("contentBlockIndex")] = len(self._tools)
        call = {
            "index": index,
            "id": use.get("toolUseId"),
            "type": "function",
            "function": {"name": use.get("name"), "arguments": ""},
        }
        return self.start([self.chunk({"tool_calls": [call]})])

    def _on_block_delta(self, doc: dict) -> list[dict]:
        delta = doc.get("delta")
        if not isinstance(delta, dict):
            return []
        if isinstance(delta.get("text"), str):
            return self.start([self.chunk({"content": delta["text"]})])
        use = delta.get("toolUse")
        if isinstance(use, dict):
            index = self._tools.get(doc.get("contentBlockIndex"))
            fragment = use.get("input")
            if index is None or not isinstance(fragment, str) or not fragment:
                return []
            call = {"index": index, "function": {"arguments": fragment}}
            return self.start([self.chunk({"tool_calls": [call]})])
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
            return self.start([self.chunk({"reasoning_content": reasoning["text"]})])
        return []  # a reasoning signature, a citation: no OpenAI form

    def _on_message_stop(self, doc: dict) -> list[dict]:
        if self.stopped:
            return []
        self.stopped = True
        out = self.start([self.chunk({}, finish_reason(doc.get("stopReason")))])
        if self._usage is not None:  # metadata came first: the stream is whole now
            self.complete = True
            out.append(self._usage_chunk())
        return out

    def _on_metadata(self, doc: dict) -> list[dict]:
        self._usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        if not self.stopped:
            return []
        self.complete = True
        return [self._usage_chunk()]

    _handlers: ClassVar[dict[str, Callable[..., list[dict]]]] = {
        "messageStart": _on_message_start,
        "contentBlockStart": _on_block_start,
        "contentBlockDelta": _on_block_delta,
        "contentBlockStop": lambda self, doc: [],
        "messageStop": _on_message_stop,
        "metadata": _on_metadata,
    }
