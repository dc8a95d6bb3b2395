"""The two entities of CONTRACT 2 (models and API keys): schema, checks, values.

Validation is pure: a JSON document goes in, a frozen entity or a
:class:`SchemaError` with AISIX's message text comes out. The Admin API, the
embedded store and the etcd loader all go through :func:`parse_model` /
:func:`parse_apikey`, so a document is judged the same way wherever it came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from twisted_gw.providers import catalog
from twisted_gw.providers.catalog import ConfigShape
from twisted_gw.ratelimit import kinds

#: the ``<provider>/`` prefixes a model may name (the table: twisted_gw.providers.catalog)
PROVIDERS = catalog.NAMES
#: the keys a ``rate_limit`` object keeps (the table: twisted_gw.ratelimit.kinds)
RATE_LIMIT_FIELDS = kinds.NAMES
#: bounds on every number of a document (CONTRACT 5.5): a value past them is
#: a schema error at write time, never an overflow on a later request
MAX_TIMEOUT_MS = 3_600_000
MAX_RATE_LIMIT = 10**12

_RATE_LIMIT_SCHEMA = {
    "type": "object",
    "properties": {
        k: {"type": "integer", "minimum": 0, "maximum": MAX_RATE_LIMIT} for k in RATE_LIMIT_FIELDS
    },
}


def model_pattern() -> str:
    """The pattern of a model's ``model`` field: a known family, ``/``, an upstream id."""
    return "^(" + "|".join(PROVIDERS) + ")/.+$"


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


MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "model", "provider_config"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "model": {"type": "string", "pattern": model_pattern()},
        "provider_config": {"type": "object"},
        "timeout": {"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT_MS},
        "rate_limit": _RATE_LIMIT_SCHEMA,
    },
    **provider_config_conditions(ConfigShape.schema),
}

APIKEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key", "allowed_models"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "allowed_models": {"type": "array", "items": {"type": "string"}},
        "rate_limit": _RATE_LIMIT_SCHEMA,
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


@dataclass(frozen=True)
class Model:
    """A configured model: what clients name, and where it really goes."""

    id: str
    name: str
    provider: str
    upstream_model: str
    api_key: str | None = field(repr=False)
    api_base: str | None
    timeout_ms: int
    rate_limit: RateLimit | None
    doc: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class ApiKey:
    """A client key and the model names it may use."""

    id: str
    key: str = field(repr=False)
    allowed_models: frozenset[str]
    rate_limit: RateLimit | None
    doc: dict = field(repr=False, compare=False)


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
_validate_apikey = _validator(APIKEY_SCHEMA)


def _rate_limit(raw: dict | None) -> tuple[RateLimit | None, dict | None]:
    if raw is None:
        return None, None
    kept = {k: raw[k] for k in RATE_LIMIT_FIELDS if k in raw}
    return RateLimit(**kept), kept


def parse_model(id: str, doc: Any) -> Model:
    """Validate a model document and build the entity (``doc`` is re-serialized)."""
    _validate_model(doc)
    provider, _, upstream = doc["model"].partition("/")  # the id keeps any further "/"
    pc = doc["provider_config"]
    rate_limit, rl_doc = _rate_limit(doc.get("rate_limit"))
    clean: dict[str, Any] = {
        "name": doc["name"],
        "model": doc["model"],
        "provider_config": dict(pc),
    }
    if "timeout" in doc:
        clean["timeout"] = doc["timeout"]
    if rl_doc is not None:
        clean["rate_limit"] = rl_doc
    return Model(
        id=id,
        name=doc["name"],
        provider=provider,
        upstream_model=upstream,
        api_key=pc.get("api_key"),
        api_base=pc.get("api_base"),
        timeout_ms=doc.get("timeout", 0),
        rate_limit=rate_limit,
        doc=clean,
    )


def parse_apikey(id: str, doc: Any) -> ApiKey:
    """Validate an API key document and build the entity (``doc`` is re-serialized)."""
    _validate_apikey(doc)
    rate_limit, rl_doc = _rate_limit(doc.get("rate_limit"))
    clean: dict[str, Any] = {"key": doc["key"], "allowed_models": list(doc["allowed_models"])}
    if rl_doc is not None:
        clean["rate_limit"] = rl_doc
    return ApiKey(
        id=id,
        key=doc["key"],
        allowed_models=frozenset(doc["allowed_models"]),
        rate_limit=rate_limit,
        doc=clean,
    )


@dataclass(frozen=True)
class Kind:
    """One entity kind: its key segment, unique field and the texts of its errors."""

    segment: str  # "models" / "apikeys"
    unique_field: str
    label: str  # "Model" / "API key"
    duplicate: str  # the 400 text when another id holds the unique field
    parse: Callable[[str, Any], Any]

    def not_found(self, id: str) -> str:
        return f"{self.label} with ID {id} not found"


MODELS = Kind("models", "name", "Model", "Model name already exists", parse_model)
APIKEYS = Kind("apikeys", "key", "API key", "API key already exists", parse_apikey)
KINDS = {k.segment: k for k in (MODELS, APIKEYS)}
