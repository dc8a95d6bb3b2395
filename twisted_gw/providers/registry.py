"""Which IProvider serves which ``<provider>/`` prefix and which provider
type; built once at start-up."""

from __future__ import annotations

from twisted_gw.providers.bedrock import BedrockProvider
from twisted_gw.providers.catalog import FAMILIES
from twisted_gw.providers.http import UpstreamClient
from twisted_gw.providers.interfaces import IProvider
from twisted_gw.providers.typed import TypedProvider
from twisted_gw.providers.types import TYPES, registry_key


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
            providers[key] = BedrockProvider(client)
        else:
            providers[key] = TypedProvider(ptype, client)
    return providers
