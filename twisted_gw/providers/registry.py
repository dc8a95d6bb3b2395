"""Which IProvider serves which ``<provider>/`` prefix; built once at start-up."""

from __future__ import annotations

from typing import Any

from twisted_gw.providers.anthropic import AnthropicProvider
from twisted_gw.providers.http import UpstreamClient
from twisted_gw.providers.interfaces import CHAT, IProvider
from twisted_gw.providers.mock import MockProvider
from twisted_gw.providers.openai import OpenAICompatibleProvider


def build_providers(client: UpstreamClient) -> dict[str, Any]:
    """The provider for each family name of CONTRACT 2 (embeddings: openai,
    gemini, mock; deepseek and anthropic serve chat only)."""
    providers: dict[str, Any] = {
        "openai": OpenAICompatibleProvider("openai", client),
        "gemini": OpenAICompatibleProvider("gemini", client),
        "deepseek": OpenAICompatibleProvider("deepseek", client, frozenset({CHAT})),
        "anthropic": AnthropicProvider(client),
        "mock": MockProvider(),
    }
    for p in providers.values():
        assert IProvider.providedBy(p)
    return providers
