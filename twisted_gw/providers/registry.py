"""Which IProvider serves which ``<provider>/`` prefix; built once at start-up."""

from __future__ import annotations

from typing import Any

from twisted_gw.providers.http import UpstreamClient
from twisted_gw.providers.interfaces import CHAT, IProvider
from twisted_gw.providers.mock import MockProvider
from twisted_gw.providers.openai import OpenAICompatibleProvider


def build_providers(client: UpstreamClient) -> dict[str, Any]:
    """The provider for each family name of CONTRACT 2.

    ``anthropic`` is not here yet: its native translation is a later issue, and
    until then a model that names it answers ``unsupported_endpoint``."""
    providers: dict[str, Any] = {
        "openai": OpenAICompatibleProvider("openai", client),
        "gemini": OpenAICompatibleProvider("gemini", client),
        "deepseek": OpenAICompatibleProvider("deepseek", client, frozenset({CHAT})),
        "mock": MockProvider(),
    }
    for p in providers.values():
        assert IProvider.providedBy(p)
    return providers
