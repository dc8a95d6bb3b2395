"""The one table of provider families (CONTRACT 2: ``model``, ``provider_config``, upstreams).

Every place that lists providers reads :data:`FAMILIES`: the entity schema
(the ``model`` pattern and the ``provider_config`` shapes, in
:mod:`twisted_gw.config.entities`), the providers built at start-up
(:mod:`twisted_gw.providers.registry`), the default base URLs the provider
modules fall back to, the OpenAPI document and the admin UI (served as
``/ui/catalog.json``). A new family is one row here, plus its provider module
if it does not speak an existing dialect.

The config layer imports this module, so it imports nothing of the config
layer or of HTTP at module level: a family's provider class is imported only
when :meth:`ProviderFamily.provider` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS

if TYPE_CHECKING:
    from twisted_gw.config.entities import Model
    from twisted_gw.providers.http import UpstreamClient
    from twisted_gw.providers.interfaces import IProvider


@dataclass(frozen=True)
class ConfigField:
    """One string setting of a ``provider_config``."""

    name: str
    required: bool
    description: str


@dataclass(frozen=True)
class ConfigShape:
    """One shape of ``provider_config``: exactly these string fields, no others.

    ``component`` names it in the OpenAPI document; ``description`` is that
    component's text, ``{families}`` standing for the families that use it."""

    component: str
    description: str
    fields: tuple[ConfigField, ...]

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of this shape, as the entity validation applies it.

        The key order is part of the result: errors at one path come out in
        the order the validator meets the keywords (required before
        additionalProperties), and the Admin API's texts must not change."""
        schema: dict[str, Any] = {"type": "object"}
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        if self.fields:
            schema["properties"] = {f.name: {"type": "string"} for f in self.fields}
        return schema

    def describe(self) -> dict[str, Any]:
        """This shape as JSON for clients (the admin UI)."""
        return {
            f.name: {"type": "string", "required": f.required, "description": f.description}
            for f in self.fields
        }


#: ``{api_key, api_base?}``: the families that call a remote API
REMOTE = ConfigShape(
    "RemoteProviderConfig",
    "Settings of the {families} providers.",
    (
        ConfigField("api_key", True, "The provider's key, sent upstream by the gateway."),
        ConfigField(
            "api_base",
            False,
            "Replaces the provider's default base URL; a trailing `/` is ignored.",
        ),
    ),
)
#: ``{}``: a family that answers locally
NO_SETTINGS = ConfigShape(
    "MockProviderConfig",
    "The {families} provider answers locally and takes no settings: exactly `{{}}`.",
    (),
)


@dataclass(frozen=True)
class ProviderFamily:
    """One ``<provider>/`` prefix of a model: what it is, where it goes, what it takes."""

    name: str
    description: str  # one line for docs and the UI
    default_base: str | None  # the upstream base URL an ``api_base`` replaces; None: local
    endpoints: frozenset[str]  # of CHAT, EMBEDDINGS; others answer 400 unsupported_endpoint
    config: ConfigShape
    example_model: str  # an upstream model id, for forms and docs
    factory: Callable[[ProviderFamily, UpstreamClient], IProvider]

    def provider(self, client: UpstreamClient) -> IProvider:
        """Build this family's IProvider over the shared upstream client."""
        return self.factory(self, client)

    def describe(self) -> dict[str, Any]:
        """This row as JSON for clients (the admin UI); the factory stays here."""
        return {
            "name": self.name,
            "description": self.description,
            "default_base": self.default_base,
            "endpoints": sorted(self.endpoints),
            "provider_config": self.config.describe(),
            "example_model": self.example_model,
        }


def _openai_compatible(family: ProviderFamily, client: UpstreamClient) -> IProvider:
    from twisted_gw.providers.openai import OpenAICompatibleProvider

    return OpenAICompatibleProvider(family.name, client, family.endpoints)


def _anthropic(family: ProviderFamily, client: UpstreamClient) -> IProvider:
    from twisted_gw.providers.anthropic import AnthropicProvider

    return AnthropicProvider(client)


def _mock(family: ProviderFamily, client: UpstreamClient) -> IProvider:
    from twisted_gw.providers.mock import MockProvider

    return MockProvider()


FAMILIES: tuple[ProviderFamily, ...] = (
    ProviderFamily(
        "openai",
        "OpenAI's API, or any OpenAI-compatible server at api_base.",
        "https://api.openai.com/v1",
        frozenset({CHAT, EMBEDDINGS}),
        REMOTE,
        "gpt-4.1-mini",
        _openai_compatible,
    ),
    ProviderFamily(
        "deepseek",
        "DeepSeek's OpenAI-compatible API; chat only.",
        "https://api.deepseek.com/v1",
        frozenset({CHAT}),
        REMOTE,
        "deepseek-chat",
        _openai_compatible,
    ),
    ProviderFamily(
        "gemini",
        "Google Gemini through its OpenAI-compatible endpoint.",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        frozenset({CHAT, EMBEDDINGS}),
        REMOTE,
        "gemini-2.0-flash",
        _openai_compatible,
    ),
    ProviderFamily(
        "anthropic",
        "Anthropic's Messages API, translated to and from OpenAI chat; chat only.",
        "https://api.anthropic.com/v1",
        frozenset({CHAT}),
        REMOTE,
        "claude-sonnet-4-0",
        _anthropic,
    ),
    ProviderFamily(
        "mock",
        "Answers locally, fast and deterministically: no key, no network.",
        None,
        frozenset({CHAT, EMBEDDINGS}),
        NO_SETTINGS,
        "echo",
        _mock,
    ),
)

#: the families by name
BY_NAME: dict[str, ProviderFamily] = {f.name: f for f in FAMILIES}
#: every family name, in table order (the order of the ``model`` pattern)
NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)


def default_base(name: str) -> str:
    """The default upstream base URL of family ``name``; openai's for a name
    the table does not know or a family without one (an OpenAI-compatible
    provider built under another name goes where openai goes)."""
    family = BY_NAME.get(name)
    if family is None or family.default_base is None:
        return BY_NAME["openai"].default_base or ""
    return family.default_base


def authority(url: str) -> str | None:
    """``host[:port]`` of ``url``, for a log line: never its scheme, path,
    query string or credentials (a key may sit in any of the last three);
    None when ``url`` has no host one can tell without guessing."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number: maybe a password
        return None
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def upstream_host(deployment: Model, endpoint: str = CHAT) -> str | None:
    """Where a deployment's calls to ``endpoint`` go, as :func:`authority`
    writes it (CONTRACT 5.4: an upstream failure names its host): its
    provider entity's URL, else its ``api_base``, else its family's default
    base. None for a family that calls nothing (``mock``). For failures
    only: it parses a URL on each call."""
    urls = deployment.endpoint_urls
    url = urls.get(endpoint) or next(iter(urls.values()), None) if urls else None
    if url is None:
        family = BY_NAME.get(deployment.provider)
        if not deployment.api_base and family is not None and family.default_base is None:
            return None
        url = deployment.api_base or default_base(deployment.provider)
    return authority(url)


def shapes() -> list[tuple[ConfigShape, list[ProviderFamily]]]:
    """Each ``provider_config`` shape with the families that take it, in table order."""
    grouped: dict[ConfigShape, list[ProviderFamily]] = {}
    for family in FAMILIES:
        grouped.setdefault(family.config, []).append(family)
    return list(grouped.items())
