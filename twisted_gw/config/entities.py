"""The two entities of CONTRACT 2 (models and API keys): schema, checks, values.

Validation is pure: a JSON document goes in, a frozen entity or a
:class:`SchemaError` with AISIX's message text comes out. The Admin API, the
embedded store and the etcd loader all go through :func:`parse_model` /
:func:`parse_apikey`, so a document is judged the same way wherever it came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from twisted_gw.providers import catalog
from twisted_gw.providers import types as provider_types
from twisted_gw.providers.catalog import ConfigShape
from twisted_gw.ratelimit import kinds

#: the ``<provider>/`` prefixes a model may name (the table: twisted_gw.providers.catalog)
FAMILY_NAMES = catalog.NAMES
#: the keys a ``rate_limit`` object keeps (the table: twisted_gw.ratelimit.kinds)
RATE_LIMIT_FIELDS = kinds.NAMES
#: bounds on every number of a document (CONTRACT 5.5): a value past them is
#: a schema error at write time, never an overflow on a later request
MAX_TIMEOUT_MS = 3_600_000
MAX_RATE_LIMIT = 10**12
#: routing's bounds (CONTRACT 5.1)
MAX_WEIGHT = 10**6
MAX_PRIORITY = 100
MAX_RETRIES = 10
MAX_COOLDOWN_FAILURES = 1000
MAX_COOLDOWN_MS = 3_600_000
#: spend's bounds (issue 17): USD per million tokens, and a key's budget in USD
MAX_PRICE_PER_MTOK = 10**6
MAX_BUDGET_USD = 10**9
#: the windows a budget is counted in (UTC calendar day, ISO week, calendar
#: month, or for ever), and the one a budget without ``period`` has
BUDGET_PERIODS = ("day", "week", "month", "total")
DEFAULT_BUDGET_PERIOD = "month"
#: routing's strategies, the reasons an attempt may be retried for besides an
#: upstream status, and the client errors that never are (CONTRACT 5.1)
STRATEGIES = ("weighted", "least_busy")
RETRY_REASONS = ("connect", "timeout", "auth")
NEVER_RETRIED = frozenset({400, 404, 413, 422})
DEFAULT_RETRY_ON: tuple[str | int, ...] = ("connect", "timeout", "auth", 429, 500, 502, 503, 504)

_RATE_LIMIT_SCHEMA = {
    "type": "object",
    "properties": {
        k: {"type": "integer", "minimum": 0, "maximum": MAX_RATE_LIMIT} for k in RATE_LIMIT_FIELDS
    },
}


def model_pattern() -> str:
    """The pattern of a model's ``model`` field: a known family, ``/``, an upstream id."""
    return "^(" + "|".join(FAMILY_NAMES) + ")/.+$"


def _prefix_pattern(names: list[str]) -> str:
    return f"^{names[0]}/" if len(names) == 1 else "^(" + "|".join(names) + ")/"


def provider_config_conditions(render: Callable[[ConfigShape], dict[str, Any]]) -> dict[str, Any]:
    """The ``if``/``then``/``else`` keywords that pick a model's ``provider_config``
    shape by the family in its ``model``, each shape written as ``render(shape)``
    (its JSON Schema here, a ``$ref`` in the OpenAPI document).

    The shape of the table's first family is the ``else``: it applies to every
    other family and to an unknown one too, so a document naming an unknown
    provider is told about ``api_key`` as well as about ``model``, as AISIX
    tells it."""
    groups = catalog.shapes()
    default, others = groups[0][0], groups[1:]
    node: dict[str, Any] = {"properties": {"provider_config": render(default)}}
    if not others:
        return {"allOf": [node]}
    for shape, families in reversed(others):
        pattern = _prefix_pattern([f.name for f in families])
        node = {
            "if": {
                "required": ["model"],
                "properties": {"model": {"type": "string", "pattern": pattern}},
            },
            "then": {"properties": {"provider_config": render(shape)}},
            "else": node,
        }
    return node


def _int(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


_TIMEOUT_SCHEMA = _int(0, MAX_TIMEOUT_MS)
_WEIGHT_SCHEMA = _int(1, MAX_WEIGHT)


def _number(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "number", "minimum": minimum, "maximum": maximum}


_PRICE = _number(0, MAX_PRICE_PER_MTOK)

#: a deployment's prices (issue 17), USD per million tokens; a target without
#: its own has its model's
PRICING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["input_per_mtok", "output_per_mtok"],
    "additionalProperties": False,
    "properties": {
        "input_per_mtok": _PRICE,
        "output_per_mtok": _PRICE,
        "cached_input_per_mtok": _PRICE,
    },
}

#: an API key's spending cap (issue 17) over a UTC window
BUDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["max_usd"],
    "additionalProperties": False,
    "properties": {
        "max_usd": _number(0, MAX_BUDGET_USD),
        "period": {"type": "string", "enum": list(BUDGET_PERIODS)},
    },
}

#: one more deployment of a model (CONTRACT 5.1): its own upstream, judged
#: like the model's own fields
TARGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "provider_config"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "pattern": model_pattern()},
        "provider_config": {"type": "object"},
        "weight": _WEIGHT_SCHEMA,
        "priority": _int(0, MAX_PRIORITY),
        "timeout": _TIMEOUT_SCHEMA,
        "pricing": PRICING_SCHEMA,
    },
    **provider_config_conditions(ConfigShape.schema),
}

ROUTING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "strategy": {"type": "string", "enum": list(STRATEGIES)},
        "retries": _int(0, MAX_RETRIES),
        # each item: one of RETRY_REASONS or a status code (checked by _retry_on)
        "retry_on": {"type": "array", "items": {"type": ["string", "integer"]}},
        "cooldown": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "failures": _int(1, MAX_COOLDOWN_FAILURES),
                "window_ms": _int(1, MAX_COOLDOWN_MS),
                "duration_ms": _int(1, MAX_COOLDOWN_MS),
            },
        },
    },
}

MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "model", "provider_config"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "model": {"type": "string", "pattern": model_pattern()},
        "provider_config": {"type": "object"},
        "timeout": _TIMEOUT_SCHEMA,
        "rate_limit": _RATE_LIMIT_SCHEMA,
        "weight": _WEIGHT_SCHEMA,
        "targets": {"type": "array", "items": TARGET_SCHEMA},
        "routing": ROUTING_SCHEMA,
        "fallbacks": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "pricing": PRICING_SCHEMA,
    },
    **provider_config_conditions(ConfigShape.schema),
}

#: a model of the later wire (CONTRACT-NEXT 1.3): its upstream is a provider entity
#: one more deployment of a later-wire model (CONTRACT 5.1 on CONTRACT-NEXT
#: 1.3 **[beyond]**): another provider entity, or the same with another model
NEXT_TARGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["provider_id", "model"],
    "additionalProperties": False,
    "properties": {
        "provider_id": {"type": "string", "minLength": 1},
        "model": {"type": "string", "minLength": 1},
        "weight": _WEIGHT_SCHEMA,
        "priority": _int(0, MAX_PRIORITY),
        "timeout": _TIMEOUT_SCHEMA,
        "pricing": PRICING_SCHEMA,
    },
}

NEXT_MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "provider_id", "model"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "provider_id": {"type": "string", "minLength": 1},
        "model": {"type": "string", "minLength": 1},
        "timeout": _TIMEOUT_SCHEMA,
        "rate_limit": _RATE_LIMIT_SCHEMA,
        # routing (CONTRACT 5.1), as on the legacy wire
        "weight": _WEIGHT_SCHEMA,
        "targets": {"type": "array", "items": NEXT_TARGET_SCHEMA},
        "routing": ROUTING_SCHEMA,
        "fallbacks": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "pricing": PRICING_SCHEMA,
    },
}


def _provider_conditions() -> dict[str, Any]:
    """``config``'s shape by ``type`` (one if/then per type with its own shape)."""
    shapes: dict[int, tuple[dict, list[str]]] = {}
    for t in provider_types.TYPES:
        shapes.setdefault(id(t.config), (t.config, []))[1].append(t.name)
    default = provider_types.REMOTE_CONFIG
    node: dict[str, Any] = {"properties": {"config": default}}
    for shape, names in reversed(list(shapes.values())):
        if shape is default:
            continue
        node = {
            "if": {"required": ["type"], "properties": {"type": {"enum": names}}},
            "then": {"properties": {"config": shape}},
            "else": node,
        }
    return node


#: a provider entity (CONTRACT-NEXT 1.1); ``name`` need not be unique
PROVIDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "type", "config"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "type": {"type": "string", "enum": list(provider_types.NAMES)},
        "config": {"type": "object"},
    },
    **_provider_conditions(),
}

APIKEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "allowed_models"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "allowed_models": {"type": "array", "items": {"type": "string"}},
        "rate_limit": _RATE_LIMIT_SCHEMA,
        "budget": BUDGET_SCHEMA,
    },
}


class SchemaError(ValueError):
    """A document failed its schema; ``str()`` is the Admin API's error_msg."""


#: Limits of CONTRACT 4.5: one optional int per kind of the table
#: (``RateLimit(rpm=100, concurrency=10)``); ``None`` means not configured.
RateLimit = make_dataclass(
    "RateLimit",
    [(k, "int | None", field(default=None)) for k in RATE_LIMIT_FIELDS],
    frozen=True,
)
RateLimit.__module__ = __name__
RateLimit.__doc__ = "Limits of CONTRACT 4.5, a field per rate-limit kind; None: not configured."


_NO_URLS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Cooldown:
    """When a deployment rests (CONTRACT 5.1): ``failures`` retryable failures
    within ``window_ms`` put it in cooldown for ``duration_ms``."""

    failures: int = 3
    window_ms: int = 60_000
    duration_ms: int = 30_000


@dataclass(frozen=True)
class Routing:
    """How a model's deployments are chosen and retried (CONTRACT 5.1).

    ``retries`` None: one attempt per deployment. ``retry_on`` holds reasons
    (``connect``, ``timeout``, ``auth``) and upstream status codes."""

    strategy: str = "weighted"
    retries: int | None = None
    retry_on: frozenset[str | int] = frozenset(DEFAULT_RETRY_ON)
    cooldown: Cooldown = Cooldown()


DEFAULT_ROUTING = Routing()


@dataclass(frozen=True)
class Pricing:
    """What a deployment costs, in USD per million tokens (issue 17).

    Cached prompt tokens (part of the prompt) cost ``cached_input_per_mtok``,
    or the input price when it is None."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


@dataclass(frozen=True)
class Budget:
    """An API key's spending cap (issue 17): ``max_usd`` per UTC ``period``
    (``day``, ``week``, ``month`` or ``total``)."""

    max_usd: float
    period: str = DEFAULT_BUDGET_PERIOD

    @cached_property
    def max_nano(self) -> int:
        """The cap in nano-USD, the unit budgets are counted in (exact integers)."""
        return round(self.max_usd * 1e9)


@dataclass(frozen=True)
class Model:
    """A configured model: what clients name, and where it really goes.

    The model's own upstream is its deployment 0; ``targets`` are deployments
    1..n, each a Model of its own (with this model's id and name, no limits
    and no targets), so a provider is called the same way for any of them."""

    id: str
    name: str
    provider: str
    upstream_model: str
    api_key: str | None = field(repr=False)
    api_base: str | None
    timeout_ms: int
    rate_limit: RateLimit | None
    doc: dict = field(repr=False, compare=False)
    weight: int = 1
    priority: int = 0
    #: this deployment's place among its model's (0: the model's own)
    index: int = 0
    targets: tuple[Model, ...] = ()
    routing: Routing = DEFAULT_ROUTING
    fallbacks: tuple[str, ...] = ()
    #: the later wire (CONTRACT-NEXT 1.3): the provider entity this model
    #: names; the snapshot resolves it (``provider``, key, URLs) when built
    provider_id: str | None = None
    #: each endpoint's upstream URL, for a model resolved against its provider
    endpoint_urls: Mapping[str, str] = field(
        default_factory=lambda: _NO_URLS, repr=False, compare=False
    )
    #: the provider entity's whole ``config``, for a type that needs more than
    #: a key and URLs (bedrock signs each request with its credentials)
    provider_config: Mapping[str, str] = field(
        default_factory=lambda: _NO_URLS, repr=False, compare=False
    )
    #: this deployment's prices (issue 17); a target without its own has its
    #: model's; None: not priced
    pricing: Pricing | None = None
    #: some deployment of the model has a price (its requests are costed),
    #: and every one has (a key with a budget may use it): attributes, so
    #: the hot path of unpriced models is one check
    priced: bool = False
    fully_priced: bool = False

    @cached_property
    def deployments(self) -> tuple[Model, ...]:
        """Deployment 0 (this model) and its targets, in index order."""
        return (self, *self.targets)


@dataclass(frozen=True)
class Provider:
    """A provider entity (CONTRACT-NEXT 1.1): an upstream models point at."""

    id: str
    name: str
    type: str
    config: Mapping[str, str] = field(repr=False)
    doc: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class ApiKey:
    """A client key and the model names it may use."""

    id: str
    key: str = field(repr=False)
    allowed_models: frozenset[str]
    rate_limit: RateLimit | None
    doc: dict = field(repr=False, compare=False)
    #: the key's spending cap (issue 17); None: not capped
    budget: Budget | None = None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _message(error: Any) -> str:
    """Phrase one jsonschema error the way AISIX's validator (jsonschema-rs) does."""
    v, value, inst = error.validator, error.validator_value, error.instance
    if v == "required":
        # jsonschema reports one error per missing name, as "'name' is a required ..."
        name = next((k for k in value if error.message.startswith(repr(k))), value[0])
        return f"{_dumps(name)} is a required property"
    if v == "type":
        return f"{_dumps(inst)} is not of type {_dumps(value)}"
    if v == "additionalProperties":
        props = error.schema.get("properties", {})
        extra = [k for k in inst if k not in props] if isinstance(inst, dict) else []
        listed = ", ".join(repr(k) for k in extra)
        verb = "was" if len(extra) == 1 else "were"
        return f"Additional properties are not allowed ({listed} {verb} unexpected)"
    if v == "minimum":
        return f"{_dumps(inst)} is less than the minimum of {value}"
    if v == "maximum":
        return f"{_dumps(inst)} is greater than the maximum of {value}"
    if v == "minLength":
        return f"{_dumps(inst)} is shorter than {value} character{'s' if value != 1 else ''}"
    if v == "pattern":
        return f"{_dumps(inst)} does not match {_dumps(value)}"
    if v == "enum":
        return f"{_dumps(inst)} is not one of {_dumps(value)}"
    return error.message


def _validator(schema: dict) -> Callable[[Any], None]:
    holder: list = []

    def validate(doc: Any) -> None:
        if not holder:  # built on first use: jsonschema import is not start-up work
            from jsonschema import Draft202012Validator, validators

            # JSON Schema counts 1.0 as an integer; AISIX's typed reader of the
            # same store (serde u64) does not, so neither do we.
            checker = Draft202012Validator.TYPE_CHECKER.redefine(
                "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
            )
            strict = validators.extend(Draft202012Validator, type_checker=checker)
            holder.append(strict(schema))
        errors = sorted(holder[0].iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            lines = []
            for e in errors:
                pointer = "".join(f"/{p}" for p in e.absolute_path) or "/"
                lines.append(f'property "{pointer}" validation failed: {_message(e)}')
            raise SchemaError("JSON schema validation error: " + "\n".join(lines))

    return validate


_validate_model = _validator(MODEL_SCHEMA)
_validate_next_model = _validator(NEXT_MODEL_SCHEMA)
_validate_apikey = _validator(APIKEY_SCHEMA)
_validate_provider = _validator(PROVIDER_SCHEMA)


def is_legacy(doc: Any) -> bool:
    """CONTRACT-NEXT 1.5: a model document follows CONTRACT 2 iff it has
    ``provider_config`` and no ``provider_id``; any other, the later rules."""
    return isinstance(doc, dict) and "provider_config" in doc and "provider_id" not in doc


def _rate_limit(raw: dict | None) -> tuple[RateLimit | None, dict | None]:
    if raw is None:
        return None, None
    kept = {k: raw[k] for k in RATE_LIMIT_FIELDS if k in raw}
    return RateLimit(**kept), kept


def _retry_on(items: list[str | int]) -> frozenset[str | int]:
    """``routing.retry_on`` as a set, each item checked with the schema's texts:
    a reason or a 4xx/5xx status that may be retried (401 and 403 are ``auth``)."""
    kept: set[str | int] = set()
    for i, item in enumerate(items):
        where = f'property "/routing/retry_on/{i}" validation failed: '
        if isinstance(item, str):
            if item not in RETRY_REASONS:
                raise SchemaError(
                    f"JSON schema validation error: {where}"
                    f"{_dumps(item)} is not one of {_dumps(list(RETRY_REASONS))}"
                )
            kept.add(item)
        elif not 400 <= item <= 599:
            bound = (
                "less than the minimum of 400" if item < 400 else "greater than the maximum of 599"
            )
            raise SchemaError(f"JSON schema validation error: {where}{item} is {bound}")
        elif item in NEVER_RETRIED:
            raise SchemaError(
                f"JSON schema validation error: {where}"
                f"{item} is a client error, which is never retried"
            )
        else:
            kept.add("auth" if item in (401, 403) else item)
    return frozenset(kept)


def _pricing(raw: dict | None) -> Pricing | None:
    if raw is None:
        return None
    return Pricing(raw["input_per_mtok"], raw["output_per_mtok"], raw.get("cached_input_per_mtok"))


def _routing(raw: dict | None) -> Routing:
    if raw is None:
        return DEFAULT_ROUTING
    cooldown = raw.get("cooldown")
    return Routing(
        strategy=raw.get("strategy", "weighted"),
        retries=raw.get("retries"),
        retry_on=_retry_on(raw["retry_on"]) if "retry_on" in raw else DEFAULT_ROUTING.retry_on,
        cooldown=Cooldown(**cooldown) if cooldown else DEFAULT_ROUTING.cooldown,
    )


def _legacy_upstream(raw: dict) -> dict[str, Any]:
    """Where a CONTRACT 2 deployment goes: ``<family>/<upstream id>`` and its
    ``provider_config`` (the id keeps any further "/")."""
    provider, _, upstream = raw["model"].partition("/")
    pc = raw["provider_config"]
    return {
        "provider": provider,
        "upstream_model": upstream,
        "api_key": pc.get("api_key"),
        "api_base": pc.get("api_base"),
    }


def _next_upstream(raw: dict) -> dict[str, Any]:
    """Where a later-wire deployment goes: a provider entity, resolved by the
    snapshot, and the upstream id verbatim."""
    return {
        "provider": "",
        "upstream_model": raw["model"],
        "api_key": None,
        "api_base": None,
        "provider_id": raw["provider_id"],
    }


#: the optional fields a model document keeps as they came (CONTRACT 5.1 and 4.4)
_KEPT = ("timeout", "weight", "routing", "fallbacks", "pricing")


def _model(
    id: str, doc: dict, head: dict[str, Any], upstream: Callable[[dict], dict[str, Any]]
) -> Model:
    """The entity of a validated model document of either wire: ``head`` is
    the stored document's first keys, ``upstream`` where a deployment goes."""
    rate_limit, rl_doc = _rate_limit(doc.get("rate_limit"))
    clean = dict(head)
    clean.update((k, doc[k]) for k in _KEPT if k in doc)
    if rl_doc is not None:
        clean["rate_limit"] = rl_doc
    raw_targets = doc.get("targets", ())
    if "targets" in doc:
        clean["targets"] = [dict(t) for t in raw_targets]
    name, timeout_ms = doc["name"], doc.get("timeout", 0)
    pricing = _pricing(doc.get("pricing"))
    targets = tuple(
        Model(
            id=id,
            name=name,
            timeout_ms=raw.get("timeout", timeout_ms),
            rate_limit=None,
            doc={},
            weight=raw.get("weight", 1),
            priority=raw.get("priority", 0),
            index=i,
            pricing=_pricing(raw["pricing"]) if "pricing" in raw else pricing,
            **upstream(raw),
        )
        for i, raw in enumerate(raw_targets, start=1)
    )
    prices = [pricing, *(t.pricing for t in targets)]
    return Model(
        id=id,
        name=name,
        timeout_ms=timeout_ms,
        rate_limit=rate_limit,
        doc=clean,
        weight=doc.get("weight", 1),
        targets=targets,
        routing=_routing(doc.get("routing")),
        fallbacks=tuple(doc.get("fallbacks", ())),
        pricing=pricing,
        priced=any(p is not None for p in prices),
        fully_priced=all(p is not None for p in prices),
        **upstream(doc),
    )


def parse_model(id: str, doc: Any) -> Model:
    """Validate a model document and build the entity (``doc`` is re-serialized):
    CONTRACT 2's wire or the later one (see :func:`is_legacy`)."""
    if not is_legacy(doc):
        _validate_next_model(doc)
        head = {"name": doc["name"], "provider_id": doc["provider_id"], "model": doc["model"]}
        return _model(id, doc, head, _next_upstream)
    _validate_model(doc)
    head = {
        "name": doc["name"],
        "model": doc["model"],
        "provider_config": dict(doc["provider_config"]),
    }
    return _model(id, doc, head, _legacy_upstream)


def load_model(id: str, doc: Any) -> Model:
    """A stored model document as a store loads it: a later-wire document
    with keys its schema does not know loads without them (AISIX's typed
    reader drops them, CONTRACT-NEXT 1.4); the Admin API refuses them."""
    if isinstance(doc, dict) and not is_legacy(doc):
        doc = {k: v for k, v in doc.items() if k in NEXT_MODEL_SCHEMA["properties"]}
    return parse_model(id, doc)


def parse_provider(id: str, doc: Any) -> Provider:
    """Validate a provider document and build the entity."""
    _validate_provider(doc)
    clean = {"name": doc["name"], "type": doc["type"], "config": dict(doc["config"])}
    return Provider(id, doc["name"], doc["type"], MappingProxyType(clean["config"]), clean)


def parse_apikey(id: str, doc: Any) -> ApiKey:
    """Validate an API key document and build the entity (``doc`` is re-serialized)."""
    _validate_apikey(doc)
    rate_limit, rl_doc = _rate_limit(doc.get("rate_limit"))
    clean: dict[str, Any] = {"key": doc["key"], "allowed_models": list(doc["allowed_models"])}
    if rl_doc is not None:
        clean["rate_limit"] = rl_doc
    budget = None
    if "budget" in doc:
        raw = doc["budget"]
        clean["budget"] = dict(raw)
        budget = Budget(raw["max_usd"], raw.get("period", DEFAULT_BUDGET_PERIOD))
    return ApiKey(
        id=id,
        key=doc["key"],
        allowed_models=frozenset(doc["allowed_models"]),
        rate_limit=rate_limit,
        doc=clean,
        budget=budget,
    )


@dataclass(frozen=True)
class Kind:
    """One entity kind: its key segment, unique field and the texts of its errors."""

    segment: str  # "models" / "apikeys" / "providers"
    unique_field: str | None  # None: not unique (a provider's name)
    label: str  # "Model" / "API key" / "Provider"
    duplicate: str  # the 400 text when another id holds the unique field
    parse: Callable[[str, Any], Any]  # an Admin API write
    #: a stored document (by default judged as a write)
    load: Callable[[str, Any], Any] | None = None

    def not_found(self, id: str) -> str:
        return f"{self.label} with ID {id} not found"

    def loaded(self, id: str, doc: Any) -> Any:
        """The entity of a stored document."""
        return (self.load or self.parse)(id, doc)


MODELS = Kind("models", "name", "Model", "Model name already exists", parse_model, load_model)
APIKEYS = Kind("apikeys", "key", "API key", "API key already exists", parse_apikey)
PROVIDERS = Kind("providers", None, "Provider", "", parse_provider)
KINDS = {k.segment: k for k in (MODELS, APIKEYS, PROVIDERS)}
