"""HTTP header names and values as twisted.web's ``Headers`` stores them,
worked out once per name.

Why: ``Headers.setRawHeaders`` canonicalises every name and sanitises every
value on every call, a few Python calls per header. The gateway writes the
same handful of names on every request (its answers' own headers, the
hooks' ``x-ratelimit-*``, the upstream request's), so both the proxy
(:mod:`twisted_gw.proxy.headers`) and the providers' POST helper
(:mod:`twisted_gw.providers.http`) ask here instead: the result is exactly
what twisted.web would store, because twisted.web computes it the first
time a name is seen. Twisted only, like :mod:`twisted_gw.sse`.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

#: a header name as given (str or bytes, any case) -> twisted.web's spelling
#: (``x-request-id`` -> ``X-Request-Id``), filled by :func:`canonical`. Read
#: it for a lookup without a call; it stops growing at ``MAX_NAMES`` (names
#: come from code and config, a few dozen in practice), after which a new
#: name is still canonicalised, just not kept.
KNOWN: dict[str | bytes, bytes] = {}
MAX_NAMES = 1000


def canonical(name: str | bytes) -> bytes:
    """``name`` as twisted.web writes it; raises twisted.web's
    ``InvalidHeaderName`` for what is not an HTTP token."""
    found = KNOWN.get(name)
    if found is None:
        [(found, _)] = Headers({name: []}).getAllRawHeaders()
        if len(KNOWN) < MAX_NAMES:
            KNOWN[name] = found
    return found


def sanitized(value: bytes | str) -> bytes:
    """A header value as ``Headers.setRawHeaders`` stores it: UTF-8, every
    line break (CR, LF, CRLF) one space (its very expression: cheaper than
    testing ``b"\\r" in value``, which first tries the bytes as an int)."""
    if isinstance(value, str):
        value = value.encode("utf8")
    return b" ".join(value.splitlines())
