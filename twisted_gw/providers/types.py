"""The one table of provider *types* (CONTRACT-NEXT 1.1): what a provider
entity's ``type`` means.

AISIX's later wire configures upstreams as entities of their own,
``{"name", "type", "config"}`` under ``<prefix>/providers/<id>``, and models
that name one by ``provider_id``. Each row says where a type's upstream is
(its default base URL and endpoint paths), how it authenticates, and what it
changes in the request; :mod:`twisted_gw.providers.typed` is the one
IProvider that reads a row. The legacy ``<family>/<model>`` wire of CONTRACT
2 keeps its own table (:mod:`twisted_gw.providers.catalog`): the two differ in
their base URLs (``https://api.openai.com`` here, ``.../v1`` there), so a
model document is read by exactly one of them, never both.

Like the catalog, the config layer imports this module: plain data, no HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS

#: the config shapes of a provider entity (JSON Schema of ``config``, no extra keys)
_STRING = {"type": "string"}
REMOTE_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["api_key"],
    "additionalProperties": False,
    "properties": {"api_key": _STRING, "api_base": _STRING},
}
AZURE_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["api_key", "api_base"],
    "additionalProperties": False,
    "properties": {"api_key": _STRING, "api_base": _STRING, "api_version": _STRING},
}
BEDROCK_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["region", "access_key_id", "secret_access_key"],
    "additionalProperties": False,
    "properties": {
        "region": _STRING,
        "access_key_id": _STRING,
        "secret_access_key": _STRING,
        "session_token": _STRING,
        "endpoint": _STRING,
    },
}
NO_CONFIG: dict[str, Any] = {"type": "object", "additionalProperties": False}

#: the settings of a provider entity that are credentials: redacted from every
#: log line and answer, never shown back by the admin UI
SECRET_SETTINGS = frozenset({"api_key", "secret_access_key", "session_token"})

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"


@dataclass(frozen=True)
class ProviderType:
    """One ``type`` of a provider entity."""

    name: str
    #: the base URL an ``api_base`` replaces (None: required, or local)
    default_base: str | None
    chat_path: str = CHAT_PATH
    #: None: the type serves no embeddings (a 400 unsupported_endpoint)
    embeddings_path: str | None = None
    #: the header the key goes in: ``authorization`` (Bearer), ``api-key``, ...
    auth: str = "authorization"
    #: the gateway asks for the usage chunk of a stream (stream_options.include_usage)
    usage: bool = False
    #: request keys the upstream refuses, dropped before sending
    drops: tuple[str, ...] = ()
    #: keys set on every request
    adds: tuple[tuple[str, Any], ...] = ()
    #: ``n`` forced to 1; ``messages[].name`` dropped
    single_choice: bool = False
    #: only ``none``/``auto`` tool_choice strings are passed on
    tool_choice_basic: bool = False
    #: how the type speaks: ``openai`` (chat completions), ``anthropic``,
    #: ``azure`` (deployment URLs), ``bedrock`` (Converse), ``mock`` (local)
    dialect: str = "openai"
    config: dict[str, Any] = field(default_factory=lambda: REMOTE_CONFIG)

    @property
    def embeddings(self) -> bool:
        return self.embeddings_path is not None


def _t(name: str, base: str | None, **kw: Any) -> ProviderType:
    return ProviderType(name, base, **kw)


_COHERE_DROPS = (
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "n",
    "parallel_tool_calls",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "modalities",
)

TYPES: tuple[ProviderType, ...] = (
    _t("openai", "https://api.openai.com", embeddings_path=EMBEDDINGS_PATH, usage=True),
    _t(
        "azure",
        None,
        auth="api-key",
        embeddings_path=EMBEDDINGS_PATH,
        usage=True,
        dialect="azure",
        config=AZURE_CONFIG,
    ),
    _t("anthropic", "https://api.anthropic.com", chat_path="/v1/messages", dialect="anthropic"),
    _t(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        chat_path="/chat/completions",
        embeddings_path="/embeddings",
        auth="x-goog-api-key",
    ),
    _t("deepseek", "https://api.deepseek.com"),
    _t("mistral", "https://api.mistral.ai"),
    _t(
        "groq",
        "https://api.groq.com/openai",
        drops=("logprobs", "logit_bias", "top_logprobs"),
        single_choice=True,
    ),
    _t("xai", "https://api.x.ai/v1", drops=("logit_bias",), usage=True),
    _t(
        "cohere",
        "https://api.cohere.ai/compatibility/v1",
        drops=_COHERE_DROPS,
        embeddings_path=EMBEDDINGS_PATH,
    ),
    _t(
        "fireworks-ai",
        "https://api.fireworks.ai/inference/v1",
        adds=(("context_length_exceeded_behavior", "error"),),
        embeddings_path=EMBEDDINGS_PATH,
    ),
    _t("openrouter", "https://openrouter.ai/api/v1", chat_path="/chat/completions"),
    _t("moonshotai", "https://api.moonshot.cn/v1", tool_choice_basic=True),
    _t("moonshotai-cn", "https://api.moonshot.cn/v1", tool_choice_basic=True),
    _t("modelscope", "https://api-inference.modelscope.ai/v1"),
    _t("modelscope-cn", "https://api-inference.modelscope.cn/v1"),
    _t("stepfun", "https://api.stepfun.com/v1"),
    _t("siliconflow", "https://api.siliconflow.com/v1", embeddings_path=EMBEDDINGS_PATH),
    _t("siliconflow-cn", "https://api.siliconflow.cn/v1", embeddings_path=EMBEDDINGS_PATH),
    _t(
        "zhipuai",
        "https://open.bigmodel.cn/api/paas/v4",
        chat_path="/chat/completions",
        embeddings_path="/embeddings",
    ),
    # Converse over SigV4 (twisted_gw.providers.bedrock): the base is the
    # region's unless ``endpoint`` replaces it; the model id is in the path
    _t(
        "bedrock",
        "https://bedrock-runtime.<region>.amazonaws.com",
        chat_path="/model/<model>/converse",
        dialect="bedrock",
        config=BEDROCK_CONFIG,
    ),
    # ours (CONTRACT-NEXT 1.5): answers locally, as the legacy mock family
    _t(
        "mock",
        None,
        chat_path="",
        embeddings_path="",
        dialect="mock",
        config=NO_CONFIG,
    ),
)

BY_NAME: dict[str, ProviderType] = {t.name: t for t in TYPES}
NAMES: tuple[str, ...] = tuple(t.name for t in TYPES)


def join_url(base: str, path: str) -> str:
    """``base`` + ``path`` the way AISIX joins them (CONTRACT-NEXT 1.1): the
    endpoint path minus the longest suffix of the base's path that is also a
    prefix of the endpoint path, the base's query kept; so ``http://h`` and
    ``http://h/v1`` both give ``http://h/v1/chat/completions``."""
    parts = urlsplit(base)
    base_path = parts.path.rstrip("/")
    overlap = 0
    for n in range(min(len(base_path), len(path)), 0, -1):
        if base_path.endswith(path[:n]) and (n == len(path) or path[n] == "/"):
            overlap = n
            break
    return urlunsplit(parts._replace(path=base_path + path[overlap:]))


#: the key of a bedrock model's streaming URL in its ``endpoint_urls``
#: (Converse streams at a path of its own: ``converse-stream``)
STREAM_URL = "chat/completions:stream"

#: the registry key of a provider type's IProvider (legacy families use their bare name)
PREFIX = "provider:"


def registry_key(ptype: ProviderType) -> str:
    """The key a resolved model's ``provider`` holds for this type."""
    if ptype.dialect == "mock":
        return "mock"  # the legacy mock answers the same way
    if ptype.dialect == "anthropic":
        return "anthropic"  # the translating provider, at the type's URL
    return PREFIX + ptype.name


def endpoint_urls(ptype: ProviderType, config: Mapping[str, str], upstream_model: str) -> dict:
    """The upstream URL of each endpoint a model of this type serves, built
    once when the snapshot resolves the model (CONTRACT-NEXT 1.1)."""
    base = config.get("api_base") or ptype.default_base or ""
    if ptype.dialect == "azure":
        version = quote(config.get("api_version") or "v1", safe="")
        deployment = join_url(base, "/openai/deployments/" + quote(upstream_model, safe=""))
        return {
            CHAT: f"{deployment}/chat/completions?api-version={version}",
            EMBEDDINGS: f"{deployment}/embeddings?api-version={version}",
        }
    if ptype.dialect == "bedrock":
        base = config.get("endpoint") or (ptype.default_base or "").replace(
            "<region>", config.get("region", "")
        )
        path = ptype.chat_path.replace("<model>", quote(upstream_model, safe=""))
        return {CHAT: join_url(base, path), STREAM_URL: join_url(base, path + "-stream")}
    if ptype.dialect not in ("openai", "anthropic"):
        return {}
    urls = {CHAT: join_url(base, ptype.chat_path)}
    if ptype.embeddings_path:
        urls[EMBEDDINGS] = join_url(base, ptype.embeddings_path)
    return urls
