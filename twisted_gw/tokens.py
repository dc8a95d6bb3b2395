"""The gateway's one token estimate, for when nothing can count (pure).

Without a tokenizer (none ships with the gateway, and each model family has
its own), a token is taken as 4 characters of text, rounded up: good to a
few tens of percent for English and code. ``/v1/messages/count_tokens``
answers with it for a provider that cannot count, and the ``mock`` provider
reports it as its usage, so limits and dashboards move with what was sent
and answered rather than by a constant.
"""

from __future__ import annotations

from twisted_gw.jsonutil import dumps

#: characters per token of the estimate
CHARS_PER_TOKEN = 4
#: what each message adds for its role and framing
TOKENS_PER_MESSAGE = 4


def text_tokens(text: str) -> int:
    """The tokens of a piece of text: one per 4 characters, rounded up (0 for "")."""
    return -(-len(text) // CHARS_PER_TOKEN)


def prompt_tokens(doc: dict) -> int:
    """A chat or Messages request's input tokens: the text of its ``system``,
    ``messages`` and ``tools`` (their JSON included) as :func:`text_tokens`
    counts it, plus 4 per message."""
    parts = [doc.get("system"), doc.get("messages"), doc.get("tools")]
    text = sum(len(dumps(p)) for p in parts if p is not None)
    messages = doc.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    return -(-text // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * count
