"""CONTRACT 3: the Admin API, black-box against the real gateway process.

Auth, CRUD of models and API keys, the order and texts of validation errors,
routing (unknown paths, wrong methods), the unauthenticated pages (OpenAPI,
UI), that every route is documented in openapi.json and every documented
route is served, and that the embedded store keeps entries across restarts.

The admin API needs no upstream, so these are plain blocking tests on the
module's gateway; the few that need their own process start it themselves.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SESSION_LOGS, Gateway, secret, start_gateway
from tests.support.gateway import DEFAULT_ADMIN_KEY, GatewayProcess, free_port, http, write_config

PREFIX = "/aisix/admin"
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
UI_DIR = Path(__file__).resolve().parents[1] / "twisted_gw" / "admin" / "ui"
STORE_FILE = "twisted-gw-store.json"


# -- helpers ------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def model_doc(name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or unique("model"), "model": "mock/echo", "provider_config": {}, **extra}


def apikey_doc(key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"key": key or secret(), "allowed_models": ["some-model"], **extra}


@dataclass(frozen=True)
class Kind:
    """What differs between the two entity kinds, as the contract words it."""

    segment: str
    label: str  # in "<label> with ID <id> not found"
    unique_field: str
    duplicate: str
    make: Callable[..., dict[str, Any]]

    @property
    def collection(self) -> str:
        return f"{PREFIX}/{self.segment}"

    def item(self, id: str) -> str:
        return f"{PREFIX}/{self.segment}/{id}"


MODELS = Kind("models", "Model", "name", "Model name already exists", model_doc)
APIKEYS = Kind("apikeys", "API key", "key", "API key already exists", apikey_doc)
#: CONTRACT-NEXT 1.2 (names need not be unique: its own tests in test_provider_entity.py)
PROVIDERS = Kind(
    "providers", "Provider", "name", "", lambda: {"name": "p", "type": "mock", "config": {}}
)
KINDS = [pytest.param(MODELS, id="models"), pytest.param(APIKEYS, id="apikeys")]


def raw(
    gw: Gateway, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    """One request to the admin listener with exactly these headers."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return http(method, gw.admin + path, headers=headers or {}, body=body)


def authed(gw: Gateway, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """An authorized request with a raw (possibly broken) body; the JSON answer."""
    status, _, payload = raw(gw, method, path, gw.admin_headers(), body)
    return status, json.loads(payload)


def create(gw: Gateway, kind: Kind, doc: dict[str, Any] | None = None) -> tuple[str, dict]:
    """POST an entity; its id and the 201 body."""
    status, body = gw.admin_call("POST", kind.collection, doc or kind.make())
    assert status == 201, body
    return body["key"].rsplit("/", 1)[1], body


def listing(gw: Gateway, kind: Kind) -> dict[str, Any]:
    status, body = gw.admin_call("GET", kind.collection)
    assert status == 200, body
    return body


def entries(gw: Gateway) -> dict[str, dict]:
    """Every stored entry of both kinds, by key."""
    return {e["key"]: e for kind in (MODELS, APIKEYS) for e in listing(gw, kind)["list"]}


def schema_error(pointer: str) -> str:
    return f'JSON schema validation error: property "{pointer}" validation failed: '


# -- auth -----------------------------------------------------------------------------

CRUD_CALLS = [
    ("GET", f"{PREFIX}/models"),
    ("POST", f"{PREFIX}/models"),
    ("GET", f"{PREFIX}/models/some-id"),
    ("PUT", f"{PREFIX}/models/some-id"),
    ("DELETE", f"{PREFIX}/models/some-id"),
    ("GET", f"{PREFIX}/apikeys"),
    ("POST", f"{PREFIX}/apikeys"),
    ("GET", f"{PREFIX}/apikeys/some-id"),
    ("PUT", f"{PREFIX}/apikeys/some-id"),
    ("DELETE", f"{PREFIX}/apikeys/some-id"),
]


@pytest.mark.parametrize(("method", "path"), CRUD_CALLS)
def test_no_admin_key_is_401_missing_api_key(gateway, method, path):
    body = model_doc() if "models" in path else apikey_doc()
    status, _, payload = raw(gateway, method, path, body=None if method == "GET" else body)
    assert (status, json.loads(payload)) == (401, {"error_msg": "Missing API key"})


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "wrong-key"},
        {"x-api-key": "wrong-key"},
        {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}x"},
        {"Authorization": f"Token {DEFAULT_ADMIN_KEY}"},
    ],
    ids=["bearer", "bare", "x-api-key", "longer", "other-scheme"],
)
def test_wrong_admin_key_is_401_invalid_api_key(gateway, headers):
    status, _, payload = raw(gateway, "GET", f"{PREFIX}/models", headers)
    assert (status, json.loads(payload)) == (401, {"error_msg": "Invalid API key"})


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"},
        {"Authorization": f"bearer {DEFAULT_ADMIN_KEY}"},
        {"Authorization": f"BEARER {DEFAULT_ADMIN_KEY}"},
        {"Authorization": DEFAULT_ADMIN_KEY},
        {"x-api-key": DEFAULT_ADMIN_KEY},
        {"X-API-Key": DEFAULT_ADMIN_KEY},
    ],
    ids=["Bearer", "bearer", "BEARER", "bare", "x-api-key", "X-API-Key"],
)
def test_admin_key_is_accepted_in_every_documented_form(gateway, headers):
    status, _, payload = raw(gateway, "GET", f"{PREFIX}/models", headers)
    assert status == 200, payload
    assert "list" in json.loads(payload)


def test_authorization_header_decides_even_when_x_api_key_is_right(gateway):
    headers = {"Authorization": "Bearer wrong-key", "x-api-key": DEFAULT_ADMIN_KEY}
    status, _, payload = raw(gateway, "GET", f"{PREFIX}/models", headers)
    assert (status, json.loads(payload)) == (401, {"error_msg": "Invalid API key"})


def test_unauthorized_write_changes_nothing(gateway):
    before = listing(gateway, MODELS)
    status, _, _ = raw(gateway, "POST", MODELS.collection, {"x-api-key": "nope"}, model_doc())
    assert status == 401
    status, _, _ = raw(gateway, "PUT", MODELS.item(unique("id")), {}, model_doc())
    assert status == 401
    assert listing(gateway, MODELS) == before


def test_gateway_without_admin_keys_answers_401_missing_api_key_even_with_a_key(tmp_path):
    gw = start_gateway(tmp_path, extra={"deployment": {"admin": {"admin_key": []}}})
    try:
        for headers in (
            {"Authorization": f"Bearer {DEFAULT_ADMIN_KEY}"},
            {"x-api-key": DEFAULT_ADMIN_KEY},
            {"Authorization": ""},
            {},
        ):
            for method, path in CRUD_CALLS:
                body = None if method == "GET" else model_doc()
                status, _, payload = raw(gw, method, path, headers, body)
                assert (status, json.loads(payload)) == (
                    401,
                    {"error_msg": "Missing API key"},
                ), (method, path, headers)
    finally:
        gw.process.stop()


# -- CRUD -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_post_returns_201_with_uuid4_key(gateway, kind):
    doc = kind.make()
    status, headers, payload = raw(gateway, "POST", kind.collection, gateway.admin_headers(), doc)
    assert status == 201, payload
    assert headers["content-type"].startswith("application/json")
    body = json.loads(payload)
    assert set(body) == {"key", "value"}
    match = re.fullmatch(rf"/{kind.segment}/({UUID4})", body["key"])
    assert match, body["key"]
    assert str(uuid.UUID(match[1], version=4)) == match[1]
    assert body["value"] == doc


@pytest.mark.parametrize("kind", KINDS)
def test_post_twice_gives_two_different_ids(gateway, kind):
    first, _ = create(gateway, kind)
    second, _ = create(gateway, kind)
    assert first != second


@pytest.mark.parametrize("kind", KINDS)
def test_list_has_total_and_entries_in_key_order(gateway, kind):
    # PUT ids out of order, so the order of the list is not just creation order
    ids = [f"{prefix}-{uuid.uuid4().hex[:8]}" for prefix in ("zz", "aa", "mm")]
    for id in ids:
        status, body = gateway.admin_call("PUT", kind.item(id), kind.make())
        assert status == 201, body
    body = listing(gateway, kind)
    assert set(body) == {"total", "list"}
    assert body["total"] == len(body["list"])
    keys = [entry["key"] for entry in body["list"]]
    assert keys == sorted(keys)
    assert all(key.startswith(f"/{kind.segment}/") for key in keys)
    assert {f"/{kind.segment}/{id}" for id in ids} <= set(keys)
    for entry in body["list"]:
        assert set(entry) == {"key", "value", "created_index", "modified_index"}
        assert isinstance(entry["created_index"], int)
        assert isinstance(entry["modified_index"], int)
        assert entry["created_index"] <= entry["modified_index"]


@pytest.mark.parametrize("kind", KINDS)
def test_get_by_id_returns_the_stored_entry(gateway, kind):
    doc = kind.make()
    id, created = create(gateway, kind, doc)
    status, body = gateway.admin_call("GET", kind.item(id))
    assert status == 200, body
    assert set(body) == {"key", "value", "created_index", "modified_index"}
    assert body["key"] == created["key"] == f"/{kind.segment}/{id}"
    assert body["value"] == doc
    assert body["created_index"] == body["modified_index"]
    [listed] = [e for e in listing(gateway, kind)["list"] if e["key"] == body["key"]]
    assert listed == body


@pytest.mark.parametrize("kind", KINDS)
def test_put_new_id_is_201_and_existing_id_is_200(gateway, kind):
    id = unique("put")
    first_doc = kind.make()
    status, body = gateway.admin_call("PUT", kind.item(id), first_doc)
    assert (status, body) == (201, {"key": f"/{kind.segment}/{id}", "value": first_doc})
    _, first = gateway.admin_call("GET", kind.item(id))

    second_doc = kind.make()
    status, body = gateway.admin_call("PUT", kind.item(id), second_doc)
    assert (status, body) == (200, {"key": f"/{kind.segment}/{id}", "value": second_doc})
    _, second = gateway.admin_call("GET", kind.item(id))
    assert second["value"] == second_doc
    assert second["created_index"] == first["created_index"]
    assert second["modified_index"] > first["modified_index"]


@pytest.mark.parametrize("kind", KINDS)
def test_delete_returns_deleted_1_and_the_key_then_the_entry_is_gone(gateway, kind):
    id, _ = create(gateway, kind)
    status, body = gateway.admin_call("DELETE", kind.item(id))
    assert (status, body) == (200, {"deleted": 1, "key": f"/{kind.segment}/{id}"})
    status, body = gateway.admin_call("GET", kind.item(id))
    assert (status, body) == (404, {"error_msg": f"{kind.label} with ID {id} not found"})
    assert f"/{kind.segment}/{id}" not in {e["key"] for e in listing(gateway, kind)["list"]}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("kind", KINDS)
def test_missing_id_is_404_with_kind_specific_message(gateway, kind, method):
    id = unique("missing")
    status, body = gateway.admin_call(method, kind.item(id))
    assert (status, body) == (404, {"error_msg": f"{kind.label} with ID {id} not found"})


def test_stored_model_is_the_reserialized_entity(gateway):
    doc = model_doc(rate_limit={"rpm": 5, "burst": 9, "concurrency": 0})
    id, body = create(gateway, MODELS, doc)
    expected = model_doc(doc["name"], rate_limit={"rpm": 5, "concurrency": 0})
    assert body["value"] == expected
    assert gateway.admin_call("GET", MODELS.item(id))[1]["value"] == expected


def test_stored_model_omits_absent_optionals(gateway):
    doc = {"name": unique("bare"), "model": "openai/gpt-4o", "provider_config": {"api_key": "k"}}
    id, body = create(gateway, MODELS, doc)
    assert body["value"] == doc  # no "timeout": null, no "rate_limit": {}, no api_base
    assert gateway.admin_call("GET", MODELS.item(id))[1]["value"] == doc


def test_stored_apikey_is_the_reserialized_entity(gateway):
    doc = apikey_doc(allowed_models=[], rate_limit={"tpm": 7, "unknown": "x"})
    id, body = create(gateway, APIKEYS, doc)
    expected = {"key": doc["key"], "allowed_models": [], "rate_limit": {"tpm": 7}}
    assert body["value"] == expected
    assert gateway.admin_call("GET", APIKEYS.item(id))[1]["value"] == expected


def test_revisions_are_monotonic_across_writes(gateway):
    def indexes(kind: Kind, id: str) -> tuple[int, int]:
        status, body = gateway.admin_call("GET", kind.item(id))
        assert status == 200, body
        return body["created_index"], body["modified_index"]

    a, _ = create(gateway, MODELS)
    a_created, a_modified = indexes(MODELS, a)
    assert a_created == a_modified

    k, _ = create(gateway, APIKEYS)  # one revision for both kinds
    k_created, _ = indexes(APIKEYS, k)
    assert k_created > a_modified

    assert gateway.admin_call("PUT", MODELS.item(a), model_doc())[0] == 200
    a_created2, a_modified2 = indexes(MODELS, a)
    assert a_created2 == a_created
    assert a_modified2 > k_created

    assert gateway.admin_call("DELETE", APIKEYS.item(k))[0] == 200
    b, _ = create(gateway, MODELS)
    b_created, b_modified = indexes(MODELS, b)
    assert b_created == b_modified > a_modified2

    everything = listing(gateway, MODELS)["list"] + listing(gateway, APIKEYS)["list"]
    assert max(e["modified_index"] for e in everything) == b_modified


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{nope", b"", b'{"name": "x",}', b"[1, 2"], ids=repr)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_json_is_400_invalid_json(gateway, kind, body):
    for method, path in (("POST", kind.collection), ("PUT", kind.item(unique("bad")))):
        status, answer = authed(gateway, method, path, body)
        assert status == 400, answer
        assert set(answer) == {"error_msg"}
        assert answer["error_msg"].startswith("Invalid JSON: ")
        assert len(answer["error_msg"]) > len("Invalid JSON: ")  # the parser's text follows


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_tokens_are_400_invalid_json(gateway, token):
    # inside rate_limit an unknown key is dropped, so the token would otherwise be accepted
    name = unique("nan")
    text = (
        f'{{"name": "{name}", "model": "mock/x", "provider_config": {{}}, '
        f'"rate_limit": {{"rpm": 1, "other": {token}}}}}'
    )
    status, answer = authed(gateway, "POST", MODELS.collection, text.encode())
    assert status == 400, answer
    assert answer["error_msg"].startswith("Invalid JSON: "), answer


@pytest.mark.parametrize(
    ("kind", "doc"),
    [
        (MODELS, model_doc(timeout=1.0)),
        (MODELS, model_doc(rate_limit={"rpm": 5.0})),
        (APIKEYS, apikey_doc(rate_limit={"concurrency": 2.0})),
    ],
    ids=["model-timeout", "model-rpm", "apikey-concurrency"],
)
def test_integer_fields_are_never_stored_as_floats(gateway, kind, doc):
    status, _, payload = raw(gateway, "POST", kind.collection, gateway.admin_headers(), doc)
    if status == 400:  # rejecting 1.0 is as good as storing 1
        assert json.loads(payload)["error_msg"].startswith("JSON schema validation error: ")
        return
    assert status == 201, payload
    assert b".0" not in payload, payload


SCHEMA_CASES = [
    # kind, document, pointer, fragments of the message after "validation failed: "
    (MODELS, {"model": "mock/x", "provider_config": {}}, "/", ['"name"', "required"]),
    (MODELS, model_doc(name=1), "/name", ["1", "string"]),
    (MODELS, model_doc(colour="red"), "/", ["colour"]),
    (MODELS, model_doc(provider_config={"api_key": "k"}), "/provider_config", ["api_key"]),
    (
        MODELS,
        {"name": "n", "model": "openai/gpt-4o", "provider_config": {}},
        "/provider_config",
        ['"api_key"', "required"],
    ),
    (
        MODELS,
        {"name": "n", "model": "openai/gpt-4o", "provider_config": {"api_key": "k", "x": 1}},
        "/provider_config",
        ["x"],
    ),
    (MODELS, model_doc(timeout=-1), "/timeout", ["-1", "minimum"]),
    (MODELS, model_doc(timeout="30"), "/timeout", ['"30"', "integer"]),
    (MODELS, model_doc(rate_limit={"rpm": -1}), "/rate_limit/rpm", ["-1", "minimum"]),
    (MODELS, model_doc(model="nosuch/x"), "/model", ["nosuch/x"]),
    (MODELS, ["not", "an", "object"], "/", ["object"]),
    (APIKEYS, {"allowed_models": []}, "/", ['"key"', "required"]),
    (APIKEYS, {"key": "k"}, "/", ['"allowed_models"', "required"]),
    (APIKEYS, apikey_doc(allowed_models="m"), "/allowed_models", ['"m"', "array"]),
    (APIKEYS, apikey_doc(allowed_models=[1]), "/allowed_models/0", ["1", "string"]),
    (APIKEYS, apikey_doc(name="extra"), "/", ["name"]),
]


@pytest.mark.parametrize(
    ("kind", "doc", "pointer", "fragments"),
    SCHEMA_CASES,
    ids=[f"{case[0].segment}{case[2]}-{i}" for i, case in enumerate(SCHEMA_CASES)],
)
def test_schema_error_is_400_naming_the_property(gateway, kind, doc, pointer, fragments):
    status, body = gateway.admin_call("POST", kind.collection, doc)
    assert status == 400, body
    assert set(body) == {"error_msg"}
    message = body["error_msg"]
    assert message.startswith(schema_error(pointer)), message
    for fragment in fragments:
        assert fragment in message, message


def test_several_schema_errors_are_joined_by_newlines(gateway):
    doc = {"name": 1, "model": "mock/x", "provider_config": {}, "timeout": -1}
    status, body = gateway.admin_call("POST", MODELS.collection, doc)
    assert status == 400, body
    lines = body["error_msg"].removeprefix("JSON schema validation error: ").split("\n")
    assert sorted(line.split(" validation failed")[0] for line in lines) == [
        'property "/name"',
        'property "/timeout"',
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_unique_field_on_another_id_is_400(gateway, kind):
    doc = kind.make()
    create(gateway, kind, doc)
    status, body = gateway.admin_call("POST", kind.collection, dict(doc))
    assert (status, body) == (400, {"error_msg": kind.duplicate})
    status, body = gateway.admin_call("PUT", kind.item(unique("other")), dict(doc))
    assert (status, body) == (400, {"error_msg": kind.duplicate})


@pytest.mark.parametrize("kind", KINDS)
def test_same_id_may_keep_its_own_unique_field(gateway, kind):
    doc = kind.make()
    id, _ = create(gateway, kind, doc)
    changed = {**doc, "rate_limit": {"rpm": 1}}
    status, body = gateway.admin_call("PUT", kind.item(id), changed)
    assert (status, body) == (200, {"key": f"/{kind.segment}/{id}", "value": changed})


def test_freed_name_can_be_reused_after_delete(gateway):
    doc = model_doc()
    id, _ = create(gateway, MODELS, doc)
    assert gateway.admin_call("DELETE", MODELS.item(id))[0] == 200
    create(gateway, MODELS, doc)


@pytest.mark.parametrize("kind", KINDS)
def test_validation_checks_json_then_schema_then_duplicates(gateway, kind):
    doc = kind.make()
    create(gateway, kind, doc)
    # a duplicate that also fails the schema: the schema error wins
    status, body = gateway.admin_call("POST", kind.collection, {**doc, "extra": True})
    assert status == 400
    assert body["error_msg"].startswith(schema_error("/")), body
    # broken JSON wins over everything
    broken = json.dumps({**doc, "extra": True}).encode()[:-1]
    status, body = authed(gateway, "POST", kind.collection, broken)
    assert status == 400
    assert body["error_msg"].startswith("Invalid JSON: "), body


@pytest.mark.parametrize("kind", KINDS)
def test_failed_writes_change_nothing(gateway, kind):
    doc = kind.make()
    id, _ = create(gateway, kind, doc)
    before = listing(gateway, kind)
    other = kind.make()
    attempts = [
        ("POST", kind.collection, b"{nope"),
        ("PUT", kind.item(id), b"{nope"),
        ("POST", kind.collection, json.dumps({**other, "extra": 1}).encode()),
        ("PUT", kind.item(id), json.dumps({**other, "extra": 1}).encode()),
        ("PUT", kind.item(unique("new")), json.dumps({**other, "extra": 1}).encode()),
        ("POST", kind.collection, json.dumps(doc).encode()),
        ("PUT", kind.item(unique("new")), json.dumps(doc).encode()),
    ]
    for method, path, body in attempts:
        status, answer = authed(gateway, method, path, body)
        assert status == 400, (method, path, answer)
    assert listing(gateway, kind) == before


def test_store_write_failure_is_500_error_msg_and_changes_nothing(gateway):
    # a directory where the store file goes makes the atomic rename fail
    store = gateway.config_path.parent / STORE_FILE
    id, _ = create(gateway, MODELS)
    before = entries(gateway)
    aside = store.with_name(STORE_FILE + ".aside")
    store.rename(aside)
    store.mkdir()
    try:
        attempts = [
            ("POST", MODELS.collection, model_doc()),
            ("PUT", MODELS.item(id), model_doc()),
            ("PUT", APIKEYS.item(unique("new")), apikey_doc()),
            ("DELETE", MODELS.item(id), None),
        ]
        for method, path, doc in attempts:
            status, _, payload = raw(gateway, method, path, gateway.admin_headers(), doc)
            body = json.loads(payload)
            assert status == 500, (method, path, body)
            assert set(body) == {"error_msg"} and body["error_msg"], body
        assert entries(gateway) == before
    finally:
        store.rmdir()
        aside.rename(store)


# -- routing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{PREFIX}/nope",
        f"{PREFIX}/",
        f"{PREFIX}",
        f"{PREFIX}/Models",
        f"{PREFIX}/models/a/b",
        f"{PREFIX}/apikeys/a/b/c",
        f"{PREFIX}/models/",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("with_key", [False, True], ids=["no-auth", "auth"])
def test_unknown_admin_path_is_404_with_empty_body(gateway, path, method, with_key):
    headers = gateway.admin_headers() if with_key else {}
    status, _, payload = raw(gateway, method, path, headers)
    assert (status, payload) == (404, b"")


@pytest.mark.parametrize("path", ["/foo", "/v1/models", "/aisix", "/openapi.yaml"])
def test_other_paths_are_404(gateway, path):
    status, _, _ = raw(gateway, "GET", path, gateway.admin_headers())
    assert status == 404


@pytest.mark.parametrize("with_key", [False, True], ids=["no-auth", "auth"])
def test_the_admin_listener_s_root_redirects_to_the_ui(gateway, with_key):
    """Opening the admin address in a browser lands on the UI, key or not;
    the Location is fixed, whatever Host the client sent."""
    headers = {**(gateway.admin_headers() if with_key else {}), "Host": "evil.example"}
    status, headers, payload = raw(gateway, "GET", "/", headers)
    assert (status, headers["location"], payload) == (303, "/ui/", b"")


WRONG_METHODS = [
    ("PATCH", f"{PREFIX}/models"),
    ("PUT", f"{PREFIX}/models"),
    ("DELETE", f"{PREFIX}/apikeys"),
    ("POST", f"{PREFIX}/models/some-id"),
    ("PATCH", f"{PREFIX}/apikeys/some-id"),
    ("POST", f"{PREFIX}/apikeys/some-id"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method_on_known_path_is_401_without_auth(gateway, method, path):
    status, _, payload = raw(gateway, method, path)
    assert (status, json.loads(payload)) == (401, {"error_msg": "Missing API key"})


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method_on_known_path_is_405_after_auth(gateway, method, path):
    status, _, _ = raw(gateway, method, path, gateway.admin_headers(), model_doc())
    assert status == 405


# -- unauthenticated pages -------------------------------------------------------------


def test_openapi_page_is_html_without_auth(gateway):
    status, headers, payload = raw(gateway, "GET", "/openapi")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b"<html" in payload.lower()
    assert f"{PREFIX}/models".encode() in payload


def test_openapi_json_is_an_openapi_3_1_document_without_auth(gateway):
    status, headers, payload = raw(gateway, "GET", "/openapi.json")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    document = json.loads(payload)
    assert document["openapi"].startswith("3.1")
    assert document["paths"]


def test_ui_redirects_to_ui_slash(gateway):
    status, headers, _ = raw(gateway, "GET", "/ui")
    assert status == 303
    assert headers["location"] in ("/ui/", f"{gateway.admin}/ui/")


@pytest.mark.parametrize("path", ["/ui/models/deep/link", "/ui/apikeys", "/ui/nope.html"])
def test_ui_deep_links_serve_the_single_page_index(gateway, path):
    status, headers, index = raw(gateway, "GET", "/ui/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert index == (UI_DIR / "index.html").read_bytes()
    status, headers, payload = raw(gateway, "GET", path)
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert payload == index


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("app.js", ("text/javascript", "application/javascript")), ("app.css", ("text/css",))],
)
def test_ui_serves_real_assets_with_their_content_type(gateway, name, content_type):
    if not (UI_DIR / name).is_file():
        pytest.skip(f"twisted_gw/admin/ui/{name} is not written yet")
    status, headers, payload = raw(gateway, "GET", f"/ui/{name}")
    assert status == 200
    assert headers["content-type"].startswith(content_type)
    assert payload == (UI_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path", ["/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py", "/ui/%2e%2e/%2e%2e/setup.py"]
)
def test_ui_never_serves_files_outside_its_directory(gateway, path):
    status, _, payload = raw(gateway, "GET", path)
    assert b"AdminApp" not in payload and b"setup(" not in payload
    if status == 200:
        assert payload == (UI_DIR / "index.html").read_bytes()


# -- documentation <-> routes -------------------------------------------------------------

SAMPLE_PATH = "models/deep/link"


def _openapi(gw: Gateway) -> dict[str, Any]:
    status, _, payload = raw(gw, "GET", "/openapi.json")
    assert status == 200, "GET /openapi.json is not served"
    return json.loads(payload)


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


def test_every_documented_operation_is_served(gateway):
    problems = []
    for method, template in sorted(_operations(_openapi(gateway))):
        kinds = (MODELS, APIKEYS, PROVIDERS)
        kind = next((k for k in kinds if template.startswith(k.collection)), None)
        path = template.replace("{path}", SAMPLE_PATH)
        if "{id}" in path:
            assert kind is not None, template
            id, _ = create(gateway, kind)  # an existing id: a 404 then means "no route"
            path = path.replace("{id}", id)
        assert "{" not in path, f"unexpected path parameter in {template}"
        body = kind.make() if kind is not None and method in ("POST", "PUT") else None
        status, _, _ = raw(gateway, method, path, gateway.admin_headers(), body)
        if status in (404, 405):
            problems.append(f"{method} {template} -> {status}")
    assert problems == []


def _documented_templates(rule: str) -> list[str]:
    """werkzeug rule syntax -> the OpenAPI path templates it stands for."""
    choices = re.search(r"<any\(([^)]*)\):\w+>", rule)
    if choices:
        return [
            t
            for option in choices[1].split(",")
            for t in _documented_templates(rule.replace(choices[0], option.strip()))
        ]
    rule = re.sub(r"<path:\w+>", "{path}", rule)
    return [re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule)]


def test_rule_conversion_matches_openapi_templates():
    assert _documented_templates("/aisix/admin/<any(models,apikeys):segment>/<id>") == [
        "/aisix/admin/models/{id}",
        "/aisix/admin/apikeys/{id}",
    ]
    assert _documented_templates("/ui/<path:rest>") == ["/ui/{path}"]
    assert _documented_templates("/openapi.json") == ["/openapi.json"]


def test_every_served_route_is_documented(gateway):
    from twisted_gw.admin.app import AdminApp

    documented = _operations(_openapi(gateway))
    problems = []
    for rule in AdminApp.app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for template in _documented_templates(rule.rule):
                if (method, template) not in documented:
                    problems.append(f"{method} {template} (rule {rule.rule})")
    assert problems == []


# -- persistence ------------------------------------------------------------------------


#: exit codes of a clean SIGTERM shutdown: 0 with either launcher (CONTRACT 5.2)
CLEAN_EXIT = {"twistd": (0,), "console": (0,)}


def test_entries_survive_restart_and_console_mode_reads_the_same_store(tmp_path):
    gw = start_gateway(tmp_path)
    try:
        model_id, _ = create(gw, MODELS)
        key_id, _ = create(gw, APIKEYS)
        assert gw.admin_call("PUT", MODELS.item(model_id), model_doc())[0] == 200
        before = entries(gw)
    finally:
        assert gw.process.stop() in CLEAN_EXIT["twistd"], gw.process.output
    assert {f"/models/{model_id}", f"/apikeys/{key_id}"} <= set(before)
    assert (tmp_path / STORE_FILE).is_file()

    for mode in ("twistd", "console"):
        # the same config file, so the same listeners and the same store next to it
        process = GatewayProcess(gw.config_path, mode=mode).start()
        SESSION_LOGS.append(process)
        try:
            process.wait_ready([gw.proxy_port, gw.admin_port])
            assert entries(gw) == before, mode
        finally:
            assert process.stop() in CLEAN_EXIT[mode], process.output


def test_corrupt_store_file_exits_1_fast_naming_the_file(tmp_path):
    (tmp_path / STORE_FILE).write_text("{broken", encoding="utf-8")
    config = write_config(tmp_path, free_port(), free_port())
    process = GatewayProcess(config)
    SESSION_LOGS.append(process)
    code, out, _, elapsed = process.run_to_exit(timeout=5)
    assert code == 1, process.output
    assert STORE_FILE in out, out
    assert "Traceback" not in out
    assert elapsed < 1.0, f"took {elapsed:.3f}s"
