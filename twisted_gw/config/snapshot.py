"""The immutable view of the config that a request holds from start to end.

Stores rebuild a :class:`Snapshot` on every change and swap one reference;
nothing mutates a snapshot, so a request that took one at its start sees a
consistent set of models and keys even while an operator edits them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

from twisted.logger import Logger

from twisted_gw.config.entities import KINDS, ApiKey, Model, Provider, SchemaError
from twisted_gw.observability.logsafe import escape
from twisted_gw.providers import types as provider_types

log = Logger()

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class StoredEntry:
    """One stored document as the Admin API lists it."""

    key: str  # "/models/<id>" or "/apikeys/<id>", without the store prefix
    value: dict
    created_index: int
    modified_index: int

    @property
    def segment(self) -> str:
        return self.key.split("/", 2)[1]

    @property
    def id(self) -> str:
        return self.key.split("/", 2)[2]

    def as_json(self) -> dict:
        return {
            "key": self.key,
            "value": self.value,
            "created_index": self.created_index,
            "modified_index": self.modified_index,
        }


@dataclass(frozen=True)
class Snapshot:
    """Models by name and by id, API keys by key and by id; read-only."""

    models_by_name: Mapping[str, Model] = field(default_factory=lambda: _EMPTY)
    models_by_id: Mapping[str, Model] = field(default_factory=lambda: _EMPTY)
    keys_by_key: Mapping[str, ApiKey] = field(default_factory=lambda: _EMPTY)
    keys_by_id: Mapping[str, ApiKey] = field(default_factory=lambda: _EMPTY)
    revision: int = 0
    providers_by_id: Mapping[str, Provider] = field(default_factory=lambda: _EMPTY)

    @cached_property
    def _secrets(self) -> re.Pattern | None:
        """One pattern matching every client key and provider key of this
        snapshot (longest first, so a key holding another is cut whole); built
        on first use, once per snapshot."""
        secrets = {k for k in self.keys_by_key if len(k) >= 4}
        secrets.update(
            v
            for p in self.providers_by_id.values()
            for name, v in p.config.items()
            if name in provider_types.SECRET_SETTINGS and len(v) >= 4
        )
        secrets.update(
            d.api_key
            for m in self.models_by_id.values()
            for d in m.deployments
            if d.api_key and len(d.api_key) >= 4
        )
        if not secrets:
            return None
        return re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))

    def redact(self, text: str) -> str:
        """``text`` with every configured client or provider key replaced by
        ``[redacted]`` (CONTRACT 4.1: secrets never appear in a response or a
        log line, e.g. an upstream echoing back a key a client put in ``user``)."""
        pattern = self._secrets
        return text if pattern is None else pattern.sub("[redacted]", text)

    @classmethod
    def build(
        cls, entries: Iterable[StoredEntry], revision: int = 0, source: str = "store"
    ) -> Snapshot:
        """Build from stored entries in key order; an invalid document is skipped
        with one log line and the rest still load (CONTRACT 2)."""
        parsed: list[tuple[str, Model | ApiKey]] = []
        for entry in sorted(entries, key=lambda e: e.key):
            kind = KINDS.get(entry.segment)
            if kind is None:
                continue
            try:
                parsed.append((entry.key, kind.loaded(entry.id, entry.value)))
            except SchemaError as e:
                log.warn(
                    "skipping invalid document {key} in {source}: {error}",
                    key=escape(entry.key),
                    source=source,
                    error=escape(str(e).replace("\n", "; ")),
                )
        return cls.from_entities(parsed, revision)

    @classmethod
    def from_entities(
        cls, entities: Iterable[tuple[str, Model | ApiKey]], revision: int = 0
    ) -> Snapshot:
        """Build from entities already validated, as ``(key, entity)`` in key order.

        A store that validates each document once, when it changes (etcd's
        watch), rebuilds with this in plain dict work instead of validating
        every document again on every change. A second entity with a name or
        key already taken is skipped with a log line, as in :meth:`build`."""
        models_by_name: dict[str, Model] = {}
        models_by_id: dict[str, Model] = {}
        keys_by_key: dict[str, ApiKey] = {}
        keys_by_id: dict[str, ApiKey] = {}
        entities = list(entities)
        providers = {e.id: e for _, e in entities if isinstance(e, Provider)}
        for key, entity in entities:
            if isinstance(entity, Provider):
                continue
            if isinstance(entity, Model):
                if entity.provider_id is not None:
                    entity = resolve_all(entity, providers)
                if entity.name in models_by_name:
                    log.warn("skipping {key}: model name already used", key=escape(key))
                    continue
                models_by_name[entity.name] = entity
                models_by_id[entity.id] = entity
            else:
                if entity.key in keys_by_key:
                    log.warn("skipping {key}: API key already used", key=escape(key))
                    continue
                keys_by_key[entity.key] = entity
                keys_by_id[entity.id] = entity
        return cls(
            MappingProxyType(models_by_name),
            MappingProxyType(models_by_id),
            MappingProxyType(keys_by_key),
            MappingProxyType(keys_by_id),
            revision,
            MappingProxyType(providers),
        )


def resolve_all(model: Model, providers: Mapping[str, Provider]) -> Model:
    """A later-wire model and each of its targets resolved (see :func:`resolve`);
    a target whose provider is missing stays unresolved and is never chosen."""
    resolved = resolve(model, providers.get(model.provider_id))
    if not model.targets:
        return resolved
    targets = tuple(resolve(t, providers.get(t.provider_id)) for t in model.targets)
    return replace(resolved, targets=targets)


def resolve(model: Model, provider: Provider | None) -> Model:
    """A later-wire model with its provider entity's upstream (CONTRACT-NEXT
    1.3): the IProvider to call, the key, each endpoint's URL and the
    provider's whole config (bedrock's credentials). A provider
    that does not exist leaves it unresolved (``provider`` empty): the model is
    still listed and passes auth and limits, and its calls end in a 500."""
    if provider is None:
        return model
    ptype = provider_types.BY_NAME[provider.type]
    config = provider.config
    return replace(
        model,
        provider=provider_types.registry_key(ptype),
        api_key=config.get("api_key"),
        api_base=config.get("api_base"),
        endpoint_urls=MappingProxyType(
            provider_types.endpoint_urls(ptype, config, model.upstream_model)
        ),
        provider_config=config,
    )
