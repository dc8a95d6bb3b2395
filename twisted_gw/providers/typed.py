"""The IProvider of every OpenAI-speaking provider type (CONTRACT-NEXT 1.1).

One class reads a row of :mod:`twisted_gw.providers.types`: the URL of each
endpoint (resolved once per model, when the snapshot is built: see
:func:`twisted_gw.providers.types.endpoint_urls`), the header the key goes in, and the request tweaks the
type needs (keys dropped or added, one choice, basic tool_choice, azure's
body without ``model``). The answers are read as the legacy OpenAI family
reads them (:class:`~twisted_gw.providers.openai.OpenAICompatibleProvider`).
"""

from __future__ import annotations

from twisted_gw.config.entities import Model
from twisted_gw.providers.http import UpstreamClient
from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS
from twisted_gw.providers.openai import OpenAICompatibleProvider
from twisted_gw.providers.types import PREFIX, ProviderType

_JSON = [b"application/json"]


class TypedProvider(OpenAICompatibleProvider):
    """One OpenAI-speaking provider type over the shared UpstreamClient."""

    def __init__(self, ptype: ProviderType, client: UpstreamClient) -> None:
        endpoints = frozenset({CHAT, EMBEDDINGS} if ptype.embeddings else {CHAT})
        super().__init__(PREFIX + ptype.name, client, endpoints)
        self.type = ptype
        self.include_usage = ptype.usage
        self._auth = ptype.auth.encode()
        self._bearer = ptype.auth == "authorization"

    def url(self, model: Model, endpoint: str) -> str:
        return model.endpoint_urls[endpoint]

    def headers(self, model: Model) -> dict[bytes, list[bytes]]:
        key = (model.api_key or "").encode()
        return {
            self._auth: [b"Bearer " + key if self._bearer else key],
            b"content-type": _JSON,
            b"accept": _JSON,
        }

    def upstream_body(self, model: Model, body: dict, endpoint: str) -> dict:
        upstream = super().upstream_body(model, body, endpoint)
        t = self.type
        if t.dialect == "azure":
            del upstream["model"]  # the deployment is in the URL
        for name in t.drops:
            upstream.pop(name, None)
        for name, value in t.adds:
            upstream[name] = value
        if t.single_choice:
            upstream["n"] = 1
            messages = upstream.get("messages")
            if isinstance(messages, list):
                upstream["messages"] = [
                    {k: v for k, v in m.items() if k != "name"} if isinstance(m, dict) else m
                    for m in messages
                ]
        if t.tool_choice_basic and upstream.get("tool_choice") not in (None, "none", "auto"):
            upstream.pop("tool_choice")
        return upstream
