"""The Admin API's OpenAPI 3.1 document and the reference page built from it.

CONTRACT 3 puts two unauthenticated pages on the admin listener **[beyond]**:
``GET /openapi.json`` (this document) and ``GET /openapi`` (a human-readable
reference rendered from it). Operators of an air-gapped gateway must be able to
read it, so the page is rendered here, server-side, from the same dict: no
JavaScript, no CDN, no third-party code, only inline CSS.

The document describes the wire contract, not the implementation: status codes,
body shapes and ``error_msg`` texts of CONTRACT 3, and the ``Model`` /
``ApiKey`` entities of CONTRACT 2. Both are built once and memoized, since they
are served on every request for them and never change while the process runs.
Callers must treat the returned dict as read-only.
"""

from __future__ import annotations

import functools
import html
import json
import re
import urllib.parse
from typing import Any

from twisted_gw import __version__
from twisted_gw.config.entities import (
    MAX_RATE_LIMIT,
    MAX_TIMEOUT_MS,
    PROVIDERS,
    RATE_LIMIT_FIELDS,
)

__all__ = ["openapi_document", "openapi_html"]

PREFIX = "/aisix/admin"
_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _json_content(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = {k: {"value": v} for k, v in examples.items()}
    return {"application/json": media}


# -- component schemas (CONTRACT 2) ------------------------------------------------------

_RATE_LIMIT_HELP = {
    "rpm": "Requests per minute (fixed 60 s window aligned to the epoch).",
    "rpd": "Requests per day (fixed 86400 s window aligned to the epoch).",
    "tpm": "Tokens per minute (usage `total_tokens`, consumed when the request finishes).",
    "tpd": "Tokens per day (usage `total_tokens`, consumed when the request finishes).",
    "concurrency": "Requests in flight at once, this one included.",
}

_MODEL_EXAMPLE = {
    "name": "my-gpt",
    "model": "openai/gpt-4.1-mini",
    "provider_config": {"api_key": "sk-...", "api_base": "https://api.openai.com/v1"},
    "timeout": 30000,
    "rate_limit": {"rpm": 100, "tpm": 10000, "concurrency": 10},
}
_MOCK_MODEL_EXAMPLE = {"name": "echo", "model": "mock/echo", "provider_config": {}}
_APIKEY_EXAMPLE = {"key": "sk-...", "allowed_models": ["my-gpt"], "rate_limit": {"rpm": 60}}


def _schemas() -> dict[str, Any]:
    providers = "|".join(PROVIDERS)
    remote = [p for p in PROVIDERS if p != "mock"]
    schemas: dict[str, Any] = {
        "RateLimit": {
            "type": "object",
            "description": (
                "Limits checked independently on the API key and on the model; both must "
                "pass. Any other key inside this object is dropped, not rejected."
            ),
            "properties": {
                k: {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_RATE_LIMIT,
                    "description": _RATE_LIMIT_HELP[k],
                }
                for k in RATE_LIMIT_FIELDS
            },
        },
        "RemoteProviderConfig": {
            "type": "object",
            "description": "Settings of the " + ", ".join(f"`{p}`" for p in remote) + " providers.",
            "required": ["api_key"],
            "additionalProperties": False,
            "properties": {
                "api_key": {
                    "type": "string",
                    "description": "The provider's key, sent upstream by the gateway.",
                },
                "api_base": {
                    "type": "string",
                    "description": (
                        "Replaces the provider's default base URL; a trailing `/` is ignored."
                    ),
                },
            },
        },
        "MockProviderConfig": {
            "type": "object",
            "description": "The `mock` provider answers locally and takes no settings: exactly `{}`.",
            "additionalProperties": False,
        },
        "Model": {
            "type": "object",
            "description": (
                "A configured model, stored at `<prefix>/models/<id>`. The stored value is "
                "the validated document re-serialized, absent optionals omitted."
            ),
            "required": ["name", "model", "provider_config"],
            "additionalProperties": False,
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Unique; what clients put in `model`.",
                },
                "model": {
                    "type": "string",
                    "pattern": f"^({providers})/.+$",
                    "description": (
                        "`<provider>/<upstream model id>`. The upstream id is everything "
                        "after the first `/` and may itself contain `/`."
                    ),
                    "examples": ["openai/gpt-4.1-mini", "mock/echo"],
                },
                "provider_config": {
                    "type": "object",
                    "description": (
                        "`RemoteProviderConfig` for "
                        + ", ".join(f"`{p}`" for p in remote)
                        + "; `MockProviderConfig` (`{}`) for `mock`."
                    ),
                    "oneOf": [_ref("RemoteProviderConfig"), _ref("MockProviderConfig")],
                },
                "timeout": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_TIMEOUT_MS,
                    "description": (
                        "Milliseconds to wait for the upstream's answer (streams: for the "
                        "first chunk, then between chunks). 0 or absent: no per-model bound."
                    ),
                },
                "rate_limit": _ref("RateLimit"),
            },
            # Which provider_config shape applies depends on the provider in `model`.
            "if": {
                "required": ["model"],
                "properties": {"model": {"type": "string", "pattern": "^mock/"}},
            },
            "then": {"properties": {"provider_config": _ref("MockProviderConfig")}},
            "else": {"properties": {"provider_config": _ref("RemoteProviderConfig")}},
            "examples": [_MODEL_EXAMPLE, _MOCK_MODEL_EXAMPLE],
        },
        "ApiKey": {
            "type": "object",
            "description": "A client key of the proxy, stored at `<prefix>/apikeys/<id>`.",
            "required": ["key", "allowed_models"],
            "additionalProperties": False,
            "properties": {
                "key": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Unique; what clients send as `Authorization: Bearer <key>`.",
                },
                "allowed_models": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Model names this key may use; `[]` means no access.",
                },
                "rate_limit": _ref("RateLimit"),
            },
            "examples": [_APIKEY_EXAMPLE],
        },
        "ChatCompletionRequest": {
            "type": "object",
            "description": (
                "An OpenAI chat completion request. `model` is a configured model's "
                "`name`; every other field is forwarded upstream unchanged."
            ),
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string"},
                "messages": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": 'OpenAI messages, e.g. `{"role": "user", "content": "Hi"}`.',
                },
                "stream": {
                    "type": "boolean",
                    "description": "Answer with Server-Sent Events, relayed chunk by chunk.",
                },
            },
            "examples": [
                {"model": "my-gpt", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
            ],
        },
        "ProxyError": {
            "type": "object",
            "description": "The proxy's errors: OpenAI's error shape (CONTRACT 4.1).",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": "null"},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "Error": {
            "type": "object",
            "description": "Every Admin API error that has a body.",
            "required": ["error_msg"],
            "additionalProperties": False,
            "properties": {"error_msg": {"type": "string"}},
        },
    }
    for entity, segment in (("Model", "models"), ("ApiKey", "apikeys")):
        key = {
            "type": "string",
            "pattern": f"^/{segment}/[^/]+$",
            "description": f"`/{segment}/<id>`, the entry's key below the store prefix.",
        }
        index = "The store's {} revision of the entry (etcd's; the embedded store keeps its own)."
        schemas[f"{entity}Entry"] = {
            "type": "object",
            "required": ["key", "value", "created_index", "modified_index"],
            "properties": {
                "key": key,
                "value": _ref(entity),
                "created_index": {"type": "integer", "description": index.format("create")},
                "modified_index": {"type": "integer", "description": index.format("modification")},
            },
        }
        schemas[f"{entity}List"] = {
            "type": "object",
            "required": ["total", "list"],
            "properties": {
                "total": {"type": "integer", "minimum": 0, "description": "Length of `list`."},
                "list": {
                    "type": "array",
                    "items": _ref(f"{entity}Entry"),
                    "description": "Every entry, in key order, the stored JSON as is.",
                },
            },
        }
        schemas[f"{entity}Written"] = {
            "type": "object",
            "required": ["key", "value"],
            "properties": {"key": key, "value": _ref(entity)},
        }
        schemas[f"{entity}Deleted"] = {
            "type": "object",
            "required": ["deleted", "key"],
            "properties": {"deleted": {"type": "integer", "const": 1}, "key": key},
        }
    return schemas


def _responses() -> dict[str, Any]:
    def error(description: str, **examples: Any) -> dict[str, Any]:
        return {
            "description": description,
            "content": _json_content(
                _ref("Error"), {k: {"error_msg": v} for k, v in examples.items()}
            ),
        }

    return {
        "BadRequest": error(
            "The body is not JSON, fails the schema (several errors joined by a newline), "
            "or another id already holds the unique name / key.",
            invalid_json="Invalid JSON: expected value at line 1 column 1",
            schema=(
                'JSON schema validation error: property "/" validation failed: '
                '"name" is a required property'
            ),
            duplicate_model="Model name already exists",
            duplicate_apikey="API key already exists",
        ),
        "Unauthorized": error(
            "No admin key was presented (or none is configured), or it is not one of "
            "`deployment.admin.admin_key`.",
            missing="Missing API key",
            invalid="Invalid API key",
        ),
        "ModelNotFound": error(
            "No model under this id.", not_found="Model with ID 1f0e2d3c not found"
        ),
        "ApiKeyNotFound": error(
            "No API key under this id.", not_found="API key with ID 1f0e2d3c not found"
        ),
        "MethodNotAllowed": {
            **error(
                "A known Admin API path with a method it does not have (checked after auth).",
                not_allowed="Method not allowed",
            ),
            "headers": {
                "Allow": {
                    "description": "The methods the path has.",
                    "schema": {"type": "string"},
                }
            },
        },
        "ServerError": error(
            "The store failed or did not answer within its timeout; the request never hangs.",
            store="etcd put failed: deadline exceeded",
        ),
    }


# -- paths (CONTRACT 3) -------------------------------------------------------------------


def _entity_paths(entity: str, segment: str, label: str, plural: str) -> dict[str, Any]:
    ops = "".join(w.capitalize() for w in plural.split())
    one = "".join(w.capitalize() for w in label.split())
    tag = segment
    not_found = {"$ref": _RESPONSES + f"{entity}NotFound"}
    common = {
        "401": {"$ref": _RESPONSES + "Unauthorized"},
        "500": {"$ref": _RESPONSES + "ServerError"},
    }
    body = {
        "required": True,
        "description": f"The {label} document.",
        "content": _json_content(_ref(entity)),
    }
    wrong_method = (
        "Any other method on this path answers 401 without a valid admin key, else 405 "
        '`{"error_msg": "Method not allowed"}` with an `Allow` header '
        "(`MethodNotAllowed` in `components.responses`)."
    )
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "description": f"The {label}'s store id: the last segment of its `key`.",
        "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    }
    return {
        f"{PREFIX}/{segment}": {
            "description": wrong_method,
            "get": {
                "tags": [tag],
                "operationId": f"list{ops}",
                "summary": f"List {plural}",
                "description": f"Every {label} in the store, in key order.",
                "responses": {
                    "200": {
                        "description": f"The {plural}.",
                        "content": _json_content(_ref(f"{entity}List")),
                    },
                    **common,
                },
            },
            "post": {
                "tags": [tag],
                "operationId": f"create{one}",
                "summary": f"Create a {label}",
                "description": (
                    "Stores the document under a new id, a lowercase hyphenated uuid4. "
                    "Checked in order: JSON, schema, unique "
                    + ("name" if entity == "Model" else "key")
                    + " (against the store), then written."
                ),
                "requestBody": body,
                "responses": {
                    "201": {
                        "description": f"Created; `key` is `/{segment}/<uuid4>`.",
                        "content": _json_content(_ref(f"{entity}Written")),
                    },
                    "400": {"$ref": _RESPONSES + "BadRequest"},
                    **common,
                },
            },
        },
        f"{PREFIX}/{segment}/{{id}}": {
            "description": wrong_method,
            "parameters": [id_param],
            "get": {
                "tags": [tag],
                "operationId": f"get{one}",
                "summary": f"Get a {label}",
                "responses": {
                    "200": {
                        "description": f"The {label}.",
                        "content": _json_content(_ref(f"{entity}Entry")),
                    },
                    "404": not_found,
                    **common,
                },
            },
            "put": {
                "tags": [tag],
                "operationId": f"put{one}",
                "summary": f"Create or replace a {label} under this id",
                "description": (
                    "Same checks as create; the entry under this id may keep its own "
                    + ("name." if entity == "Model" else "key.")
                ),
                "requestBody": body,
                "responses": {
                    "200": {
                        "description": "Replaced an existing entry.",
                        "content": _json_content(_ref(f"{entity}Written")),
                    },
                    "201": {
                        "description": "Created the entry.",
                        "content": _json_content(_ref(f"{entity}Written")),
                    },
                    "400": {"$ref": _RESPONSES + "BadRequest"},
                    **common,
                },
            },
            "delete": {
                "tags": [tag],
                "operationId": f"delete{one}",
                "summary": f"Delete a {label}",
                "responses": {
                    "200": {
                        "description": "Deleted.",
                        "content": _json_content(_ref(f"{entity}Deleted")),
                    },
                    "404": not_found,
                    **common,
                },
            },
        },
    }


def _html_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _public_paths() -> dict[str, Any]:
    ui_index = _html_response("The admin UI's single-page index.")
    return {
        "/openapi": {
            "get": {
                "tags": ["docs"],
                "operationId": "getOpenApiPage",
                "summary": "This API reference as an HTML page",
                "security": [],
                "responses": {
                    "200": _html_response("The reference page, built from /openapi.json.")
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["docs"],
                "operationId": "getOpenApiDocument",
                "summary": "This OpenAPI 3.1 document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": _json_content(
                            {"type": "object", "description": "An OpenAPI 3.1.0 document."}
                        ),
                    }
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["docs"],
                "operationId": "getMetrics",
                "summary": "Prometheus metrics (text exposition format)",
                "description": "aisix_request_count_total, aisix_token_count_total, "
                "aisix_request_latency_milliseconds, aisix_llm_latency_milliseconds, "
                "aisix_llm_first_token_latency_milliseconds, and twisted-gw's own "
                "twisted_gw_* series.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The current metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/playground/chat/completions": {
            "post": {
                "tags": ["ui"],
                "operationId": "playgroundChatCompletions",
                "summary": "The UI's playground: a chat completion through the proxy",
                "description": (
                    "Runs exactly as `POST /v1/chat/completions` on the proxy listener: "
                    "the proxy API key's auth and allowed models, rate limits (and their "
                    "`x-ratelimit-*` headers), hooks, metrics and the access log apply, and "
                    "a client that goes away mid-stream cancels the upstream request. "
                    "Answers and errors are the proxy's, in OpenAI's shape. The admin key "
                    "is not needed here and is not accepted as a proxy key."
                ),
                "security": [{"proxyKey": []}],
                "requestBody": {
                    "required": True,
                    "content": _json_content(_ref("ChatCompletionRequest")),
                },
                "responses": {
                    "200": {
                        "description": (
                            "The completion (JSON), or with `stream: true` an event stream: "
                            "`data: <chunk>` events, then `data: [DONE]` after a clean end."
                        ),
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **{
                        status: {
                            "description": description,
                            "content": _json_content(_ref("ProxyError")),
                        }
                        for status, description in (
                            ("400", "Body not JSON, a field missing, or model not found."),
                            ("401", "No proxy API key, or an unknown one."),
                            ("403", "The model is not in the key's `allowed_models`."),
                            ("429", "A rate or concurrency limit of the key or model."),
                            ("502", "The upstream failed before its first chunk."),
                            ("504", "The upstream did not answer within the model's timeout."),
                        )
                    },
                },
            }
        },
        "/ui": {
            "get": {
                "tags": ["ui"],
                "operationId": "redirectUi",
                "summary": "Redirect to the admin UI",
                "security": [],
                "responses": {
                    "303": {
                        "description": "See /ui/.",
                        "headers": {
                            "Location": {"schema": {"type": "string", "const": "/ui/"}},
                        },
                    }
                },
            }
        },
        "/ui/": {
            "get": {
                "tags": ["ui"],
                "operationId": "getUiIndex",
                "summary": "The admin UI",
                "security": [],
                "responses": {"200": ui_index},
            }
        },
        "/ui/{path}": {
            "get": {
                "tags": ["ui"],
                "operationId": "getUiPath",
                "summary": "An admin UI asset, or the UI's index for any other path",
                "description": (
                    "A real file of the UI (e.g. `/ui/app.js`) is served as itself; every "
                    "other path under `/ui/`, at any depth, gets the single-page index so "
                    "deep links load the app."
                ),
                "security": [],
                "parameters": [
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "description": "Anything under /ui/, `/` included.",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The asset, or the single-page index (text/html).",
                        "content": {
                            "text/html": {"schema": {"type": "string"}},
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
    }


def _build_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    paths.update(_entity_paths("Model", "models", "model", "models"))
    paths.update(_entity_paths("ApiKey", "apikeys", "API key", "API keys"))
    paths.update(_public_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "twisted-gw Admin API",
            "version": __version__,
            "summary": "Manage the models and API keys of the gateway (AISIX-compatible).",
            "description": (
                "Served on the admin listener (default `127.0.0.1:3001`). Entities live in "
                "etcd or the embedded store at `<prefix>/models/<id>` and "
                "`<prefix>/apikeys/<id>`; the proxy applies every change without restart.\n\n"
                "Auth: when an `Authorization` header is present it alone decides (a "
                "case-insensitive `Bearer ` prefix is stripped, else the whole value is the "
                "key); `x-api-key` is read only when `Authorization` is absent. With no "
                "admin key configured, every call is 401 `Missing API key`.\n\n"
                "Unknown paths under `/aisix/admin/` answer 404 with an empty body, without "
                "auth; a wrong method on a known path answers 405 after auth."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "models", "description": "Models clients can call through the proxy."},
            {"name": "apikeys", "description": "Client keys of the proxy."},
            {"name": "docs", "description": "This reference (no auth)."},
            {
                "name": "ui",
                "description": (
                    "The admin UI (no auth; it asks for the admin key) and its playground."
                ),
            },
        ],
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "`Authorization: Bearer <admin key>` (the bare key is accepted too)."
                    ),
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "Read only when there is no `Authorization` header.",
                },
                "proxyKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "A proxy API key (an entry of `/aisix/admin/apikeys`), as on the "
                        "proxy listener: only the playground takes it."
                    ),
                },
            },
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The Admin API's OpenAPI 3.1.0 document (CONTRACT 3), built once.

    The same dict is returned on every call: treat it as read-only."""
    return _build_document()


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
