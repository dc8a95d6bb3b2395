"""The proxy's answer headers (twisted_gw.proxy.headers) and the channel's
one-piece head (GatewayChannel.writeHeaders) give exactly what twisted.web's
own setHeader and writeHeaders give: same header values, same bytes."""

from __future__ import annotations

import pytest
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers, InvalidHeaderName

from twisted_gw import headernames
from twisted_gw.headernames import canonical
from twisted_gw.proxy import headers as module
from twisted_gw.proxy.headers import set_answer_headers
from twisted_gw.site import GatewayChannel

LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "100",
    "x-ratelimit-remaining-requests": "99",
    "x-ratelimit-reset-requests": "1m5s",
    "x-ratelimit-limit-concurrent": "10",
    "x-gateway-budget-remaining": "0.25",
}
FIXED = ((b"content-type", b"application/json"), (b"x-request-id", b"gw-1"))


def by_twisted(fixed, extra) -> Headers:
    h = Headers({b"server": [b"TwistedWeb"], b"content-type": [b"text/html"]})
    for name, value in fixed:
        h.setRawHeaders(name, [value])
    for name, value in extra.items():
        h.setRawHeaders(name, [value])
    return h


def by_us(fixed, extra) -> Headers:
    h = Headers({b"server": [b"TwistedWeb"], b"content-type": [b"text/html"]})
    set_answer_headers(h, tuple((canonical(n), v) for n, v in fixed), extra)
    return h


def raw(h: Headers) -> list:
    return list(h.getAllRawHeaders())


@pytest.mark.parametrize("fast", [True, False], ids=["raw-slot", "setRawHeaders"])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        LIMIT_HEADERS,
        {"X-Custom": "caf\u00e9"},  # UTF-8, as twisted.web encodes a str
        {"x-hook": "a\r\nInjected: yes"},  # CR/LF: twisted.web's sanitiser, not ours
        {"x-hook": "one\ntwo"},
        {"x-bytes": b"raw\rvalue"},  # not a str: twisted.web's path
        {"Content-Type": "text/plain"},  # a hook replaces a fixed header, any case
    ],
)
def test_the_headers_equal_twisted_webs_own(monkeypatch, fast, extra):
    monkeypatch.setattr(module, "_RAW", fast)
    for _ in range(2):  # the first time learns the names, the second uses them
        assert raw(by_us(FIXED, extra)) == raw(by_twisted(FIXED, extra))


def test_a_value_with_a_line_break_never_writes_one():
    h = by_us((), {"x-hook": "a\r\nInjected: yes"})
    assert h.getRawHeaders(b"x-hook") == [b"a Injected: yes"]


def test_an_invalid_name_is_refused_as_twisted_web_refuses_it():
    for _ in range(2):
        with pytest.raises(InvalidHeaderName):
            by_us((), {"bad name": "x"})
    assert "bad name" not in headernames.KNOWN


def test_canonical_is_twisted_webs_spelling():
    assert canonical(b"x-request-id") == b"X-Request-Id"
    assert canonical("www-authenticate") == b"WWW-Authenticate"
    with pytest.raises(InvalidHeaderName):
        canonical(b"a b")


def test_the_name_cache_is_bounded(monkeypatch):
    saved = dict(headernames.KNOWN)
    headernames.KNOWN.clear()
    monkeypatch.setattr(headernames, "MAX_NAMES", 3)
    try:
        for i in range(10):
            set_answer_headers(Headers(), (), {f"x-h{i}": "v"})
        assert len(headernames.KNOWN) == 3
        h = Headers()
        set_answer_headers(h, (), {"x-h9": "v"})  # not cached: still set right
        assert h.getRawHeaders(b"x-h9") == [b"v"]
    finally:
        headernames.KNOWN.clear()
        headernames.KNOWN.update(saved)


def head_bytes(channel_class, headers) -> tuple[bytes, int]:
    channel = channel_class()
    transport = StringTransport()
    writes = []
    write = transport.write
    transport.write = lambda data: (writes.append(data), write(data))  # type: ignore[method-assign]
    seq = transport.writeSequence
    transport.writeSequence = lambda d: (writes.append(d), seq(d))  # type: ignore[method-assign]
    channel.makeConnection(transport)
    channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)
    return transport.value(), len(writes)


@pytest.mark.parametrize(
    "headers",
    [
        Headers({b"content-type": [b"application/json"], b"x-many": [b"1", b"2"]}),
        by_twisted(FIXED, LIMIT_HEADERS),
        Headers(),
        [(b"X-Pair", b"old\r\nstyle")],  # the old iterable of pairs: twisted.web's own path
    ],
)
def test_the_channel_writes_twisted_webs_head_bytes(headers):
    ours, writes = head_bytes(GatewayChannel, headers)
    theirs, _ = head_bytes(HTTPChannel, headers)
    assert ours == theirs
    assert ours.endswith(b"\r\n\r\n")
    if isinstance(headers, Headers):
        assert writes == 1  # one bytes, not a sequence of pieces
