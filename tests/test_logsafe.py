"""CONTRACT 5.4, last bullet: in every log line (access, admin audit,
warnings) control characters inside values are escaped, so no value can forge
or colour a line.

Unit tests of :mod:`twisted_gw.observability.logsafe` and of both access-log
formats with hostile model names, paths and client fields; warnings that
quote a store key, a document's error or an upstream's text, read as the log
observer would format them; and one black-box test: an admin PUT to an id
holding ``%0d%0a`` and ``%1b[31m`` writes one escaped audit line, never a
forged one.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from tests.conftest import start_gateway
from tests.support.access_log import FIELDS
from twisted_gw.config.etcd_store import EtcdStore
from twisted_gw.config.etcd_wire import KeyValue
from twisted_gw.config.snapshot import Snapshot, StoredEntry
from twisted_gw.hooks.context import RequestContext
from twisted_gw.observability.access_log import access_json, access_line, logfmt_value
from twisted_gw.observability.logsafe import escape, json_line
from twisted_gw.ratelimit.redis import RedisRateLimitStore

#: one of each kind of character that could break or colour a line
HOSTILE = "a\rb\nc\x1b[31md\x00e\x7ff\x9bg\u2028h\u2029i"

#: what a reader of the log sees as a character that ends a line or steers a
#: terminal: controls, line/paragraph separators, bidi controls, surrogates
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unsafe_chars(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") or c in _BIDI]


def assert_one_safe_line(text: str) -> None:
    assert text.splitlines() in ([text], []), text  # [] when empty
    assert unsafe_chars(text) == [], text


# -- escape ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        pytest.param("\r", "\\r", id="CR"),
        pytest.param("\n", "\\n", id="LF"),
        pytest.param("\t", "\\t", id="TAB"),
        pytest.param("\x1b", "\\x1b", id="ESC"),
        pytest.param("\x00", "\\x00", id="NUL"),
        pytest.param("\x0b", "\\x0b", id="VT"),
        pytest.param("\x1e", "\\x1e", id="record-separator"),
        pytest.param("\x7f", "\\x7f", id="DEL"),
        pytest.param("\x85", "\\x85", id="NEL"),
        pytest.param("\x9b", "\\x9b", id="CSI"),
        pytest.param("\u2028", "\\u2028", id="line-separator"),
        pytest.param("\u2029", "\\u2029", id="paragraph-separator"),
        pytest.param("\u202e", "\\u202e", id="right-to-left-override"),
        pytest.param("\u2066", "\\u2066", id="left-to-right-isolate"),
        pytest.param("\ud800", "\\ud800", id="lone-surrogate"),
    ],
)
def test_escape_writes_each_control_character_as_a_visible_escape(char: str, escaped: str) -> None:
    assert escape(f"x{char}y") == f"x{escaped}y"


def test_escape_leaves_printable_text_alone_and_does_not_copy_it() -> None:
    text = 'model "gpt-4o" é 日本 🙂 \\ back\\slash'
    assert escape(text) is text


def test_escape_takes_any_value_as_its_str() -> None:
    assert escape(42) == "42"
    assert escape(ValueError("bad\r\nthing")) == "bad\\r\\nthing"
    assert escape(None) == "None"


def test_escape_of_a_forged_line_stays_one_line() -> None:
    forged = "ok\r\n2026-01-01T00:00:00+0000 [twisted_gw.admin.app#info] admin DELETE x"
    assert escape(forged) == (
        "ok\\r\\n2026-01-01T00:00:00+0000 [twisted_gw.admin.app#info] admin DELETE x"
    )


@given(st.text())
def test_property_escape_never_leaves_a_line_end_or_a_control(text: str) -> None:
    assert_one_safe_line(escape(text))


# -- json_line ---------------------------------------------------------------------------


def test_json_line_escapes_what_json_dumps_leaves_raw() -> None:
    line = json_line({"v": HOSTILE})
    assert line == ('{"v":"a\\rb\\nc\\u001b[31md\\u0000e\\u007ff\\u009bg\\u2028h\\u2029i"}')
    assert json.loads(line) == {"v": HOSTILE}


def test_json_line_keeps_non_ascii_text_readable() -> None:
    assert json_line({"model": "é日本🙂", "n": 1}) == '{"model":"é日本🙂","n":1}'


@given(st.dictionaries(st.text(max_size=5), st.text() | st.none() | st.integers()))
def test_property_json_line_is_one_safe_line_that_parses_back(record: dict[str, Any]) -> None:
    line = json_line(record)
    assert_one_safe_line(line)
    assert json.loads(line) == record


# -- logfmt values -----------------------------------------------------------------------

_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.))")
_NAMED = {"n": "\n", "r": "\r", "t": "\t"}


def logfmt_decode(token: str) -> str:
    """A logfmt value as written by ``logfmt_value`` back to its text."""
    if not token.startswith('"'):
        return token

    def one(m: re.Match[str]) -> str:
        code = m[1] or m[2]
        return chr(int(code, 16)) if code else _NAMED.get(m[3], m[3])

    return _ESCAPE.sub(one, token[1:-1])


def logfmt_fields(line: str) -> list[tuple[str, str]]:
    """``(key, decoded value)`` of a logfmt line, in order; the line must be
    nothing but such pairs."""
    pairs = _LOGFMT.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, line
    return [(k, logfmt_decode(v)) for k, v in pairs]


def test_logfmt_value_quotes_and_escapes_every_control_character() -> None:
    assert logfmt_value(HOSTILE) == '"a\\rb\\nc\\x1b[31md\\x00e\\x7ff\\x9bg\\u2028h\\u2029i"'


def test_logfmt_value_escapes_backslash_and_quote_before_controls() -> None:
    """A typed ``\\n`` (backslash, n) and a real LF stay distinguishable."""
    assert logfmt_value("a\\nb") == '"a\\\\nb"'
    assert logfmt_value("a\nb") == '"a\\nb"'
    assert logfmt_value('say "hi"\r') == '"say \\"hi\\"\\r"'


@given(st.text(min_size=1, max_size=200))
def test_property_logfmt_value_is_one_token_that_decodes_back(text: str) -> None:
    value = logfmt_value(text)
    assert_one_safe_line(value)
    assert _LOGFMT.fullmatch(f"k={value}") is not None
    assert logfmt_decode(value) == text


# -- the access log, both formats ----------------------------------------------------------

MODEL_NAME = "gpt\r\nrid=forged status=200\x1b[31m\x00\x7f\x9b\u2028!"
KEY_ID = "k1\x1b[0m"
PATH = "/v1/chat/completions\r\n\x1b[2J\x00\x7f\x9b\u2028\u2029"
CLIENT = "127.0.0.1\r\nforged"
METHOD = "PO\x1bST\x7f"


def hostile_context() -> RequestContext:
    snapshot = Snapshot.build(
        [
            StoredEntry(
                "/models/m1", {"name": MODEL_NAME, "model": "mock/x", "provider_config": {}}, 1, 1
            ),
            StoredEntry(
                f"/apikeys/{KEY_ID}", {"key": "sk-client", "allowed_models": [MODEL_NAME]}, 1, 1
            ),
        ]
    )
    assert MODEL_NAME in snapshot.models_by_name  # a configured name: it is logged
    ctx = RequestContext("rid-1", 100.0, METHOD, PATH, "/v1/chat/completions", CLIENT, snapshot)
    ctx.api_key = snapshot.keys_by_key["sk-client"]
    ctx.model_name = MODEL_NAME
    ctx.status, ctx.end_reason, ctx.finished_at = 200, "ok", 100.5
    return ctx


def test_logfmt_access_line_escapes_model_path_key_and_client_fields() -> None:
    line = access_line(hostile_context(), now=101.0)
    assert_one_safe_line(line)
    fields = logfmt_fields(line)
    assert [k for k, _ in fields] == FIELDS  # "rid=forged" stays inside the quoted model
    values = dict(fields)
    assert (values["client"], values["method"], values["path"]) == (CLIENT, METHOD, PATH)
    assert (values["model"], values["key_id"], values["status"]) == (MODEL_NAME, KEY_ID, "200")
    assert 'model="gpt\\r\\nrid=forged status=200\\x1b[31m\\x00\\x7f\\x9b\\u2028!"' in line


def test_json_access_line_writes_del_c1_and_separators_as_unicode_escapes() -> None:
    line = access_json(hostile_context(), now=101.0)
    assert_one_safe_line(line)
    record = json.loads(line)
    assert (record["client"], record["method"], record["path"]) == (CLIENT, METHOD, PATH)
    assert (record["model"], record["key_id"]) == (MODEL_NAME, KEY_ID)
    for escaped in ("\\r\\n", "\\u001b", "\\u0000", "\\u007f", "\\u009b", "\\u2028", "\\u2029"):
        assert escaped in line


# -- warnings that quote stored or upstream text ---------------------------------------------


def logged(action: Any) -> list[str]:
    """The log lines ``action()`` writes, formatted as an observer would."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        action()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(e) for e in events]


def test_etcd_warning_about_an_invalid_document_escapes_its_key_and_error() -> None:
    store = EtcdStore(client=None, reactor=Clock())  # type: ignore[arg-type]
    rel = "/models/a\r\nforged\x1b[31m"
    doc = json.dumps({"name": "x\r\ny\x1b", "model": 7}).encode()
    kv = KeyValue(("/aisix" + rel).encode(), doc, 1, 2, 1)
    lines = logged(lambda: store._parse(rel, kv))
    assert len(lines) == 1
    assert_one_safe_line(lines[0])
    assert "skipping invalid document /aisix/models/a\\r\\nforged\\x1b[31m" in lines[0]


def test_etcd_warning_about_a_value_that_is_not_json_escapes_its_key() -> None:
    store = EtcdStore(client=None, reactor=Clock())  # type: ignore[arg-type]
    kv = KeyValue("/aisix/apikeys/k\r\n\x9b".encode(), b"{not json", 1, 2, 1)
    lines = logged(lambda: store._entry(kv, "get"))
    assert lines == ["get: the value at /aisix/apikeys/k\\r\\n\\x9b is not JSON"]


def test_redis_warning_escapes_the_error_text() -> None:
    store = RedisRateLimitStore(Clock(), connection=object(), fail_open=True)
    error = Failure(ConnectionError("reset\r\n2026-01-01 [x] forged\x1b[31m"))
    lines = logged(lambda: store._failed(error, "check"))
    assert len(lines) == 1
    assert_one_safe_line(lines[0])
    assert "failed: reset\\r\\n2026-01-01 [x] forged\\x1b[31m;" in lines[0]


# -- black box: the admin audit line ----------------------------------------------------------

_FORGED = "\r\n2026-01-01T00:00:00+0000 [twisted_gw.admin.app#info] admin DELETE everything"


def test_admin_audit_line_escapes_an_id_from_the_url_and_is_never_forged(tmp_path) -> None:
    gateway = start_gateway(tmp_path)
    tag = uuid.uuid4().hex[:8]
    ids = [f"crlf-{tag}{_FORGED}", f"esc-{tag}\x1b[31mred"]
    try:
        for n, id in enumerate(ids):
            doc = {"name": f"logsafe-{tag}-{n}", "model": "mock/x", "provider_config": {}}
            path = "/aisix/admin/models/" + quote(id, safe="")
            assert "%0D%0A" in path or "%1B%5B31m" in path
            status, body = gateway.admin_call("PUT", path, doc)
            assert status == 201, body
            assert body["key"] == f"/models/{id}"  # the id is what the URL said
        status, _ = gateway.admin_call("DELETE", "/aisix/admin/models/" + quote(ids[0], safe=""))
        assert status == 200
    finally:
        gateway.process.stop()  # every line is written once the process is gone

    lines = gateway.process.stdout.splitlines()  # split as any reader would: CR, LF, ...
    audit = [line for line in lines if tag in line]
    assert len(audit) == 3, audit  # PUT, PUT, DELETE: one line each, nothing else names them
    put_crlf, put_esc, delete_crlf = audit
    escaped = "\\r\\n2026-01-01T00:00:00+0000 [twisted_gw.admin.app#info] admin DELETE everything"
    assert put_crlf.endswith(
        f"[twisted_gw.admin.app#info] admin PUT /models/crlf-{tag}{escaped} -> 201 from 127.0.0.1"
    )
    assert put_esc.endswith(f"admin PUT /models/esc-{tag}\\x1b[31mred -> 201 from 127.0.0.1")
    assert delete_crlf.endswith(f"admin DELETE /models/crlf-{tag}{escaped} -> 200 from 127.0.0.1")
    for line in audit:
        assert_one_safe_line(line)
    assert not any(line.startswith("2026-01-01T00:00:00") for line in lines)
    assert not any("admin DELETE everything" in line and tag not in line for line in lines)
