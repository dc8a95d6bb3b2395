"""CONTRACT 5.6, black-box: CORS on both listeners of the real process.

For an allowed ``Origin``: a preflight is 204 without auth, with the origin,
the listener's methods, the allowed headers and the max age; every other
answer (a 200, a 401, a 404, an SSE stream, a probe) carries
``Access-Control-Allow-Origin`` and ``Vary: Origin``. Other origins, and
requests without one, get no CORS header, and their preflight is an ordinary
request (401 without a key). With ``cors`` absent nothing changes."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.conftest import Gateway, secret, start_gateway
from tests.support.gateway import http, treq_stream
from twisted_gw.cors import EXPOSED

CHAT = "/v1/chat/completions"
APP = "https://app.example"
#: what every answer (not a preflight) to an allowed origin carries
ANSWER_HEADERS = {
    "access-control-allow-origin": APP,
    "vary": "Origin",
    "access-control-expose-headers": EXPOSED,
}
CORS_HEADERS = ("access-control-allow-origin", "vary")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    cors = {
        "proxy": {"cors": {"allow_origins": ["https://App.example", "http://localhost:5173"]}},
        "admin": {
            "cors": {"allow_origins": ["*"], "allow_headers": ["*"], "max_age": 60},
        },
    }
    gateway = start_gateway(tmp_path_factory.mktemp("cors"), extra={"server": cors})
    yield gateway
    assert gateway.process.stop() == 0


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    gateway = start_gateway(tmp_path_factory.mktemp("no-cors"))
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    async def setup() -> str:
        await gw.add_model("echo", "mock/echo", {})
        return await gw.add_key(["echo"], key=secret())

    return pytest_twisted.blockon(defer.ensureDeferred(setup()))


def preflight(base: str, path: str, origin: str, **headers: str):
    asked = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
        **headers,
    }
    return http("OPTIONS", base + path, headers=asked)


def cors_of(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("access-control-") or k == "vary"}


# -- preflights -----------------------------------------------------------------------------


def test_a_preflight_from_an_allowed_origin_is_204_without_auth_on_the_proxy(gw):
    status, headers, body = preflight(gw.proxy, CHAT, APP)
    assert (status, body) == (204, b"")
    assert cors_of(headers) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "600",
        "vary": "Origin",
    }
    # another allowed origin is named as itself
    _, headers, _ = preflight(gw.proxy, "/v1/models", "http://localhost:5173")
    assert headers["access-control-allow-origin"] == "http://localhost:5173"


def test_a_preflight_on_the_admin_listener_with_star_allows_any_origin(gw):
    origin = "https://ops.example:8443"
    status, headers, _ = preflight(
        gw.admin, "/aisix/admin/models", origin, **{"Access-Control-Request-Method": "PUT"}
    )
    assert status == 204
    assert cors_of(headers) == {
        "access-control-allow-origin": origin,  # the origin itself, even for "*"
        "access-control-allow-methods": "DELETE, GET, POST, PUT",
        "access-control-allow-headers": "authorization, content-type",  # "*": what it asked
        "access-control-max-age": "60",
        "vary": "Origin",
    }


def test_a_preflight_from_another_origin_is_an_ordinary_request(gw):
    status, headers, body = preflight(gw.proxy, CHAT, "https://evil.example")
    assert status == 401  # no key: as any proxy request
    assert json.loads(body)["error"]["message"] == "Missing API key in request"
    assert cors_of(headers) == {}
    status, headers, _ = http("OPTIONS", gw.proxy + CHAT, headers={"Origin": APP})
    assert status == 401  # without Access-Control-Request-Method it is no preflight
    assert headers["access-control-allow-origin"] == APP


# -- every other answer -----------------------------------------------------------------------


def test_answers_to_an_allowed_origin_carry_the_origin_and_vary(gw, key):
    origin = {"Origin": APP}
    for method, path, headers, expected in [
        ("GET", "/v1/models", {}, 401),
        ("GET", "/v1/models", {"Authorization": f"Bearer {key}"}, 200),
        ("GET", "/v1/nope", {"Authorization": f"Bearer {key}"}, 404),
        ("GET", "/readyz", {}, 200),
    ]:
        status, answer, _ = http(method, gw.proxy + path, headers={**origin, **headers})
        assert status == expected, path
        assert cors_of(answer) == ANSWER_HEADERS, path
    status, answer, _ = http("GET", gw.admin + "/aisix/admin/models", headers=origin)
    assert status == 401
    assert cors_of(answer) == ANSWER_HEADERS
    status, answer, _ = http(
        "POST",
        gw.proxy + CHAT,
        headers={**origin, "Authorization": f"Bearer {key}"},
        json_body={"model": "echo", "messages": "not a list"},
    )
    assert status == 400 and answer["access-control-allow-origin"] == APP


def test_other_origins_and_requests_without_one_get_no_cors_headers(gw, key):
    auth = {"Authorization": f"Bearer {key}"}
    for headers in ({"Origin": "https://evil.example"}, {}, {"Origin": "null"}):
        status, answer, _ = http("GET", gw.proxy + "/v1/models", headers={**auth, **headers})
        assert status == 200 and cors_of(answer) == {}, headers


@pytest_twisted.ensureDeferred
async def test_a_stream_to_an_allowed_origin_carries_the_origin_and_vary(gw, key):
    result = await treq_stream(
        "POST",
        gw.proxy + CHAT,
        headers={"Origin": APP, "Authorization": f"Bearer {key}"},
        json_body={"model": "echo", "stream": True, "messages": [{"role": "user", "content": "a"}]},
    )
    assert result.status == 200 and result.headers["content-type"] == "text/event-stream"
    assert cors_of(result.headers) == ANSWER_HEADERS
    assert result.data[-1] == "[DONE]"


# -- off by default ---------------------------------------------------------------------------


def test_without_cors_nothing_changes(plain):
    status, headers, body = preflight(plain.proxy, CHAT, APP)
    assert status == 401 and cors_of(headers) == {}
    assert json.loads(body)["error"]["message"] == "Missing API key in request"
    status, headers, _ = preflight(plain.admin, "/aisix/admin/models", APP)
    assert status == 401 and cors_of(headers) == {}
    status, headers, _ = http("GET", plain.proxy + "/v1/models", headers={"Origin": APP})
    assert status == 401 and cors_of(headers) == {}
