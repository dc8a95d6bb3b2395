"""CONTRACT 3, black-box over HTTP: the admin UI's routes (``/ui`` and its
deep links, real assets with their content types and cache headers), the
``/openapi`` page, and ``POST /playground/chat/completions``, which must be the
proxy's chat endpoint exactly: proxy key auth, errors in OpenAI's shape, rate
limits, streaming relay and cancellation of the upstream.

The UI's own files are checked statically too: every module they import is
shipped, nothing is loaded from another origin."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.conftest import secret, start_gateway
from tests.support.gateway import REPO_ROOT, http, treq_json, treq_stream
from tests.support.mock_upstream import chat_chunk, sse_event

UI_DIR = REPO_ROOT / "twisted_gw" / "admin" / "ui"
PLAYGROUND = "/playground/chat/completions"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
DEEP_LINKS = [
    "/ui/models",
    "/ui/models/create",
    "/ui/models/0b6c/edit",
    "/ui/providers",
    "/ui/providers/create",
    "/ui/providers/0b6c/edit",
    "/ui/apikeys",
    "/ui/apikeys/create",
    "/ui/playground",
    "/ui/spend",
    "/ui/no/such/view",
    "/ui/missing.js",
    "/ui/models?x=1",
]


def ui_files() -> list[Path]:
    return sorted(p for p in UI_DIR.rglob("*") if p.is_file())


def get(gw, path: str, headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    return http("GET", gw.admin + path, headers=headers)


# -- /ui routing ----------------------------------------------------------------------


def test_ui_without_slash_is_a_303_to_ui_slash(gateway):
    status, headers, body = get(gateway, "/ui")
    assert (status, headers["location"], body) == (303, "/ui/", b"")


@pytest.mark.parametrize("path", ["/ui/", *DEEP_LINKS])
def test_ui_index_and_every_path_that_is_not_a_file_get_the_index(gateway, path):
    status, headers, body = get(gateway, path)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"  # a new release is picked up at once
    assert body == (UI_DIR / "index.html").read_bytes()
    assert headers["etag"] == get(gateway, "/ui/")[1]["etag"]  # one document, one tag


@pytest.mark.parametrize("name", [p.name for p in ui_files() if p.name != "index.html"])
def test_ui_assets_are_served_as_themselves_with_type_and_cache_headers(gateway, name):
    status, headers, body = get(gateway, f"/ui/{name}")
    assert status == 200
    assert body == (UI_DIR / name).read_bytes()
    expected = CONTENT_TYPES[Path(name).suffix]
    assert headers["content-type"].split(";")[0] == expected
    assert headers["x-content-type-options"] == "nosniff"
    # revalidated on every use, so an upgrade never mixes old and new modules
    assert headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["etag"])


@pytest.mark.parametrize("path", ["/ui/app.js", "/ui/app.css", "/ui/", "/ui/models"])
def test_ui_files_revalidate_with_a_304_while_unchanged(gateway, path):
    _, headers, _ = get(gateway, path)
    status, again, body = get(gateway, path, {"If-None-Match": headers["etag"]})
    assert (status, body, again["etag"]) == (304, b"", headers["etag"])
    status, _, body = get(gateway, path, {"If-None-Match": '"0123"'})
    assert status == 200 and body


def test_ui_needs_no_auth_and_admin_key_changes_nothing(gateway):
    plain = get(gateway, "/ui/models")
    keyed = get(gateway, "/ui/models", gateway.admin_headers())
    assert plain[0] == keyed[0] == 200 and plain[2] == keyed[2]


def test_ui_catalog_is_the_gateway_s_tables_as_json_without_auth(gateway):
    from twisted_gw.admin.openapi import catalog_document

    status, headers, body = get(gateway, "/ui/catalog.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-cache"  # an upgrade's new tables at once
    assert json.loads(body) == catalog_document()
    assert get(gateway, "/ui/catalog.json", gateway.admin_headers())[2] == body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_ui_is_read_only(gateway, method):
    status, _, body = http(method, gateway.admin + "/ui/models", headers=gateway.admin_headers())
    assert status == 405
    assert b"<html" not in body


# -- the UI's files, statically ------------------------------------------------------


def test_ui_files_are_all_shipped_as_package_data():
    """setup.cfg's package_data globs must cover every UI file (pip install . serves them)."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    globs = config["options.package_data"]["twisted_gw.admin"].split()
    for path in ui_files():
        relative = path.relative_to(UI_DIR.parent).as_posix()
        matched = [g for g in globs if fnmatch.fnmatch(relative, g) and "/" not in relative[3:]]
        assert matched, f"{relative} is not package data"


def test_ui_module_imports_all_resolve_to_shipped_files():
    imports = re.compile(
        r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+["']([^"']+)["']""", re.MULTILINE
    )
    scripts = [p for p in ui_files() if p.suffix == ".js"]
    assert len(scripts) >= 5  # the app, split by view
    for script in scripts:
        for target in imports.findall(script.read_text()):
            assert target.startswith("./") and target.endswith(".js"), (script.name, target)
            assert (UI_DIR / target[2:]).is_file(), (script.name, target)


def test_ui_loads_nothing_from_another_origin():
    url = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
    for path in ui_files():
        text = path.read_text()
        assert not url.search(text), path.name
        if path.suffix == ".css":
            assert "@import" not in text and "url(" not in text, path.name
        assert not re.search(r"""(?:from|import\()\s*["'](?:https?:)?//""", text), path.name
        assert not re.search(r"fetch\(\s*[\"'`](?:https?:)?//", text), path.name
    index = (UI_DIR / "index.html").read_text()
    assert "default-src 'self'" in index and "form-action 'none'" in index


def test_ui_keeps_the_admin_key_out_of_urls_and_logs():
    for path in ui_files():
        if path.suffix != ".js":
            continue
        text = path.read_text()
        assert "localStorage" not in text, path.name
        assert not re.search(r"console\.(log|info|debug|warn|error)", text), path.name
    session = (UI_DIR / "session.js").read_text()
    assert "sessionStorage" in session


def test_ui_repeats_no_table_and_reads_the_served_catalog():
    """Provider families, their base URLs and example models, the provider
    entity's types and their base URLs, the rate-limit kinds and the bounds are
    the gateway's tables, fetched from /ui/catalog.json; no UI file spells them
    out again (comments aside)."""
    from twisted_gw.config.entities import (
        MAX_RATE_LIMIT,
        MAX_TIMEOUT_MS,
        MAX_WEIGHT,
        MODEL_SCHEMA,
        RETRY_REASONS,
        STRATEGIES,
    )
    from twisted_gw.providers.catalog import FAMILIES
    from twisted_gw.providers.types import TYPES
    from twisted_gw.ratelimit.kinds import KINDS

    repeated = [f'"{f.name}"' for f in FAMILIES] + [f'"{k.name}"' for k in KINDS]
    repeated += [f'"{t.name}"' for t in TYPES] + [t.default_base for t in TYPES if t.default_base]
    repeated += [f.default_base for f in FAMILIES if f.default_base]
    repeated += [f'"{f.example_model}"' for f in FAMILIES] + [k.label for k in KINDS]
    repeated += [str(MAX_RATE_LIMIT), str(MAX_TIMEOUT_MS), str(MAX_WEIGHT)]
    # routing's tables (CONTRACT 5.1) are read from the gateway too ("timeout"
    # is a reason and a field of the document, which the form does name)
    reasons = [r for r in RETRY_REASONS if r not in MODEL_SCHEMA["properties"]]
    repeated += [f'"{name}"' for name in (*STRATEGIES, *reasons)]
    for path in ui_files():
        lines = path.read_text().splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
        assert [r for r in repeated if r in code] == [], path.name
    schema = (UI_DIR / "schema.js").read_text()
    assert 'CATALOG_URL = "/ui/catalog.json"' in schema and "await loadCatalog()" in schema
    assert "CATALOG.provider_types" in schema  # the provider form's types and settings


def test_ui_finds_routing_s_tables_where_it_reads_them():
    """The model form reads routing's strategies, retry reasons, default
    retry_on and bounds (CONTRACT 5.1) from the catalog, and only its help
    texts from /openapi.json (schema.js)."""
    from twisted_gw.admin.openapi import catalog_document, openapi_document
    from twisted_gw.config import entities

    routing = catalog_document()["routing"]
    assert routing == {
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
    }
    schema = (UI_DIR / "schema.js").read_text()
    for read in (
        "given.strategies",
        "given.retry_reasons",
        "given.default_retry_on",
        "given.bounds",
    ):
        assert read in schema, read
    schemas = openapi_document()["components"]["schemas"]
    for name, field in (("Routing", "retry_on"), ("Target", "weight"), ("Model", "targets")):
        assert schemas[name]["properties"][field]["description"]


def test_openapi_page_is_readable_offline_and_documents_the_playground(gateway):
    status, headers, body = get(gateway, "/openapi")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    page = body.decode()
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "default-src 'none'" in page
    assert f'<span class="path">{PLAYGROUND}</span>' in page
    assert "proxyKey" in page and "/aisix/admin/models" in page
    status, _, document = get(gateway, "/openapi.json")
    assert status == 200
    assert "post" in json.loads(document)["paths"][PLAYGROUND]


# -- the playground --------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gateway = start_gateway(tmp_path_factory.mktemp("ui-routes"))
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="module")
def models(gw, upstream):
    """Models on the module's mock upstream and on the mock provider."""
    names = {"up": "pg-upstream", "demo": "pg-demo", "other": "pg-other"}

    async def build():
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        await gw.add_model(names["up"], "openai/pg-model", pc)
        await gw.add_model(names["demo"], "mock/demo", {})
        await gw.add_model(names["other"], "mock/other", {})

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    return names


@pytest.fixture(scope="module")
def key(gw, models):
    return pytest_twisted.blockon(defer.ensureDeferred(gw.add_key([models["up"], models["demo"]])))


def chat(model: str, stream: bool = False, content: str = "hi") -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def playground(gw, headers: dict, doc=None, *, body=None):
    status, response_headers, payload = await treq_json(
        "POST", gw.admin + PLAYGROUND, headers=headers, json_body=doc, body=body
    )
    return status, response_headers, payload


def openai_error(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest_twisted.ensureDeferred
async def test_playground_without_a_key_is_the_proxy_s_401(gw, models):
    status, headers, body = await playground(gw, {}, chat(models["demo"]))
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == openai_error(
        "Missing API key in request", "invalid_request_error", None
    )


@pytest_twisted.ensureDeferred
async def test_playground_takes_proxy_keys_not_the_admin_key(gw, models):
    status, _, body = await playground(gw, bearer(gw.admin_key), chat(models["demo"]))
    assert (status, json.loads(body)) == (
        401,
        openai_error("Invalid API key", "invalid_request_error", None),
    )


@pytest_twisted.ensureDeferred
async def test_playground_answers_like_the_proxy(gw, models, key):
    status, headers, body = await playground(gw, bearer(key), chat(models["demo"], content="echo"))
    assert status == 200
    assert headers["x-request-id"]
    answer = json.loads(body)
    assert answer["object"] == "chat.completion"
    assert "echo" in answer["choices"][0]["message"]["content"]
    via_proxy = await gw.chat(key, chat(models["demo"], content="echo"))
    assert json.loads(via_proxy[2])["choices"] == answer["choices"]


@pytest.mark.parametrize(
    ("doc", "status", "error"),
    [
        (
            b"{not json",
            400,
            ("Failed to parse JSON", "invalid_request_error", "invalid_json"),
        ),
        (
            {"model": "pg-nope", "messages": [{"role": "user", "content": "x"}]},
            400,
            ("Model 'pg-nope' not found", "invalid_request_error", "model_not_found"),
        ),
        (
            chat("pg-other"),
            403,
            ("Access to model 'pg-other' is forbidden", "invalid_request_error", None),
        ),
    ],
    ids=["bad-json", "unknown-model", "forbidden-model"],
)
@pytest_twisted.ensureDeferred
async def test_playground_errors_are_the_proxy_s(gw, models, key, doc, status, error):
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    got_status, _, body = await playground(gw, bearer(key), body=raw)
    proxy_status, _, proxy_body = await gw.chat(key, None, body=raw)
    assert got_status == proxy_status == status
    message, type_, code = error
    payload = json.loads(body)["error"]
    assert payload["message"].startswith(message)
    assert payload["type"] == type_
    if code is not None:
        assert payload["code"] == code
    assert json.loads(proxy_body) == json.loads(body)


@pytest_twisted.ensureDeferred
async def test_playground_upstream_failure_is_a_502_in_the_proxy_s_shape(
    gw, models, key, fresh_upstream
):
    fresh_upstream.set_json("/v1/chat/completions", {"oops": True}, status=500)
    status, _, body = await playground(gw, bearer(key), chat(models["up"]))
    assert status == 502
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("server_error", "provider_error")


@pytest_twisted.ensureDeferred
async def test_playground_streams_each_chunk_as_it_arrives_then_done(
    gw, models, key, fresh_upstream
):
    events = [chat_chunk("", role="assistant")]
    events += [chat_chunk(word) for word in ("one ", "two ", "three")]
    events.append(chat_chunk(finish_reason="stop"))
    events.append(chat_chunk(usage={"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}))
    fresh_upstream.set_sse("/v1/chat/completions", [sse_event(e) for e in events], gap=0.15)
    result = await treq_stream(
        "POST", gw.admin + PLAYGROUND, headers=bearer(key), json_body=chat(models["up"], True)
    )
    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.headers["cache-control"] == "no-cache"
    assert result.data[-1] == "[DONE]" and result.ended == "done"
    assert result.json_chunks == events  # relayed unchanged
    # progressive: the chunks came over at least ~0.45 s, not in one piece at the end
    assert len(result.arrivals) >= 4
    assert result.arrivals[-1] - result.arrivals[0] >= 0.4
    upstream_body = fresh_upstream.requests[-1].json
    assert upstream_body["model"] == "pg-model"
    assert upstream_body["stream_options"] == {"include_usage": True}


@pytest_twisted.ensureDeferred
async def test_playground_client_gone_mid_stream_cancels_the_upstream(
    gw, models, key, fresh_upstream
):
    events = [sse_event(chat_chunk(f"w{i} ")) for i in range(50)]
    fresh_upstream.set_sse("/v1/chat/completions", events, gap=0.1, end="hang")
    gone = None

    def first_chunk(body: bytes) -> bool:
        nonlocal gone
        if b"w0" in body:
            gone = fresh_upstream.wait_for_disconnect(timeout=2)
            return True
        return False

    started = time.monotonic()
    result = await treq_stream(
        "POST",
        gw.admin + PLAYGROUND,
        headers=bearer(key),
        json_body=chat(models["up"], True),
        stop_when=first_chunk,
    )
    assert result.ended == "stopped"
    await gone
    assert fresh_upstream.requests[-1].client_gone
    assert time.monotonic() - started < 3  # long before the 5 s stream would end


@pytest_twisted.ensureDeferred
async def test_playground_applies_the_key_s_rate_limits(gw, models):
    limited = secret()
    doc = {"key": limited, "allowed_models": [models["demo"]], "rate_limit": {"rpm": 1}}
    status, body = await gw.aadmin("POST", "/aisix/admin/apikeys", doc)
    assert status == 201, body
    key_id = body["key"].rsplit("/", 1)[1]
    left = 60 - time.time() % 60
    if left < 3:  # keep both requests in one rpm window
        await task.deferLater(reactor, left + 0.05, lambda: None)
    status, headers, _ = await playground(gw, bearer(limited), chat(models["demo"]))
    assert status == 200
    assert headers["x-ratelimit-limit-requests"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    status, headers, body = await playground(gw, bearer(limited), chat(models["demo"]))
    assert status == 429
    assert int(headers["retry-after"]) >= 0
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert key_id in error["message"] and limited not in error["message"]
    # the same window is shared with the proxy listener
    status, _, _ = await gw.chat(limited, chat(models["demo"]))
    assert status == 429


@pytest_twisted.ensureDeferred
async def test_playground_requests_are_counted_in_metrics(gw, models, key):
    def count(text: str) -> float:
        wanted = {"method": "POST", "endpoint": "/v1/chat/completions", "status_code": "200"}
        for labels, value in re.findall(
            r"^aisix_request_count_total\{([^}]*)\} (\S+)$", text, re.MULTILINE
        ):
            if dict(re.findall(r'(\w+)="([^"]*)"', labels)) == wanted:
                return float(value)
        return 0.0

    _, _, before = await treq_json("GET", gw.admin + "/metrics")
    status, _, _ = await playground(gw, bearer(key), chat(models["demo"]))
    assert status == 200
    _, _, after = await treq_json("GET", gw.admin + "/metrics")
    assert count(after.decode()) == count(before.decode()) + 1
