"""Which IProvider serves which ``<provider>/`` prefix and which provider
type; built once at start-up."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted_gw.config.entities import Model
from twisted_gw.providers.catalog import FAMILIES
from twisted_gw.providers.http import UpstreamClient
from twisted_gw.providers.interfaces import CHAT, IProvider
from twisted_gw.providers.typed import TypedProvider
from twisted_gw.providers.types import PREFIX, TYPES, registry_key


@implementer(IProvider)
class LazyBedrock:
    """Bedrock's provider, imported when a Bedrock deployment is first called.

    It signs with botocore and reads AWS's event-stream framing with it:
    ~270 ms of start-up and a few MB of every gateway's memory that one
    without Bedrock deployments never uses. Its name and endpoints are
    known without the import (the router asks every request's deployment)."""

    def __init__(self, client: UpstreamClient) -> None:
        self.name = PREFIX + "bedrock"
        self.endpoints = frozenset({CHAT})
        self._client = client
        self._provider: Any = None

    def loaded(self) -> Any:
        """The real provider (imported now if not yet)."""
        if self._provider is None:
            from twisted_gw.providers.bedrock import BedrockProvider

            self._provider = BedrockProvider(self._client)
        return self._provider

    def chat(self, model: Model, body: dict, reactor: Any) -> Any:
        return self.loaded().chat(model, body, reactor)

    def stream_chat(self, model: Model, body: dict, reactor: Any) -> Any:
        return self.loaded().stream_chat(model, body, reactor)

    def embeddings(self, model: Model, body: dict, reactor: Any) -> Any:
        return self.loaded().embeddings(model, body, reactor)


def build_providers(client: UpstreamClient) -> dict[str, IProvider]:
    """The provider of each family of the catalog, by name, over one shared client.

    A provider that is not the row it was built from (its name, its
    endpoints) is a programming error, refused here at start-up rather than
    found by the first request that needed an endpoint the table promised."""
    providers: dict[str, IProvider] = {}
    for family in FAMILIES:
        provider = family.provider(client)
        if not IProvider.providedBy(provider):
            raise TypeError(f"the {family.name} factory built {provider!r}, not an IProvider")
        if (provider.name, provider.endpoints) != (family.name, family.endpoints):
            raise TypeError(
                f"the {family.name} factory built a provider for {provider.name} serving "
                f"{sorted(provider.endpoints)}, not {sorted(family.endpoints)}"
            )
        providers[family.name] = provider
    for ptype in TYPES:  # the later wire's provider types (CONTRACT-NEXT 1.1)
        key = registry_key(ptype)
        if key in providers:
            continue
        if ptype.dialect == "bedrock":  # Converse, SigV4: not an OpenAI-speaking type
            providers[key] = LazyBedrock(client)
        else:
            providers[key] = TypedProvider(ptype, client)
    return providers
