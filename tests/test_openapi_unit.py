"""CONTRACT 3 [beyond]: the Admin API's OpenAPI 3.1 document and its HTML reference page."""

import copy
import json
import re
import typing
from html.parser import HTMLParser
from urllib.parse import unquote

import pytest
from jsonschema import Draft202012Validator

from twisted_gw.admin.openapi import catalog_document, fill, openapi_document, openapi_html
from twisted_gw.config.entities import (
    MAX_RATE_LIMIT,
    MAX_TIMEOUT_MS,
    MODEL_SCHEMA,
    NEXT_MODEL_SCHEMA,
    PROVIDER_SCHEMA,
    SchemaError,
    parse_apikey,
    parse_model,
)
from twisted_gw.providers import catalog
from twisted_gw.providers.interfaces import CHAT, EMBEDDINGS
from twisted_gw.ratelimit import kinds

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

DOCUMENTED = {
    ("GET", "/aisix/admin/models"),
    ("POST", "/aisix/admin/models"),
    ("GET", "/aisix/admin/models/{id}"),
    ("PUT", "/aisix/admin/models/{id}"),
    ("DELETE", "/aisix/admin/models/{id}"),
    ("GET", "/aisix/admin/apikeys"),
    ("POST", "/aisix/admin/apikeys"),
    ("GET", "/aisix/admin/apikeys/{id}"),
    ("PUT", "/aisix/admin/apikeys/{id}"),
    ("DELETE", "/aisix/admin/apikeys/{id}"),
    ("GET", "/aisix/admin/providers"),
    ("POST", "/aisix/admin/providers"),
    ("GET", "/aisix/admin/providers/{id}"),
    ("PUT", "/aisix/admin/providers/{id}"),
    ("DELETE", "/aisix/admin/providers/{id}"),
    ("GET", "/aisix/admin/spend"),
    ("GET", "/openapi"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/ui/catalog.json"),
    ("GET", "/ui/{path}"),
    ("POST", "/playground/chat/completions"),
    # answered by the site before any route (CONTRACT 5.2), on both listeners
    ("GET", "/healthz"),
    ("GET", "/readyz"),
}

CONTRACT_MODEL = {
    "name": "my-gpt",
    "model": "openai/gpt-4.1-mini",
    "provider_config": {"api_key": "sk-...", "api_base": "https://..."},
    "timeout": 30000,
    "rate_limit": {"rpm": 100, "tpm": 10000, "concurrency": 10},
}
CONTRACT_APIKEY = {"key": "sk-...", "allowed_models": ["my-gpt"], "rate_limit": {"rpm": 1}}


@pytest.fixture(scope="module")
def doc():
    return openapi_document()


@pytest.fixture(scope="module")
def page(doc):
    return openapi_html(doc).decode("utf-8")


def operations(doc):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def component(doc, name):
    """A validator for one component schema, its $refs resolved inside the document."""
    root = {"$ref": "#/components/schemas/" + name, "components": doc["components"]}
    return Draft202012Validator(root)


def resolve(doc, ref):
    assert ref.startswith("#/"), ref
    target = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(target, dict) and part in target, ref
        target = target[part]
    return target


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


# -- the document -------------------------------------------------------------------------


def test_document_is_openapi_3_1_with_info_and_paths(doc):
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"]
    assert doc["info"]["version"]
    assert doc["paths"]
    json.dumps(doc)  # served as JSON as is


def test_document_passes_the_openapi_3_1_validator(doc):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)


def test_document_is_built_once(doc):
    assert openapi_document() is doc


# -- the document as data, its table parts filled in ----------------------------------------


def test_document_is_the_data_file_with_every_table_part_filled_in(doc):
    text = json.dumps(doc)
    assert "$filled" not in text
    from twisted_gw import __version__

    assert doc["info"]["version"] == __version__


def test_a_placeholder_nothing_fills_fails_the_load():
    with pytest.raises(ValueError, match=r"nothing fills \$filled nope"):
        fill({"a": ["$filled nope"]}, {"yes": 1})
    with pytest.raises(ValueError, match="nothing fills"):
        fill({"$filled nope": None}, {})
    used = set()
    filled = fill(
        {"x": 1, "$filled keys": None, "y": "$filled v"}, {"keys": {"k": 2}, "v": 3}, used
    )
    assert list(filled.items()) == [("x", 1), ("k", 2), ("y", 3)]  # spliced in place
    assert used == {"keys", "v"}


def test_rate_limit_kinds_and_bounds_are_the_tables(doc):
    schemas = doc["components"]["schemas"]
    properties = schemas["RateLimit"]["properties"]
    assert list(properties) == list(kinds.NAMES)
    for kind in kinds.KINDS:
        assert properties[kind.name] == {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_RATE_LIMIT,
            "description": kind.help,
        }
    assert schemas["Model"]["properties"]["timeout"]["maximum"] == MAX_TIMEOUT_MS


def test_provider_names_and_config_shapes_are_the_catalog_s(doc):
    schemas = doc["components"]["schemas"]
    model = schemas["Model"]["properties"]
    assert model["model"]["pattern"] == MODEL_SCHEMA["properties"]["model"]["pattern"]
    for name in catalog.NAMES:
        assert re.match(model["model"]["pattern"], f"{name}/x")
    shapes = catalog.shapes()
    assert model["provider_config"]["oneOf"] == [
        {"$ref": f"#/components/schemas/{shape.component}"} for shape, _ in shapes
    ]
    for shape, families in shapes:
        documented = {k: v for k, v in schemas[shape.component].items() if k != "description"}
        for field in documented.get("properties", {}).values():
            field.pop("description")
        assert documented == shape.schema()
        for family in families:
            assert f"`{family.name}`" in schemas[shape.component]["description"]


def inline(doc, node):
    """``node`` with every schema $ref inlined and the texts for readers dropped."""
    if isinstance(node, dict):
        if "$ref" in node:
            return inline(doc, resolve(doc, node["$ref"]))
        return {k: inline(doc, v) for k, v in node.items() if k not in ("description", "examples")}
    if isinstance(node, list):
        return [inline(doc, v) for v in node]
    return node


def test_documented_model_schema_is_the_one_every_write_is_validated_with(doc):
    documented = inline(doc, doc["components"]["schemas"]["Model"])
    documented["properties"]["provider_config"].pop("oneOf")  # the if/then/else decides
    documented["properties"]["targets"]["items"]["properties"]["provider_config"].pop("oneOf")
    assert documented == MODEL_SCHEMA
    provider_model = inline(doc, doc["components"]["schemas"]["ProviderModel"])
    assert provider_model == NEXT_MODEL_SCHEMA
    assert inline(doc, doc["components"]["schemas"]["Provider"]) == PROVIDER_SCHEMA
    assert json.dumps(documented) == json.dumps(MODEL_SCHEMA)  # key order too


def test_served_catalog_is_what_its_path_documents(doc):
    op = doc["paths"]["/ui/catalog.json"]["get"]
    assert op["security"] == []
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(catalog_document())
    items = schema["properties"]
    assert items["providers"]["items"]["properties"]["name"]["enum"] == list(catalog.NAMES)
    assert items["rate_limits"]["items"]["properties"]["name"]["enum"] == list(kinds.NAMES)
    counts = items["rate_limits"]["items"]["properties"]["counts"]["enum"]
    assert counts == list(typing.get_args(kinds.Counts))
    endpoints = items["providers"]["items"]["properties"]["endpoints"]["items"]["enum"]
    assert set(endpoints) == {CHAT, EMBEDDINGS}
    bounds = items["bounds"]["properties"]
    assert (bounds["timeout_ms"]["const"], bounds["rate_limit"]["const"]) == (
        MAX_TIMEOUT_MS,
        MAX_RATE_LIMIT,
    )
    # the provider entity's types (CONTRACT-NEXT 1.1): the Provider schema's enum, in its
    # order, each with the settings its config takes (the same schema entities validate)
    from twisted_gw.providers import types

    served = catalog_document()["provider_types"]
    assert [t["name"] for t in served] == PROVIDER_SCHEMA["properties"]["type"]["enum"]
    for row, ptype in zip(served, types.TYPES, strict=True):
        assert row["default_base"] == ptype.default_base
        assert row["embeddings"] is ptype.embeddings
        config = ptype.config
        assert list(row["config"]) == list(config.get("properties", {}))
        required = [k for k, v in row["config"].items() if v["required"]]
        assert required == config.get("required", [])
    openai = next(t for t in served if t["name"] == "openai")["config"]
    assert openai == {
        "api_key": {"required": True, "secret": True},
        "api_base": {"required": False, "secret": False},
    }
    assert next(t for t in served if t["name"] == "mock")["config"] == {}


def test_documented_operations_are_exactly_the_admin_listener_routes(doc):
    documented = {(method.upper(), path) for path, method, _ in operations(doc)}
    assert documented == DOCUMENTED


def test_metrics_and_the_playground_are_documented(doc):
    assert "/metrics" in doc["paths"]
    playground = doc["paths"]["/playground/chat/completions"]["post"]
    assert playground["security"] == [{"proxyKey": []}]
    for status in ("400", "401", "403", "429", "502", "504"):
        assert response_schema(doc, playground, status) == {
            "$ref": "#/components/schemas/ProxyError"
        }
    error = {"message": "Invalid API key", "type": "invalid_request_error", "param": None}
    assert component(doc, "ProxyError").is_valid({"error": {**error, "code": None}})
    assert not component(doc, "ProxyError").is_valid({"error_msg": "Invalid API key"})
    assert "text/event-stream" in playground["responses"]["200"]["content"]


def test_the_spend_report_is_documented_with_its_parameters_and_errors(doc):
    spend = doc["paths"]["/aisix/admin/spend"]["get"]
    assert [p["name"] for p in spend["parameters"]] == ["group_by", "from", "to"]
    assert {"200", "400", "401", "404", "503"} <= set(spend["responses"])
    assert "may be missing" in spend["description"]  # rows not yet flushed
    report = component(doc, "Spend")
    example = doc["components"]["schemas"]["Spend"]["examples"][0]
    assert report.is_valid(example)
    from twisted_gw.ledger.report import SpendQuery, spend_document

    served = spend_document(SpendQuery("model", 0.0, 60.0), [(None, 2, 3, 4, None)])
    assert report.is_valid(served)


def test_every_operation_has_responses_and_a_unique_operation_id(doc):
    ids = []
    for path, method, op in operations(doc):
        assert op.get("responses"), (method, path)
        assert op.get("summary"), (method, path)
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids))


def test_every_ref_resolves_within_the_document(doc):
    found = list(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)


def test_path_parameters_are_declared(doc):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            params = item.get("parameters", []) + item[method].get("parameters", [])
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == set(re.findall(r"{([^}]+)}", path)), (method, path)


def test_admin_operations_need_the_admin_key_and_public_ones_do_not(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"]["in"] == "header"
    assert schemes["apiKeyHeader"]["name"] == "x-api-key"
    assert doc["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    for path, method, op in operations(doc):
        if path.startswith("/aisix/admin/"):
            assert "security" not in op, (method, path)
            assert "401" in op["responses"], (method, path)
        elif path.startswith("/playground/"):  # the proxy's key, not the admin's
            assert op["security"] == [{"proxyKey": []}], (method, path)
            assert schemes["proxyKey"] == {**schemes["proxyKey"], "type": "http"}
            assert "401" in op["responses"], (method, path)
        else:
            assert op["security"] == [], (method, path)


def response_schema(doc, op, status):
    response = op["responses"][status]
    if "$ref" in response:
        response = resolve(doc, response["$ref"])
    return response["content"]["application/json"]["schema"]


MODEL_WIRES = ("Model", "ProviderModel")


@pytest.mark.parametrize(("segment", "entity"), [("models", "Model"), ("apikeys", "ApiKey")])
def test_status_codes_and_body_shapes_follow_the_contract(doc, segment, entity):
    collection = doc["paths"][f"/aisix/admin/{segment}"]
    item = doc["paths"][f"/aisix/admin/{segment}/{{id}}"]
    error = {"$ref": "#/components/schemas/Error"}

    assert set(collection["get"]["responses"]) == {"200", "401", "500"}
    assert set(collection["post"]["responses"]) == {"201", "400", "401", "500"}
    assert set(item["get"]["responses"]) == {"200", "401", "404", "500"}
    assert set(item["put"]["responses"]) == {"200", "201", "400", "401", "500"}
    assert set(item["delete"]["responses"]) == {"200", "401", "404", "500"}

    for op, status in [
        (collection["post"], "400"),
        (collection["get"], "401"),
        (item["get"], "404"),
        (item["delete"], "500"),
    ]:
        assert response_schema(doc, op, status) == error
    not_allowed = doc["components"]["responses"]["MethodNotAllowed"]
    assert not_allowed["content"]["application/json"]["schema"] == error

    def valid(op, status, body):
        schema = response_schema(doc, op, status)
        name = schema["$ref"].rsplit("/", 1)[1]
        return component(doc, name).is_valid(body)

    value = CONTRACT_MODEL if entity == "Model" else CONTRACT_APIKEY
    entry = {"key": f"/{segment}/1", "value": value, "created_index": 3, "modified_index": 5}
    assert valid(collection["get"], "200", {"total": 1, "list": [entry]})
    assert not valid(collection["get"], "200", {"list": [entry]})
    assert valid(item["get"], "200", entry)
    written = {"key": f"/{segment}/2f1c0c64-6ae0-4d0b-9d2a-0a1a4b1f3e4d", "value": value}
    assert valid(collection["post"], "201", written)
    assert valid(item["put"], "200", written) and valid(item["put"], "201", written)
    assert valid(item["delete"], "200", {"deleted": 1, "key": f"/{segment}/1"})
    assert not valid(item["delete"], "200", {"deleted": 2, "key": f"/{segment}/1"})
    assert valid(item["get"], "404", {"error_msg": "Model with ID 1 not found"})
    body = collection["post"]["requestBody"]["content"]["application/json"]["schema"]
    if entity == "Model":  # CONTRACT-NEXT 1.5: either wire's document
        assert body == {"oneOf": [{"$ref": f"#/components/schemas/{e}"} for e in MODEL_WIRES]}
    else:
        assert body == {"$ref": f"#/components/schemas/{entity}"}


def test_ui_redirect_is_a_303_to_ui_slash(doc):
    for path in ("/", "/ui"):
        response = doc["paths"][path]["get"]["responses"]["303"]
        assert response["headers"]["Location"]["schema"]["const"] == "/ui/"
    assert "text/html" in doc["paths"]["/openapi"]["get"]["responses"]["200"]["content"]
    assert "text/html" in doc["paths"]["/ui/{path}"]["get"]["responses"]["200"]["content"]


# -- the entity schemas (CONTRACT 2) ------------------------------------------------------

VALID_MODELS = [
    CONTRACT_MODEL,
    {"name": "echo", "model": "mock/echo", "provider_config": {}},
    {"name": "n", "model": "openai/org/sub/model", "provider_config": {"api_key": "k"}},
    {"name": "c", "model": "anthropic/claude", "provider_config": {"api_key": "k"}, "timeout": 0},
    {"name": "d", "model": "deepseek/chat", "provider_config": {"api_key": "k"}, "rate_limit": {}},
    {"name": "g", "model": "gemini/flash", "provider_config": {"api_key": "k"}},
    {
        "name": "r",
        "model": "openai/x",
        "provider_config": {"api_key": "k"},
        "rate_limit": {"rpm": 1, "rpd": 2, "tpm": 3, "tpd": 4, "concurrency": 5, "other": 9},
    },
]
INVALID_MODELS = [
    {**CONTRACT_MODEL, "extra": 1},
    {"name": "echo", "model": "mock/echo", "provider_config": {"api_key": "k"}},
    {"name": "n", "model": "openai/x", "provider_config": {}},
    {"name": "n", "model": "openai/x", "provider_config": {"api_key": "k", "org": "o"}},
    {"name": "n", "model": "azure/x", "provider_config": {"api_key": "k"}},
    {"name": "n", "model": "openai", "provider_config": {"api_key": "k"}},
    {"name": "n", "model": "openai/x", "provider_config": {"api_key": 5}},
    {"name": "n", "model": "openai/x", "provider_config": {"api_key": "k"}, "timeout": -1},
    {"name": "n", "model": "openai/x", "provider_config": {"api_key": "k"}, "timeout": 1.5},
    {
        "name": "n",
        "model": "openai/x",
        "provider_config": {"api_key": "k"},
        "rate_limit": {"rpm": -1},
    },
    {"model": "openai/x", "provider_config": {"api_key": "k"}},
    {"name": "n", "provider_config": {"api_key": "k"}},
    {"name": "n", "model": "openai/x"},
    {"name": "", "model": "openai/x", "provider_config": {"api_key": "k"}},
    {"name": 5, "model": "openai/x", "provider_config": {"api_key": "k"}},
    [],
]
VALID_APIKEYS = [
    CONTRACT_APIKEY,
    {"key": "sk-1", "allowed_models": []},
    {"key": "sk-1", "allowed_models": ["a", "b"], "rate_limit": {"tpd": 0, "other": 1}},
]
INVALID_APIKEYS = [
    {**CONTRACT_APIKEY, "extra": 1},
    {"key": "sk-1"},
    {"allowed_models": []},
    {"key": "sk-1", "allowed_models": "my-gpt"},
    {"key": "sk-1", "allowed_models": [1]},
    {"key": "", "allowed_models": []},
    {"key": "sk-1", "allowed_models": [], "rate_limit": {"concurrency": -1}},
]


@pytest.mark.parametrize("value", VALID_MODELS)
def test_model_schema_accepts_valid_models(doc, value):
    component(doc, "Model").validate(value)


@pytest.mark.parametrize("value", INVALID_MODELS)
def test_model_schema_rejects_invalid_models(doc, value):
    assert not component(doc, "Model").is_valid(value)


@pytest.mark.parametrize("value", VALID_APIKEYS)
def test_apikey_schema_accepts_valid_keys(doc, value):
    component(doc, "ApiKey").validate(value)


@pytest.mark.parametrize("value", INVALID_APIKEYS)
def test_apikey_schema_rejects_invalid_keys(doc, value):
    assert not component(doc, "ApiKey").is_valid(value)


def test_component_schemas_judge_like_the_store_does(doc):
    """The documented schemas and the validation every write goes through agree."""

    def accepted(parse, value):
        try:
            parse("id", value)
        except SchemaError:
            return False
        return True

    for name, parse, cases in [
        ("Model", parse_model, VALID_MODELS + INVALID_MODELS),
        ("ApiKey", parse_apikey, VALID_APIKEYS + INVALID_APIKEYS),
    ]:
        validator = component(doc, name)
        for value in cases:
            assert validator.is_valid(value) == accepted(parse, value), (name, value)


def test_schema_examples_are_valid(doc):
    for name in ("Model", "ApiKey"):
        schema = doc["components"]["schemas"][name]
        assert schema["examples"]
        for example in schema["examples"]:
            component(doc, name).validate(example)


# -- the HTML page ------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Checker(HTMLParser):
    """Checks that every non-void element closes in order, and collects URL attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.urls = []
        self.ids = []
        self.errors = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "data", "poster"):
                self.urls.append(value or "")
            if name == "id":
                self.ids.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check(page):
    checker = _Checker()
    checker.feed(page)
    checker.close()
    return checker


def test_page_is_a_well_formed_html_document(page):
    assert page.startswith("<!DOCTYPE html>")
    checker = check(page)
    assert checker.errors == []
    assert checker.stack == []
    assert len(checker.ids) == len(set(checker.ids))


def test_page_documents_every_path_and_method(doc, page):
    for method, path in DOCUMENTED:
        assert f'>{method}</span><span class="path">{path}</span>' in page, (method, path)
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "bearerAuth" in page and "x-api-key" in page
    assert doc["info"]["title"] in page and doc["info"]["version"] in page


def test_page_loads_nothing_external(page):
    checker = check(page)
    assert checker.urls
    for url in checker.urls:
        assert not re.match(r"^\s*(https?:)?//", url, re.IGNORECASE), url
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page


def test_internal_links_point_at_anchors_on_the_page(page):
    checker = check(page)
    ids = set(checker.ids)
    for url in checker.urls:
        if url.startswith("#"):
            assert unquote(url[1:]) in ids, url


def test_page_escapes_everything_from_the_document(doc):
    hostile = copy.deepcopy(doc)
    hostile["info"]["title"] = '<script>alert("t")</script>'
    hostile["info"]["description"] = "`<img src=x onerror=alert(1)>` and <b>"
    hostile["paths"]["/x/<y>"] = {
        "get": {"summary": '"><svg onload=alert(1)>', "responses": {"200": {"description": "<i>"}}}
    }
    hostile["components"]["schemas"]["<Evil>"] = {"type": "object", "description": "<u>"}
    page = openapi_html(hostile).decode()
    for raw in ("<script>", "<img", "<svg", "<b>", "<i>", "<u>", "<Evil>", "<y>"):
        assert raw not in page
    assert "&lt;script&gt;" in page
    assert check(page).errors == []


def test_page_of_the_served_document_is_rendered_once(doc):
    assert openapi_html(doc) is openapi_html(openapi_document())
