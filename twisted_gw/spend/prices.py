"""What a request costs (issue 17), pure arithmetic in nano-USD.

Money is counted in integer nano-USD (10^-9 USD) everywhere a sum is kept,
so the in-memory and the Redis stores add exactly and a budget of 10^9 USD
still fits in a signed 64-bit integer. A price is USD per million tokens,
so one token at ``p`` costs ``p * 1000`` nano-USD.

The cost of a request comes from the usage the upstream reported; when none
came (a stream cut before its usage chunk, a client gone), it is estimated
from the prompt (:mod:`twisted_gw.tokens`) and the characters relayed (one
token per 4), never 0 for a request that reached its upstream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from twisted_gw.config.entities import Model, Pricing
from twisted_gw.jsonutil import dumps, read
from twisted_gw.tokens import CHARS_PER_TOKEN, prompt_tokens, text_tokens

NANO_PER_USD = 10**9
#: nano-USD per token at a price of 1 USD per million tokens
_NANO_PER_TOKEN_AT_ONE = NANO_PER_USD / 10**6
#: no single amount goes past this (it is more than any budget may hold), so
#: sums stay within a signed 64-bit integer
MAX_AMOUNT = 10**18 + 1


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def cost_nano(pricing: Pricing, prompt: int, completion: int, cached: int = 0) -> int:
    """The cost of ``prompt`` input tokens, ``cached`` of them cached, and
    ``completion`` output tokens, in nano-USD, rounded up (a priced token is
    never free)."""
    cached = min(max(cached, 0), max(prompt, 0))
    cached_price = pricing.cached_input_per_mtok
    if cached_price is None:
        cached_price = pricing.input_per_mtok
    usd_mtok = (
        (prompt - cached) * pricing.input_per_mtok
        + cached * cached_price
        + completion * pricing.output_per_mtok
    )
    return min(math.ceil(usd_mtok * _NANO_PER_TOKEN_AT_ONE - 1e-6), MAX_AMOUNT)


def usage_counts(usage: Any) -> tuple[int, int, int] | None:
    """(prompt, completion, cached) tokens of a chat-shaped usage, or None when
    it counts nothing. Cached tokens are ``prompt_tokens_details.cached_tokens``
    (OpenAI, and the anthropic translation), else Anthropic's native
    ``cache_read_input_tokens``; they are part of the prompt either way."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and "cached_tokens" in details:
        cached = _int(details.get("cached_tokens"))
    else:
        cached = _int(usage.get("cache_read_input_tokens"))
    return _int(prompt), _int(completion), cached


def estimated_prompt(body: Any, embeddings: bool = False) -> int:
    """The prompt tokens of a request body, estimated (one token per 4
    characters): chat's system, messages and tools, or embeddings' input."""
    if not isinstance(body, dict):
        return 0
    if embeddings:
        value = body.get("input")
        return text_tokens(value if isinstance(value, str) else dumps(value)) if value else 0
    return prompt_tokens(body)


def max_output(body: Any, default: int) -> int:
    """The most completion tokens a chat body allows: ``max_completion_tokens``,
    else ``max_tokens`` (the Messages API's; the Responses API's
    ``max_output_tokens`` arrives as ``max_completion_tokens``), else ``default``."""
    if isinstance(body, dict):
        for name in ("max_completion_tokens", "max_tokens"):
            value = _int(body.get(name))
            if value:
                return value
    return default


def worst_case_nano(deployments: Iterable[Model], prompt: int, completion: int) -> int:
    """What a request may cost at most: on the dearest of ``deployments``
    (each priced), every prompt token uncached at the dearer of its input
    prices, and ``completion`` output tokens."""
    worst = 0
    for deployment in deployments:
        p = deployment.pricing
        if p is None:
            continue
        dearest_in = max(p.input_per_mtok, p.cached_input_per_mtok or 0.0)
        worst = max(worst, cost_nano(Pricing(dearest_in, p.output_per_mtok), prompt, completion))
    return worst


def content_chars(doc: dict) -> int:
    """Characters of generated text in one stream chunk: chat's delta content,
    reasoning and tool-call arguments, or an Anthropic event's text delta."""
    n = 0
    choices = doc.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            for name in ("content", "reasoning_content"):
                value = delta.get(name)
                if isinstance(value, str):
                    n += len(value)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    args = function.get("arguments") if isinstance(function, dict) else None
                    if isinstance(args, str):
                        n += len(args)
        return n
    delta = doc.get("delta")
    if doc.get("type") == "content_block_delta" and isinstance(delta, dict):
        for name in ("text", "partial_json", "thinking"):
            value = delta.get(name)
            if isinstance(value, str):
                n += len(value)
    return n


def answer_chars(body: bytes) -> int:
    """Characters of generated text in a whole answer without usage (chat
    choices, or an Anthropic message's content); its length when unreadable."""
    try:
        doc = read(body)
    except ValueError:
        return len(body)
    if not isinstance(doc, dict):
        return len(body)
    n = 0
    for choice in doc.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            n += content_chars({"choices": [{"delta": message}]})
    for block in doc.get("content") or ():
        if isinstance(block, dict):
            text = block.get("text")
            n += len(text) if isinstance(text, str) else len(dumps(block.get("input") or ""))
    return n


def relayed_tokens(chars: int) -> int:
    """The completion tokens of ``chars`` relayed characters (estimate)."""
    return -(-chars // CHARS_PER_TOKEN)


def usd(nano: int) -> float:
    """nano-USD as a float of USD (for the context and metrics)."""
    return nano / NANO_PER_USD


def usd_text(nano: int) -> str:
    """nano-USD as the ``x-budget-remaining-usd`` decimal string, rounded
    down to the micro-USD and clamped at 0: ``12.345678``."""
    micro = max(nano, 0) // 1000
    return f"{micro // 10**6}.{micro % 10**6:06d}"
