"""CORS for one listener (CONTRACT 5.6), applied by the site before any route.

A request whose ``Origin`` is allowed gets ``Access-Control-Allow-Origin``
(the origin itself, ``"*"`` configured or not, so a page that sends
credentials works too) and ``Vary: Origin`` in its response headers before
the route runs; whatever then answers it (a route, a 401, a 413, a 5xx, an
SSE stream, a health probe) sends them with its first byte. An ``OPTIONS``
with ``Access-Control-Request-Method`` from such an origin is a preflight:
204 with the methods, headers and max age, no auth, no route, no hook.

A request without ``Origin``, or from an origin not allowed, is left as it
came: no CORS header, and a preflight is then an ordinary ``OPTIONS`` (401 on
the proxy, like any request without a key). The browser enforces the answer;
the gateway does not refuse a method or a header itself. Answers other than
a preflight also expose the gateway's own headers (``EXPOSED``: the request
id, attempts, rate-limit and budget headers, ``Retry-After``) to the page.

Responses the channel writes before a request's head is complete (431, 408,
a malformed request's 400, the connection cap's 503) carry no CORS header:
the origin is not known then.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.web.server import Request

from twisted_gw.config.file import CorsConfig

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"
_ALLOW_ORIGIN = b"access-control-allow-origin"
_VARY = [b"Origin"]
#: the gateway's own response headers a page may read (a browser shows a
#: cross-origin page only the CORS-safelisted ones unless they are exposed):
#: the request id to quote in a report, routing, rate-limit and budget state
EXPOSED = ", ".join(
    [
        "x-request-id",
        "x-gateway-attempts",
        *(
            f"x-ratelimit-{what}-{group}"
            for group in ("requests", "tokens")
            for what in ("limit", "remaining", "reset")
        ),
        "x-ratelimit-limit-concurrent",
        "x-ratelimit-remaining-concurrent",
        "x-budget-remaining-usd",
        "retry-after",
    ]
)
_EXPOSE = [EXPOSED.encode()]


class CorsPolicy:
    """One listener's CORS policy; ``methods`` are its routes' methods."""

    def __init__(self, config: CorsConfig, methods: Iterable[str]) -> None:
        origins = config.allow_origins
        self.any_origin = "*" in origins
        self.origins = frozenset(o.encode("ascii", "replace") for o in origins if o != "*")
        self.echo_headers = "*" in config.allow_headers
        headers = ", ".join(h for h in config.allow_headers if h != "*")
        self._preflight = [
            (b"access-control-allow-methods", ", ".join(methods).encode()),
            (b"access-control-max-age", b"%d" % config.max_age),
        ]
        if headers and not self.echo_headers:
            self._preflight.append((b"access-control-allow-headers", headers.encode()))
        self._allow_headers = headers.encode()

    def allowed(self, origin: bytes) -> bool:
        """Whether a page of ``origin`` (the header's value) may read the answers."""
        return self.any_origin or origin.lower() in self.origins

    def apply(self, request: Request) -> bool:
        """Mark the response of an allowed origin; True when this answered it (a preflight)."""
        origins = request.requestHeaders.getRawHeaders(_ORIGIN)
        if not origins or not self.allowed(origins[-1]):
            return False
        response = request.responseHeaders
        response.setRawHeaders(_ALLOW_ORIGIN, [origins[-1]])
        response.setRawHeaders(b"vary", _VARY)
        if request.method != b"OPTIONS" or not request.requestHeaders.hasHeader(_REQUEST_METHOD):
            response.setRawHeaders(b"access-control-expose-headers", _EXPOSE)
            return False
        for name, value in self._preflight:
            response.setRawHeaders(name, [value])
        if self.echo_headers:
            asked = request.requestHeaders.getRawHeaders(_REQUEST_HEADERS)
            allow = b", ".join(filter(None, [self._allow_headers, *(asked or ())]))
            if allow:
                response.setRawHeaders(b"access-control-allow-headers", [allow])
        request.setResponseCode(204)
        request.finish()
        return True
