"""Property-based HTTP fuzzing of the real gateway process (CONTRACT 3, 4.1, 5.5).

Hypothesis writes the requests: proxy bodies (any JSON, 1000-level nesting,
lone surrogate escapes, ``1e400``, 400-digit integers, wrong types for
``model``/``messages``/``input``/``stream``, bytes that are not JSON or not
UTF-8), Admin API documents (the same, plus numbers past the contract's
bounds) sent with POST and PUT, arbitrary headers (duplicate
``Authorization``, very long values, a foreign ``Host``), arbitrary paths
(``//``, ``%ff``, ``..``, ``%00``) and methods. Whatever it writes:

* the answer is a 2xx, or a 4xx in the contract's JSON shape (proxy:
  ``{"error": {"message", "type", "param": null, "code"}}``; admin:
  ``{"error_msg": str}``, or an empty 404/405 for paths it does not serve);
  never a 5xx, never an HTML page where the contract serves none, never a
  hang; a redirect only from ``/ui`` to ``/ui/``, and no ``Location`` ever
  names a host the client sent;
* an Admin API document the contract rejects (a number out of bounds, a
  wrong type, an unknown field) is rejected, and a rejected write leaves the
  store exactly as it was;
* after every example the gateway is alive, logged no traceback, and its
  concurrency-1 model admits a request (nothing leaked a permit).

Examples are sent with blocking sockets from plain test functions (hypothesis
and pytest-twisted's reactor do not mix), so the one upstream the gateway
calls is a threaded stdlib server (tests/support/fault_upstream.py).
``TWISTED_GW_FUZZ_EXAMPLES=N`` runs N examples per test instead of the CI
default.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway, secret, start_gateway
from tests.support.fault_upstream import ThreadedUpstream

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
ADMIN = "/aisix/admin"
TIMEOUT = 5.0  # seconds: an answer slower than this is a hang

MOCK, C1, UP = "fz-mock", "fz-c1", "fz-up"
MODELS = (MOCK, C1, UP)

_ENV_EXAMPLES = int(os.environ.get("TWISTED_GW_FUZZ_EXAMPLES") or 0)


def fuzz_settings(ci_examples: int) -> settings:
    """``ci_examples`` examples, or ``TWISTED_GW_FUZZ_EXAMPLES`` when set. No example
    database: the working tree is shared, and a failure prints its reproduction blob."""
    return settings(
        max_examples=_ENV_EXAMPLES or ci_examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- JSON with values Python's json module will not write ----------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON fragment sent verbatim; ``value`` is what it means, for the oracle."""

    text: str
    value: Any

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 40 else f"{self.text[:20]}...{self.text[-10:]}"
        return f"Raw({shown!r})"


def deep_array(depth: int) -> Raw:
    return Raw("[" * depth + "1" + "]" * depth, [[]])


def deep_object(depth: int) -> Raw:
    return Raw('{"a":' * depth + "1" + "}" * depth, {"a": {}})


def dump(value: Any) -> str:
    """JSON text of ``value``; :class:`Raw` fragments go in as they are."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: any surrogate is written as a \u escape


def meaning(value: Any) -> Any:
    """``value`` with every :class:`Raw` replaced by what it means."""
    if isinstance(value, Raw):
        return value.value
    if isinstance(value, dict):
        return {k: meaning(v) for k, v in value.items()}
    if isinstance(value, list):
        return [meaning(v) for v in value]
    return value


BIG = Raw("1" + "0" * 400, 10**400)
SPECIALS: list[Raw] = [
    Raw("1e400", math.inf),
    Raw("-1e400", -math.inf),
    BIG,
    Raw("-" + BIG.text, -(10**400)),
    Raw("1e-400", 0.0),
    Raw('"\\ud800"', "\ud800"),
    Raw('"lone \\udfff low"', "lone \udfff low"),
    Raw('"\\ud83d"', "\ud83d"),
    Raw('{"\\ud800": 1}', {"\ud800": 1}),
    Raw("1E+2", 100.0),
    Raw("-0", 0),
    Raw("12345678901234567890123456789", 12345678901234567890123456789),
    deep_array(1000),
    deep_array(999),
    deep_array(5000),
    deep_object(1000),
    deep_object(3000),
]
NUMBERS = [10**30, 10**12, 10**12 + 1, 2**63, 2**64, -(2**63) - 1, 3_600_000, 3_600_001]
NUMBERS += [-1, 0, 1, 0.5, 1e308, -1e-308]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
specials = st.sampled_from(SPECIALS) | st.sampled_from(NUMBERS)
anything = st.one_of(json_values, specials, specials)  # specials twice as often


def with_specials(base: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(base, anything)


# -- proxy bodies ------------------------------------------------------------------------

messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": with_specials(st.sampled_from(["user", "system", "assistant", "tool"])),
            "content": with_specials(st.text(max_size=30)),
        }
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def proxy_documents(draw: st.DrawFn) -> tuple[str, bytes]:
    """(path, body): a chat or embeddings request, its fields valid or not."""
    path = draw(st.sampled_from([CHAT, EMBEDDINGS]))
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        doc["model"] = draw(with_specials(st.sampled_from([*MODELS, "nope"])))
    field = "messages" if path == CHAT else "input"
    if draw(st.integers(0, 9)):
        if path == CHAT:
            doc[field] = draw(with_specials(messages))
        else:
            doc[field] = draw(with_specials(st.text(max_size=20) | st.lists(st.text(), max_size=3)))
    if draw(st.booleans()):
        doc["stream"] = draw(with_specials(st.booleans()))
    doc.update(draw(st.dictionaries(st.text(max_size=10), anything, max_size=3)))
    items = list(doc.items())
    draw(st.randoms(use_true_random=False)).shuffle(items)
    return path, dump(dict(items)).encode("utf-8")


@st.composite
def not_json_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from([CHAT, EMBEDDINGS]))
    good = json.dumps({"model": MOCK, "messages": [{"role": "user", "content": "hi"}]}).encode()
    body = draw(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"{", b"nul", b"[]"]),
            # invalid UTF-8 inside an otherwise valid document
            st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]).map(
                lambda bad: good.replace(b'"hi"', b'"h' + bad + b'i"')
            ),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.sampled_from(SPECIALS).map(lambda r: r.text.encode()),
        )
    )
    return path, body


proxy_bodies = st.one_of(proxy_documents(), proxy_documents(), not_json_bodies())


# -- admin documents and the contract's verdict on them ----------------------------------------

PROVIDERS = ("openai", "deepseek", "gemini", "anthropic", "mock")
LIMIT_KINDS = ("rpm", "rpd", "tpm", "tpd", "concurrency")
MAX_TIMEOUT = 3_600_000
MAX_LIMIT = 10**12


def _integer(value: Any) -> bool | None:
    """True/False when it surely is/is not a JSON integer; None when the schema's
    reading is not certain (an integral float like ``30.0``, or ``null``)."""
    if value is None or (isinstance(value, float) and math.isfinite(value) and value.is_integer()):
        return None
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded_int(value: Any, low: int, high: int, where: str) -> str | None:
    verdict = _integer(value)
    if verdict is False:
        return f"{where} is not an integer: {value!r:.60}"
    if verdict and not low <= value <= high:
        return f"{where} is out of bounds [{low}, {high}]: {value!r:.60}"
    return None


def _rate_limit(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"rate_limit is not an object: {value!r:.60}"
    for kind in LIMIT_KINDS:
        if kind in value:
            reason = _bounded_int(value[kind], 0, MAX_LIMIT, f"rate_limit.{kind}")
            if reason:
                return reason
    return None


def contract_rejects(collection: str, doc: Any) -> str | None:
    """Why the contract (2, 5.5) surely rejects ``doc``, or None when it may be valid.

    Conservative: only what the contract states outright (required fields and
    their types, no other top-level fields, provider_config's exact shape,
    the numeric bounds); anything it leaves open counts as valid.
    """
    if not isinstance(doc, dict):
        return f"the document is not an object: {type(doc).__name__}"
    if collection == "apikeys":
        unknown = set(doc) - {"key", "allowed_models", "rate_limit"}
        if unknown:
            return f"unknown fields {sorted(unknown)!r:.80}"
        if not isinstance(doc.get("key"), str):
            return "key is missing or not a string"
        allowed = doc.get("allowed_models")
        if not isinstance(allowed, list) or not all(isinstance(m, str) for m in allowed):
            return "allowed_models is missing or not an array of strings"
        return _rate_limit(doc.get("rate_limit"))
    routing = {"targets", "weight", "routing", "fallbacks"}
    unknown = set(doc) - {"name", "model", "provider_config", "timeout", "rate_limit"} - routing
    if unknown:
        return f"unknown fields {sorted(unknown)!r:.80}"
    if not isinstance(doc.get("name"), str):
        return "name is missing or not a string"
    model = doc.get("model")
    if not isinstance(model, str):
        return "model is missing or not a string"
    provider = model.split("/", 1)[0] if "/" in model else None
    if provider not in PROVIDERS:
        return f"model {model!r:.60} does not name a provider"
    config = doc.get("provider_config")
    if not isinstance(config, dict):
        return "provider_config is missing or not an object"
    if provider == "mock" and config:
        return "provider_config of a mock model is not {}"
    if provider != "mock":
        if set(config) - {"api_key", "api_base"}:
            return "provider_config has fields other than api_key and api_base"
        if not isinstance(config.get("api_key"), str):
            return "provider_config.api_key is missing or not a string"
    if "timeout" in doc:
        reason = _bounded_int(doc["timeout"], 0, MAX_TIMEOUT, "timeout")
        if reason:
            return reason
    if "weight" in doc:
        reason = _bounded_int(doc["weight"], 1, 10**6, "weight")
        if reason:
            return reason
    return _rate_limit(doc.get("rate_limit"))


names = st.text(min_size=1, max_size=12).map(lambda s: f"fzdoc-{s}") | st.sampled_from(MODELS)
out_of_range = st.sampled_from(
    [10**30, BIG, Raw("1e400", math.inf), MAX_TIMEOUT + 1, 10**12 + 1, 2**64, -1, 1.5]
)
limit_values = st.one_of(st.integers(0, 1000), out_of_range, anything)


@st.composite
def model_documents(draw: st.DrawFn) -> Any:
    provider = draw(st.sampled_from(["mock", "openai", "anthropic"]))
    doc: dict[str, Any] = {
        "name": draw(names),
        "model": f"{provider}/fz-{draw(st.text(max_size=6))}",
        "provider_config": {} if provider == "mock" else {"api_key": "sk-fuzz"},
    }
    if draw(st.booleans()):
        doc["timeout"] = draw(st.one_of(st.integers(0, MAX_TIMEOUT), out_of_range, anything))
    if draw(st.booleans()):
        kinds = st.sampled_from([*LIMIT_KINDS, "other"])
        doc["rate_limit"] = draw(st.dictionaries(kinds, limit_values, max_size=3) | anything)
    if draw(st.booleans()):  # one field of the valid document replaced by anything
        doc[draw(st.sampled_from(["name", "model", "provider_config", "timeout", "x"]))] = draw(
            anything
        )
    return doc


@st.composite
def apikey_documents(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {
        "key": f"sk-fz-{draw(st.text(max_size=8))}",
        "allowed_models": draw(st.lists(st.sampled_from(MODELS), max_size=2)),
    }
    if draw(st.booleans()):
        kinds = st.sampled_from([*LIMIT_KINDS, "other"])
        doc["rate_limit"] = draw(st.dictionaries(kinds, limit_values, max_size=3) | anything)
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["key", "allowed_models", "rate_limit", "x"]))] = draw(anything)
    return doc


@st.composite
def admin_writes(draw: st.DrawFn) -> tuple[str, str, str, Any, bytes]:
    """(collection, method, path, the document's meaning, body)."""
    collection = draw(st.sampled_from(["models", "apikeys"]))
    docs = model_documents() if collection == "models" else apikey_documents()
    doc = draw(st.one_of(docs, docs, docs, anything))
    method = draw(st.sampled_from(["POST", "PUT"]))
    path = f"{ADMIN}/{collection}"
    if method == "PUT":
        path += "/" + draw(st.sampled_from(["fz-put-1", "fz-put-2"]) | st.uuids().map(str))
    if draw(st.integers(0, 9)) == 0:  # not JSON at all
        return collection, method, path, None, draw(st.binary(max_size=32) | st.just(b"\xff{"))
    return collection, method, path, meaning(doc), dump(doc).encode("utf-8")


MODEL_OK = {"name": "fzdoc-example", "model": "mock/x", "provider_config": {}}


def admin_write(doc: dict[str, Any], method: str = "POST") -> tuple[str, str, str, Any, bytes]:
    """An explicit example for :func:`admin_writes`."""
    collection = "models" if "model" in doc else "apikeys"
    path = f"{ADMIN}/{collection}" + ("/fz-put-1" if method == "PUT" else "")
    return collection, method, path, meaning(doc), dump(doc).encode()


# -- headers, paths, methods ---------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}
header_names = st.one_of(
    st.sampled_from(["Authorization", "authorization", "AUTHORIZATION", "x-api-key"]),
    st.sampled_from(["Content-Type", "Accept", "Accept-Encoding", "Origin", "Cookie", "Range"]),
    st.sampled_from(["X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "traceparent"]),
    st.text(alphabet=TOKEN, min_size=1, max_size=20),
).filter(lambda n: n.lower() not in FRAMING)
visible = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
hosts = st.one_of(
    st.just(None),
    st.sampled_from(["evil.example", "evil.example:1", "[::1]:80", "a@b", "127.0.0.1:1", ""]),
    st.text(alphabet=TOKEN[15:] + ".-:", min_size=1, max_size=30),
)


@st.composite
def header_sets(draw: st.DrawFn) -> list[tuple[str, str]]:
    values = st.one_of(
        st.text(alphabet=visible, max_size=40),
        st.sampled_from(["Bearer {key}", "bearer {key}", "{key}", "Bearer {admin}", "Bearer "]),
        st.sampled_from(["Basic Zm9vOmJhcg==", "Bearer", "text/html", "*/*", "gzip, br"]),
        st.integers(1_000, 20_000).map(lambda n: "x" * n),  # very long values
        st.integers(1_000, 12_000).map(lambda n: "Bearer " + "k" * n),
    )
    headers = draw(st.lists(st.tuples(header_names, values), max_size=6))
    if draw(st.booleans()):  # Authorization more than once
        auth = st.sampled_from(["Bearer {key}", "Bearer {admin}", "Bearer junk", "{key}", ""])
        headers += [("Authorization", draw(auth)) for _ in range(draw(st.integers(2, 4)))]
    draw(st.randoms(use_true_random=False)).shuffle(headers)
    return headers


SEGMENTS = ["v1", "chat", "completions", "embeddings", "models", "aisix", "admin", "apikeys"]
SEGMENTS += ["ui", "openapi", "openapi.json", "metrics", "healthz", "readyz", "playground"]
SEGMENTS += ["index.html", "app.js", "", ".", "..", "%2e%2e", "%ff", "%00", "%2F", "%", "%zz"]
SEGMENTS += ["%c0%ae", "..%2f", ";x", "fz-c1", "~", "a b"]


@st.composite
def targets(draw: st.DrawFn) -> str:
    known = [
        CHAT,
        EMBEDDINGS,
        "/v1/models",
        f"{ADMIN}/models",
        f"{ADMIN}/apikeys",
        "/ui",
        "/ui/",
        "/openapi",
    ]
    pieces = draw(st.lists(st.sampled_from(SEGMENTS) | st.text(TOKEN, max_size=6), max_size=6))
    path = "/" + "/".join(p.replace(" ", "%20") for p in pieces)
    if draw(st.booleans()):
        path = draw(st.sampled_from(known))
        if draw(st.booleans()):  # the same route with a doubled slash somewhere
            at = draw(st.integers(0, len(path) - 1))
            path = path[:at] + "/" + path[at:] if path[at] == "/" else "/" + path
    if draw(st.integers(0, 3)) == 0:
        path += "?" + draw(st.sampled_from(["a=1", "next=//evil.example", "%ff", "x=%00", ""]))
    return path


methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
)


# -- the client and the answer checks ------------------------------------------------------------


@dataclass
class Answer:
    """What came back, with the request that asked, for assertion messages."""

    request: bytes
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(found) if found else None

    def __str__(self) -> str:
        def cut(data: bytes, n: int = 600) -> str:
            return repr(data if len(data) <= n else data[:n] + b"...(%d bytes)" % len(data))

        return (
            f"\n  request:  {cut(self.request)}\n  response: {self.status} "
            f"{self.headers!r:.400}\n  body:     {cut(self.body, 400)}"
        )


def send(
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
    host: str | None = None,
) -> Answer:
    """One request on a fresh connection, written byte for byte as given
    (duplicate headers, odd targets), read with http.client's parser."""
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host if host is not None else f'127.0.0.1:{port}'}",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            payload = response.read()
        except TimeoutError as e:
            raise AssertionError(
                f"no answer within {TIMEOUT} s (a hang)\n  request: {request[:600]!r}"
            ) from e
        except http.client.HTTPException as e:
            raise AssertionError(f"no HTTP answer: {e!r}\n  request: {request[:600]!r}") from e
        return Answer(request, response.status, response.getheaders(), payload)


def _looks_like_html(answer: Answer) -> bool:
    head = answer.body.lstrip()[:64].lower()
    content_type = (answer.header("content-type") or "").lower()
    html_type = content_type.startswith("text/html") and bool(answer.body)
    return html_type or head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<title"))


def _json(answer: Answer) -> Any:
    try:
        return json.loads(answer.body)
    except ValueError:
        raise AssertionError(f"a 4xx whose body is not JSON:{answer}") from None


def check_location(answer: Answer, sent_host: str | None) -> None:
    """No Location names a host, least of all the one the client sent as Host."""
    location = answer.header("location")
    if location is None:
        return
    netloc = urlsplit(location).netloc
    assert not (sent_host and sent_host in netloc), f"Location names the request's Host:{answer}"
    assert not netloc and not location.startswith("//"), f"Location names a host:{answer}"


def check_proxy_answer(answer: Answer, method: str = "POST") -> None:
    """A 2xx, or a 4xx in OpenAI's error shape (CONTRACT 4.1); nothing else."""
    status = answer.status
    assert status < 500, f"the proxy answered a 5xx:{answer}"
    assert not 300 <= status < 400, f"the proxy answered a redirect:{answer}"
    assert 200 <= status < 300 or 400 <= status < 500, f"unexpected status:{answer}"
    if method == "HEAD":
        return
    assert not _looks_like_html(answer), f"the proxy answered HTML:{answer}"
    if status >= 400:
        body = _json(answer)
        assert isinstance(body, dict) and set(body) == {"error"}, f"not the error shape:{answer}"
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, (
            f"not the error shape:{answer}"
        )
        assert isinstance(error["message"], str) and isinstance(error["type"], str), f"{answer}"
        assert error["param"] is None, f"param is not null:{answer}"
        assert error["code"] is None or isinstance(error["code"], str), f"code:{answer}"


def _admin_path(target: str) -> str:
    # twisted.web and Klein read leading slashes as one ("//ui/" is "/ui/")
    return "/" + target.split("?", 1)[0].lstrip("/")


def check_admin_answer(answer: Answer, method: str, target: str, sent_host: str | None) -> None:
    """A 2xx, the one redirect, or a 4xx in the Admin API's shape (CONTRACT 3)."""
    status, path = answer.status, _admin_path(target)
    check_location(answer, sent_host)
    assert status < 500, f"the admin listener answered a 5xx:{answer}"
    if 300 <= status < 400:
        assert path in ("/", "/ui"), f"a redirect from a path other than / or /ui:{answer}"
        assert answer.header("location") == "/ui/", f"{path} redirects elsewhere than /ui/:{answer}"
        return
    assert 200 <= status < 300 or 400 <= status < 500, f"unexpected status:{answer}"
    if method == "HEAD":
        return
    html_allowed = status < 300 and (path == "/openapi" or path.startswith("/ui/"))
    assert html_allowed or not _looks_like_html(answer), f"HTML where none is served:{answer}"
    if status < 400:
        return
    if path == "/playground/chat/completions":  # the proxy's chat endpoint, its error shape
        check_proxy_answer(answer, method)
        return
    if answer.body == b"" and status in (404, 405):
        return  # a path (or method) the admin listener does not serve
    body = _json(answer)
    assert isinstance(body, dict) and set(body) == {"error_msg"}, f"not the error shape:{answer}"
    assert isinstance(body["error_msg"], str), f"error_msg is not a string:{answer}"


# -- the gateway under fuzz ---------------------------------------------------------------------------


@dataclass(repr=False)
class Env:
    """The fuzzed gateway, its upstream and client key, and the checks every example ends with."""

    gw: Gateway
    upstream: ThreadedUpstream
    key: str
    log_offset: int = 0
    invalid_seen: int = 0

    def __repr__(self) -> str:  # hypothesis prints it in every falsifying example
        return f"Env(proxy={self.gw.proxy_port}, admin={self.gw.admin_port})"

    def proxy_auth(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.key}"), ("Content-Type", "application/json")]

    def admin_auth(self) -> list[tuple[str, str]]:
        return [
            ("Authorization", f"Bearer {self.gw.admin_key}"),
            ("Content-Type", "application/json"),
        ]

    def fill(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [
            (n, v.replace("{key}", self.key).replace("{admin}", self.gw.admin_key))
            for n, v in headers
        ]

    def begin(self) -> None:
        """Start an example: what was logged before it belongs to earlier examples."""
        path = self.gw.process.stdout_path
        assert path is not None
        self.log_offset = path.stat().st_size
        self.invalid_seen = len(self.upstream.invalid_bodies)

    def new_log(self) -> str:
        """What the gateway logged since the last call."""
        path = self.gw.process.stdout_path
        assert path is not None
        with open(path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")

    def store(self) -> tuple[bytes, bytes]:
        """The two collections as the Admin API lists them, byte for byte."""
        listed = []
        for collection in ("models", "apikeys"):
            answer = send(self.gw.admin_port, "GET", f"{ADMIN}/{collection}", self.admin_auth())
            assert answer.status == 200, f"listing {collection} failed:{answer}"
            listed.append(answer.body)
        return listed[0], listed[1]

    def assert_healthy(self) -> None:
        """The process lives, logged no traceback, and the concurrency-1 model
        admits a request (a permit a previous request kept would refuse it)."""
        log = self.new_log()
        assert self.gw.process.running, f"the gateway died\n{self.gw.process.output[-4000:]}"
        for bad in ("Traceback", "Unhandled error", "Unhandled Error"):
            assert bad not in log, f"the gateway logged {bad!r}:\n{log[-4000:]}"
        invalid = self.upstream.invalid_bodies[self.invalid_seen :]
        assert not invalid, f"the gateway sent its upstream a body that is not JSON: {invalid!r}"
        doc = {"model": C1, "messages": [{"role": "user", "content": "still there?"}]}
        deadline = time.monotonic() + 2.0
        while True:  # a release may land a moment after the answer: poll, bounded
            answer = send(
                self.gw.proxy_port, "POST", CHAT, self.proxy_auth(), json.dumps(doc).encode()
            )
            if answer.status == 200:
                return
            assert answer.status == 429 and time.monotonic() < deadline, (
                f"the concurrency-1 model no longer admits a request (a leaked permit?):{answer}"
            )
            time.sleep(0.02)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    upstream = ThreadedUpstream().start()
    gw = start_gateway(
        tmp_path_factory.mktemp("fuzz"),
        extra={"hooks": ["tests.support.finalize_counter.FinalizeCounter"]},
    )
    try:
        provider = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        for doc in (
            {"name": MOCK, "model": "mock/fuzz", "provider_config": {}},
            {
                "name": C1,
                "model": "mock/fuzz",
                "provider_config": {},
                "rate_limit": {"concurrency": 1},
            },
            {"name": UP, "model": "openai/gpt-fuzz", "provider_config": provider, "timeout": 3000},
        ):
            status, body = gw.admin_call("POST", f"{ADMIN}/models", doc)
            assert status == 201, body
        key = secret()
        status, body = gw.admin_call(
            "POST", f"{ADMIN}/apikeys", {"key": key, "allowed_models": list(MODELS)}
        )
        assert status == 201, body
        state = Env(gw, upstream, key)
        state.assert_healthy()
        yield state
    finally:
        gw.process.stop()
        upstream.stop()


# -- the properties -----------------------------------------------------------------------------------


@fuzz_settings(200)
@given(request=proxy_bodies)
@example(request=(CHAT, b"[" * 1000 + b"]" * 1000))
@example(request=(CHAT, dump({"model": MOCK, "messages": deep_array(1000)}).encode()))
@example(request=(EMBEDDINGS, dump({"model": UP, "input": "x", "dimensions": BIG}).encode()))
@example(
    request=(CHAT, b'{"model": "fz-mock", "messages": [{"role": "user", "content": "\\ud800"}]}')
)
@example(
    request=(
        CHAT,
        b'{"model": "fz-up", "messages": [{"role": "user", "content": "hi"}], "n": 1e400}',
    )
)
def test_any_proxy_body_gets_2xx_or_a_contract_4xx(env: Env, request: tuple[str, bytes]) -> None:
    env.begin()
    path, body = request
    answer = send(env.gw.proxy_port, "POST", path, env.proxy_auth(), body)
    check_proxy_answer(answer)
    env.assert_healthy()


@fuzz_settings(200)
@given(write=admin_writes())
@example(write=admin_write({**MODEL_OK, "timeout": 10**30}))
@example(write=admin_write({**MODEL_OK, "timeout": BIG}, method="PUT"))
@example(write=admin_write({**MODEL_OK, "rate_limit": {"rpm": 10**12 + 1}}))
@example(write=admin_write({**MODEL_OK, "provider_config": deep_object(1000)}))
@example(write=admin_write({**MODEL_OK, "name": SPECIALS[5]}))
@example(write=admin_write({"key": "sk-fz", "allowed_models": [], "rate_limit": {"tpd": BIG}}))
def test_admin_writes_answer_in_shape_reject_what_the_contract_rejects_and_keep_the_store(
    env: Env, write: tuple[str, str, str, Any, bytes]
) -> None:
    env.begin()
    collection, method, path, doc, body = write
    before = env.store()
    answer = send(env.gw.admin_port, method, path, env.admin_auth(), body)
    try:
        check_admin_answer(answer, method, path, None)
        if answer.status < 300:
            reason = contract_rejects(collection, doc)
            assert reason is None, (
                f"the Admin API accepted a document the contract rejects ({reason}):{answer}"
            )
        else:
            assert env.store() == before, f"a rejected write changed the store:{answer}"
            if answer.status == 400:
                message = json.loads(answer.body)["error_msg"]
                assert message.startswith(
                    (
                        "Invalid JSON: ",
                        "JSON schema validation error: ",
                        "Model name already exists",
                        "API key already exists",
                    )
                ), f"a 400 that is none of the contract's:{answer}"
    finally:
        if answer.status in (200, 201):  # leave the store as the next example expects it
            try:
                stored = json.loads(answer.body)["key"]
            except (ValueError, KeyError, TypeError):
                stored = None
            if isinstance(stored, str):
                send(env.gw.admin_port, "DELETE", ADMIN + stored, env.admin_auth())
    env.assert_healthy()


@fuzz_settings(120)
@given(headers=header_sets(), where=st.sampled_from(["chat", "models", "admin"]), host=hosts)
@example(
    headers=[("Authorization", "Bearer {key}"), ("Authorization", "Bearer junk")],
    where="chat",
    host=None,
)
@example(
    headers=[("Authorization", "Bearer {admin}"), ("X-Long", "x" * 20_000)],
    where="admin",
    host=None,
)
def test_any_headers_get_2xx_or_a_contract_4xx(
    env: Env, headers: list[tuple[str, str]], where: str, host: str | None
) -> None:
    env.begin()
    headers = env.fill(headers)
    if where == "admin":
        answer = send(env.gw.admin_port, "GET", f"{ADMIN}/models", headers, host=host)
        check_admin_answer(answer, "GET", f"{ADMIN}/models", host)
    else:
        doc = json.dumps({"model": MOCK, "messages": [{"role": "user", "content": "hi"}]}).encode()
        if where == "chat":
            answer = send(env.gw.proxy_port, "POST", CHAT, headers, doc, host=host)
        else:
            answer = send(env.gw.proxy_port, "GET", "/v1/models", headers, host=host)
        check_location(answer, host)
        check_proxy_answer(answer)
    env.assert_healthy()


@fuzz_settings(200)
@given(
    method=methods,
    target=targets(),
    listener=st.sampled_from(["proxy", "admin"]),
    auth=st.sampled_from(["none", "valid", "wrong"]),
    host=hosts,
    body=st.none() | st.sampled_from([b"", b"{}", b'{"model": "fz-mock", "messages": []}']),
)
@example(
    method="GET",
    target="/aisix//admin/models",
    listener="admin",
    auth="valid",
    host="evil.example",
    body=None,
)
@example(
    method="GET",
    target="/v1//models",
    listener="proxy",
    auth="valid",
    host="evil.example",
    body=None,
)
@example(
    method="GET", target="/aisix/admin/%ff", listener="admin", auth="valid", host=None, body=None
)
@example(method="GET", target="//ui", listener="admin", auth="none", host="evil.example", body=None)
def test_any_path_and_method_get_2xx_or_a_contract_4xx(
    env: Env,
    method: str,
    target: str,
    listener: str,
    auth: str,
    host: str | None,
    body: bytes | None,
) -> None:
    env.begin()
    secret_of = {"proxy": env.key, "admin": env.gw.admin_key}[listener]
    headers = {"none": [], "valid": [("Authorization", f"Bearer {secret_of}")]}.get(
        auth, [("Authorization", f"Bearer wrong-{uuid.uuid4().hex[:6]}")]
    )
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    port = env.gw.proxy_port if listener == "proxy" else env.gw.admin_port
    answer = send(port, method, target, headers, body, host=host)
    if listener == "admin":
        check_admin_answer(answer, method, target, host)
    else:
        check_location(answer, host)
        check_proxy_answer(answer, method)
    env.assert_healthy()
