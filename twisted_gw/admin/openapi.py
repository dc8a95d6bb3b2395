"""The Admin API's OpenAPI 3.1 document, the reference page built from it,
and the catalog the admin UI's forms are built from.

CONTRACT 3 puts two unauthenticated pages on the admin listener **[beyond]**:
``GET /openapi.json`` (this document) and ``GET /openapi`` (a human-readable
reference rendered from it). Operators of an air-gapped gateway must be able to
read it, so the page is rendered here, server-side, from the same dict: no
JavaScript, no CDN, no third-party code, only inline CSS.

The document is data, ``openapi.yaml`` next to this module: it describes the
wire contract, not the implementation. Only what the gateway's tables decide
(provider families and their ``provider_config`` shapes, rate-limit kinds, the
numeric bounds, the version) is filled in from those tables when it is loaded
(:func:`_filled`), so the document and the validation cannot disagree. The
document, its page and the catalog are built once and memoized, since they are
served on every request for them and never change while the process runs.
Callers must treat the returned dicts as read-only.
"""

from __future__ import annotations

import functools
import html
import json
import re
import urllib.parse
from importlib import resources
from typing import Any

import yaml

from twisted_gw import __version__
from twisted_gw.config import entities
from twisted_gw.config.entities import (
    MAX_RATE_LIMIT,
    MAX_TIMEOUT_MS,
    model_pattern,
    provider_config_conditions,
)
from twisted_gw.providers import catalog
from twisted_gw.providers.catalog import ConfigShape
from twisted_gw.ratelimit import kinds

__all__ = ["catalog_document", "fill", "openapi_document", "openapi_html"]

_SCHEMAS = "#/components/schemas/"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: how openapi.yaml marks a value (or, as a key, a run of keys) filled in from the tables
_MARK = "$filled "


def _ref(shape: ConfigShape) -> dict[str, str]:
    return {"$ref": _SCHEMAS + shape.component}


def _names(families: list[catalog.ProviderFamily]) -> str:
    return ", ".join(f"`{f.name}`" for f in families)


def _shape_schema(shape: ConfigShape, families: list[catalog.ProviderFamily]) -> dict[str, Any]:
    """The documented component of one ``provider_config`` shape: the schema the
    entity validation applies, with the texts a reader needs."""
    schema: dict[str, Any] = {
        "type": "object",
        "description": shape.description.format(families=_names(families)),
    }
    required = [f.name for f in shape.fields if f.required]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    if shape.fields:
        schema["properties"] = {
            f.name: {"type": "string", "description": f.description} for f in shape.fields
        }
    return schema


def _filled() -> dict[str, Any]:
    """What each ``$filled <name>`` of openapi.yaml stands for, from the tables."""
    shapes = catalog.shapes()
    return {
        "version": __version__,
        "provider_names": list(catalog.NAMES),
        "model_pattern": model_pattern(),
        "provider_config_schemas": {s.component: _shape_schema(s, fs) for s, fs in shapes},
        "provider_config_one_of": [_ref(s) for s, _ in shapes],
        "provider_config_description": "; ".join(
            f"`{s.component}`{'' if s.fields else ' (`{}`)'} for {_names(fs)}" for s, fs in shapes
        )
        + ".",
        "provider_config_conditions": provider_config_conditions(_ref),
        "rate_limit_names": list(kinds.NAMES),
        "rate_limit_properties": {
            k.name: {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_RATE_LIMIT,
                "description": k.help,
            }
            for k in kinds.KINDS
        },
        "max_rate_limit": MAX_RATE_LIMIT,
        "max_timeout_ms": MAX_TIMEOUT_MS,
        "max_weight": entities.MAX_WEIGHT,
        "max_priority": entities.MAX_PRIORITY,
        "max_retries": entities.MAX_RETRIES,
        "max_cooldown_failures": entities.MAX_COOLDOWN_FAILURES,
        "max_cooldown_ms": entities.MAX_COOLDOWN_MS,
        "max_price_per_mtok": entities.MAX_PRICE_PER_MTOK,
        "max_budget_usd": entities.MAX_BUDGET_USD,
        "budget_periods": list(entities.BUDGET_PERIODS),
        "provider_schema": entities.PROVIDER_SCHEMA,
        "provider_model_schema": entities.NEXT_MODEL_SCHEMA,
        "strategies": list(entities.STRATEGIES),
        "retry_reasons": list(entities.RETRY_REASONS),
        "never_retried": sorted(entities.NEVER_RETRIED),
        "default_retry_on": list(entities.DEFAULT_RETRY_ON),
        "retry_on_description": (
            "Why an attempt is retried: "
            + ", ".join(f"`{r}`" for r in entities.RETRY_REASONS)
            + " (refused, DNS, TLS, reset, or a stream cut before its first chunk; the model's "
            "timeout; the upstream's 401/403) or an upstream status 400-599. The client errors "
            + ", ".join(str(c) for c in sorted(entities.NEVER_RETRIED))
            + " are never retried (a schema error here). Default: "
            + json.dumps(list(entities.DEFAULT_RETRY_ON))
            + "."
        ),
    }


def fill(node: Any, values: dict[str, Any], used: set[str] | None = None) -> Any:
    """``node`` with every ``$filled <name>`` replaced from ``values``: a string
    value by ``values[name]``, a key by the keys of the mapping ``values[name]``,
    in its place (so the document's key order is the file's).

    A name ``values`` does not hold is a ValueError: a typo in the data file
    fails the first load (a test loads it), never serves a placeholder."""
    used = set() if used is None else used

    def value(name: str) -> Any:
        if name not in values:
            raise ValueError(f"openapi.yaml: nothing fills {_MARK}{name}")
        used.add(name)
        return values[name]

    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, item in node.items():
            if isinstance(key, str) and key.startswith(_MARK):
                out.update(value(key[len(_MARK) :]))
            else:
                out[key] = fill(item, values, used)
        return out
    if isinstance(node, list):
        return [fill(item, values, used) for item in node]
    if isinstance(node, str) and node.startswith(_MARK):
        return value(node[len(_MARK) :])
    return node


def _load() -> Any:
    text = resources.files(__package__).joinpath("openapi.yaml").read_text("utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # a safe loader: plain data only


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The Admin API's OpenAPI 3.1.0 document (CONTRACT 3), loaded once.

    The same dict is returned on every call: treat it as read-only."""
    values = _filled()
    used: set[str] = set()
    doc = fill(_load(), values, used)
    if used != set(values):  # a table part the file no longer places
        raise ValueError(f"openapi.yaml places no {sorted(set(values) - used)}")
    return doc


@functools.cache
def catalog_document() -> dict[str, Any]:
    """The tables the admin UI's forms are built from, served as ``/ui/catalog.json``:
    provider families (``provider_config``), provider entity types
    (CONTRACT-NEXT 1.1), rate-limit kinds and the numeric bounds of a document
    (its shape is in :func:`openapi_document`, path ``/ui/catalog.json``).

    The UI fetches this instead of repeating the lists, so a new provider or
    limit kind reaches its forms with no change to the UI. Read-only."""
    # only the catalog reads the entity types (the Provider schema is entities.PROVIDER_SCHEMA)
    from twisted_gw.providers import types as provider_types

    secrets = provider_types.SECRET_SETTINGS  # the UI never shows them back

    def settings(config: dict[str, Any]) -> dict[str, Any]:
        required = set(config.get("required", ()))
        return {
            name: {"required": name in required, "secret": name in secrets}
            for name in config.get("properties", {})
        }

    return {
        "providers": [f.describe() for f in catalog.FAMILIES],
        "provider_types": [
            {
                "name": t.name,
                "default_base": t.default_base,
                "embeddings": t.embeddings,
                "config": settings(t.config),
            }
            for t in provider_types.TYPES
        ],
        "rate_limits": [k.describe() for k in kinds.KINDS],
        "bounds": {"timeout_ms": MAX_TIMEOUT_MS, "rate_limit": MAX_RATE_LIMIT},
        "routing": {
            "strategies": list(entities.STRATEGIES),
            "retry_reasons": list(entities.RETRY_REASONS),
            "never_retried": sorted(entities.NEVER_RETRIED),
            "default_retry_on": list(entities.DEFAULT_RETRY_ON),
            "bounds": {
                "weight": entities.MAX_WEIGHT,
                "priority": entities.MAX_PRIORITY,
                "retries": entities.MAX_RETRIES,
                "cooldown_failures": entities.MAX_COOLDOWN_FAILURES,
                "cooldown_ms": entities.MAX_COOLDOWN_MS,
            },
        },
    }


# -- the HTML reference page ----------------------------------------------------------------

_CSS = """
:root{color-scheme:light dark;--fg:#1d2025;--muted:#5b6470;--bg:#fff;--panel:#f5f7fa;
--line:#d9dee5;--link:#0b57d0;--code:#eef1f5}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8eb;--muted:#a3acb8;--bg:#16181c;
--panel:#1f232a;--line:#343a44;--link:#8ab4f8;--code:#2a2f38}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
a{color:var(--link)}
a:focus-visible{outline:2px solid var(--link);outline-offset:2px}
.skip{position:absolute;left:-9999px}.skip:focus{left:1rem;top:1rem;background:var(--bg);padding:.3rem}
.layout{display:grid;grid-template-columns:17rem 1fr;min-height:100vh}
nav{border-right:1px solid var(--line);padding:1rem;background:var(--panel);position:sticky;
top:0;height:100vh;overflow:auto;font-size:14px}
nav ul{list-style:none;padding-left:0;margin:.2rem 0 .8rem}nav li{margin:.15rem 0}
nav h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:.8rem 0 .2rem}
main{padding:1.5rem 2rem;max-width:62rem}
h1{margin:0 0 .2rem}h2{margin-top:2.2rem;border-bottom:1px solid var(--line);padding-bottom:.3rem}
.meta{color:var(--muted)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
code{background:var(--code);padding:0 .25em;border-radius:3px}
pre{background:var(--code);padding:.6rem .8rem;border-radius:4px;overflow:auto;
white-space:pre-wrap;overflow-wrap:anywhere}
pre code{background:none;padding:0}
.op{border:1px solid var(--line);border-radius:6px;margin:1rem 0;padding:.2rem 1rem .8rem}
.op h3{display:flex;gap:.6rem;align-items:baseline;flex-wrap:wrap}
.m{font:700 12px/1 ui-monospace,Menlo,Consolas,monospace;text-transform:uppercase;color:#fff;
padding:.3rem .45rem;border-radius:4px;background:#555}
.m-get{background:#1a7f37}.m-post{background:#0b57d0}.m-put{background:#9a6700}
.m-delete{background:#c5221f}
.path{font-family:ui-monospace,Menlo,Consolas,monospace}
.sum{font-weight:400;color:var(--muted)}
h4{margin:1rem 0 .3rem;font-size:14px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:var(--panel)}
.schema ul{margin:.2rem 0;padding-left:1.2rem}
.schema li{margin:.15rem 0}
.t{color:var(--muted);font-style:italic}
.req{color:#c5221f;font-size:12px;font-weight:600}
.c{color:var(--muted);font-size:13px}
details summary{cursor:pointer;color:var(--muted)}
@media (max-width:800px){.layout{display:block}nav{position:static;height:auto}}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _anchor(*parts: str) -> str:
    """A readable element id, distinct for distinct parts (`op-get-/ui` vs `op-get-/ui/`)."""
    return "-".join(re.sub(r"\s", "_", p) for p in parts)


def _href(*parts: str) -> str:
    """The escaped ``href`` value of a link to :func:`_anchor` of ``parts``."""
    return _e("#" + urllib.parse.quote(_anchor(*parts), safe="/-_.:@"))


def _text(value: Any) -> str:
    """Escape a description, then render the Markdown it uses: code spans, bold, paragraphs."""
    out = []
    for para in re.split(r"\n\s*\n", str(value).strip()):
        s = _e(para)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        out.append("<p>" + s.replace("\n", "<br>") + "</p>")
    return "".join(out)


def _pretty(value: Any) -> str:
    return "<pre><code>" + _e(json.dumps(value, indent=2, ensure_ascii=False)) + "</code></pre>"


def _ref_link(ref: str) -> str:
    if ref.startswith(_SCHEMAS):
        name = ref[len(_SCHEMAS) :]
        return f'<a href="{_href("schema", name)}">{_e(name)}</a>'
    return f"<code>{_e(ref)}</code>"


_CONSTRAINTS = (
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "default",
)


def _schema(schema: Any, depth: int = 0) -> str:
    """One schema as nested lists: type and constraints on a line, then its parts."""
    if not isinstance(schema, dict):
        return f"<code>{_e(json.dumps(schema))}</code>"
    if depth > 12:
        return '<span class="c">(nested too deep; see the JSON)</span>'
    line: list[str] = []
    if "$ref" in schema:
        line.append(_ref_link(schema["$ref"]))
    if "type" in schema:
        t = schema["type"]
        line.append(f'<span class="t">{_e(" | ".join(t) if isinstance(t, list) else t)}</span>')
    if "const" in schema:
        line.append(f"= <code>{_e(json.dumps(schema['const']))}</code>")
    if "enum" in schema:
        line.append(
            "one of " + ", ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
        )
    for key in _CONSTRAINTS:
        if key in schema:
            line.append(
                f'<span class="c">{_e(key)}: <code>{_e(json.dumps(schema[key]))}</code></span>'
            )
    if schema.get("additionalProperties") is False:
        line.append('<span class="c">no other properties</span>')
    parts = [" ".join(line)] if line else []
    if "description" in schema:
        parts.append(_text(schema["description"]))

    items: list[str] = []
    required = set(schema.get("required", ()))
    for name, sub in schema.get("properties", {}).items():
        req = ' <span class="req">required</span>' if name in required else ""
        items.append(f"<li><code>{_e(name)}</code>{req} {_schema(sub, depth + 1)}</li>")
    props_listed = set(schema.get("properties", {}))
    for name in sorted(required - props_listed):
        items.append(f'<li><code>{_e(name)}</code> <span class="req">required</span></li>')
    if isinstance(schema.get("additionalProperties"), dict):
        items.append(
            "<li>other properties: " + _schema(schema["additionalProperties"], depth + 1) + "</li>"
        )
    if "items" in schema:
        items.append("<li>items: " + _schema(schema["items"], depth + 1) + "</li>")
    for key, label in (("oneOf", "exactly one of"), ("anyOf", "any of"), ("allOf", "all of")):
        if key in schema:
            alts = "".join(f"<li>{_schema(s, depth + 1)}</li>" for s in schema[key])
            items.append(f"<li>{label}:<ol>{alts}</ol></li>")
    for key in ("if", "then", "else", "not"):
        if key in schema:
            items.append(f"<li><em>{key}</em>: {_schema(schema[key], depth + 1)}</li>")
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    for example in schema.get("examples", ()):
        parts.append("<div>Example:" + _pretty(example) + "</div>")
    return '<div class="schema">' + "".join(parts) + "</div>"


def _resolve(doc: dict[str, Any], obj: Any) -> Any:
    """Follow a local ``$ref`` (responses, parameters); schemas stay links instead."""
    seen = 0
    while (
        isinstance(obj, dict) and "$ref" in obj and str(obj["$ref"]).startswith("#/") and seen < 8
    ):
        target: Any = doc
        for part in obj["$ref"][2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return obj
            target = target[part]
        obj, seen = target, seen + 1
    return obj


def _content(doc: dict[str, Any], content: dict[str, Any]) -> str:
    out = []
    for media_type, media in content.items():
        media = _resolve(doc, media)
        out.append(f"<div><code>{_e(media_type)}</code>")
        if "schema" in media:
            out.append(_schema(media["schema"]))
        if "example" in media:
            out.append(_pretty(media["example"]))
        for name, example in media.get("examples", {}).items():
            example = _resolve(doc, example)
            if isinstance(example, dict) and "value" in example:
                out.append(f"<div>Example <em>{_e(name)}</em>:{_pretty(example['value'])}</div>")
        out.append("</div>")
    return "".join(out)


def _parameters(doc: dict[str, Any], params: list[Any]) -> str:
    if not params:
        return ""
    rows = []
    for p in params:
        p = _resolve(doc, p)
        req = '<span class="req">required</span>' if p.get("required") else "optional"
        rows.append(
            f"<tr><td><code>{_e(p.get('name', ''))}</code></td><td>{_e(p.get('in', ''))}</td>"
            f"<td>{req}</td><td>{_schema(p.get('schema', {}))}"
            f"{_text(p['description']) if 'description' in p else ''}</td></tr>"
        )
    return (
        "<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th></th>"
        "<th>schema</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _security(doc: dict[str, Any], op: dict[str, Any]) -> str:
    requirements = op.get("security", doc.get("security", []))
    if not requirements:
        return '<p class="c">No authentication.</p>'
    alternatives = [
        " and ".join(f'<a href="{_href("auth", n)}">{_e(n)}</a>' for n in req) or "none"
        for req in requirements
    ]
    return f'<p class="c">Authentication: {" or ".join(alternatives)}.</p>'


def _responses_html(doc: dict[str, Any], responses: dict[str, Any]) -> str:
    rows = []
    for status, response in responses.items():
        response = _resolve(doc, response)
        cell = _text(response.get("description", ""))
        for name, header in response.get("headers", {}).items():
            header = _resolve(doc, header)
            cell += f"<div>Header <code>{_e(name)}</code>: {_schema(header.get('schema', {}))}"
            cell += (_text(header["description"]) if "description" in header else "") + "</div>"
        cell += _content(doc, response.get("content", {}))
        if not response.get("content"):
            cell += '<p class="c">No body.</p>'
        rows.append(f'<tr><th scope="row">{_e(status)}</th><td>{cell}</td></tr>')
    return (
        "<h4>Responses</h4><table><thead><tr><th>status</th><th>body</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    ops = []
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                ops.append((path, method, item, item[method]))
    return ops


def _render(doc: dict[str, Any]) -> bytes:
    info = doc.get("info", {})
    title = str(info.get("title", "API reference"))
    components = doc.get("components", {})
    ops = _operations(doc)
    nav: list[str] = ['<h2>Overview</h2><ul><li><a href="#auth">Authentication</a></li></ul>']
    nav.append("<h2>Operations</h2><ul>")
    for path, method, _item, op in ops:
        nav.append(
            f'<li><a href="{_href("op", method, path)}"><span class="path">'
            f"{_e(method.upper())} {_e(path)}</span></a></li>"
        )
    nav.append("</ul>")
    schemas = components.get("schemas", {})
    if schemas:
        nav.append("<h2>Schemas</h2><ul>")
        nav.extend(f'<li><a href="{_href("schema", n)}">{_e(n)}</a></li>' for n in schemas)
        nav.append("</ul>")

    body: list[str] = [
        f"<h1>{_e(title)}</h1>",
        (
            f'<p class="meta">Version {_e(info.get("version", ""))} &middot; OpenAPI '
            f"{_e(doc.get('openapi', ''))} &middot; machine-readable: "
            '<a href="/openapi.json">/openapi.json</a></p>'
        ),
    ]
    if "summary" in info:
        body.append(_text(info["summary"]))
    if "description" in info:
        body.append(_text(info["description"]))

    body.append('<h2 id="auth">Authentication</h2>')
    schemes = components.get("securitySchemes", {})
    rows = []
    for name, scheme in schemes.items():
        scheme = _resolve(doc, scheme)
        kind = scheme.get("type", "")
        if kind == "http":
            how = f"HTTP <code>Authorization: {_e(str(scheme.get('scheme', '')).title())} …</code>"
        elif kind == "apiKey":
            how = f"{_e(scheme.get('in', ''))} <code>{_e(scheme.get('name', ''))}</code>"
        else:
            how = _e(kind)
        rows.append(
            f'<tr id="{_e(_anchor("auth", name))}"><th scope="row"><code>{_e(name)}</code></th>'
            f"<td>{how}</td><td>{_text(scheme.get('description', ''))}</td></tr>"
        )
    if rows:
        body.append(
            "<table><thead><tr><th>scheme</th><th>sent as</th><th></th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    global_security = doc.get("security", [])
    if global_security:
        names = " or ".join(", ".join(_e(n) for n in req) for req in global_security)
        body.append(f"<p>Required by every operation unless it says otherwise: {names}.</p>")

    body.append("<h2>Operations</h2>")
    for path, method, item, op in ops:
        body.append(f'<section class="op" id="{_e(_anchor("op", method, path))}">')
        body.append(
            f'<h3><span class="m m-{_e(method)}">{_e(method.upper())}</span>'
            f'<span class="path">{_e(path)}</span>'
            f'<span class="sum">{_e(op.get("summary", ""))}</span></h3>'
        )
        if "operationId" in op:
            body.append(f'<p class="c">operationId <code>{_e(op["operationId"])}</code></p>')
        if "description" in op:
            body.append(_text(op["description"]))
        if "description" in item:
            body.append(f'<div class="c">{_text(item["description"])}</div>')
        body.append(_security(doc, op))
        body.append(_parameters(doc, list(item.get("parameters", [])) + op.get("parameters", [])))
        if "requestBody" in op:
            request_body = _resolve(doc, op["requestBody"])
            req = " (required)" if request_body.get("required") else " (optional)"
            body.append(f"<h4>Request body{req}</h4>")
            if "description" in request_body:
                body.append(_text(request_body["description"]))
            body.append(_content(doc, request_body.get("content", {})))
        body.append(_responses_html(doc, op.get("responses", {})))
        body.append("</section>")

    if schemas:
        body.append("<h2>Schemas</h2>")
        for name, schema in schemas.items():
            body.append(
                f'<section class="op" id="{_e(_anchor("schema", name))}"><h3>{_e(name)}</h3>'
                f"{_schema(schema)}<details><summary>JSON Schema</summary>{_pretty(schema)}"
                "</details></section>"
            )

    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        '<div class="layout"><nav aria-label="Contents">'
        + "".join(nav)
        + '</nav><main id="main">'
        + "".join(body)
        + "</main></div></body></html>\n"
    )
    return page.encode("utf-8")


@functools.cache
def _document_html() -> bytes:
    return _render(openapi_document())


def openapi_html(doc: dict[str, Any]) -> bytes:
    """A self-contained HTML reference page for ``doc`` (UTF-8 bytes).

    Every string from the document is HTML-escaped; the page loads nothing
    (no scripts, inline CSS only). The page of :func:`openapi_document` is
    rendered once and reused."""
    if doc is openapi_document():
        return _document_html()
    return _render(doc)
