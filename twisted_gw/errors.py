"""One error type for every failure a client can see.

A ``GatewayError`` raised anywhere in the proxy becomes the OpenAI-shaped JSON
body of CONTRACT 4.1 in exactly one place (:func:`GatewayError.body`), so the
status, code, type and message of each case live next to each other here.
"""

from __future__ import annotations

import json


def _type_for(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class GatewayError(Exception):
    """A failure with the exact status/code/message the contract gives it."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        reason: str = "rejected",
        outcome: str | int | None = None,
        retry_after: str | None = None,
        log_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type or _type_for(status)
        #: extra response headers (e.g. ``Retry-After``)
        self.headers = headers or {}
        #: how the request ended, for the access log (CONTRACT 4.6)
        self.reason = reason
        #: for an upstream attempt that failed, its reason in routing's terms
        #: (CONTRACT 5.1): ``connect``, ``timeout``, ``auth`` or the upstream's
        #: status; None: the status this error answers with
        self.outcome = outcome
        #: the upstream's ``Retry-After`` (a 429 or 503), as it came
        self.retry_after = retry_after
        #: the status of the upstream answer this error reports, if one did
        self.upstream_status: int | None = None
        #: the access log's ``error=`` (CONTRACT 5.4): the code, or a name
        #: where the wire's code is null (the two 401s), else the type
        self.log_code = log_code or code or self.type

    @property
    def attempt_outcome(self) -> str | int:
        """What routing calls this failure (see :attr:`outcome`)."""
        return self.status if self.outcome is None else self.outcome

    def body(self, message: str | None = None) -> bytes:
        """The OpenAI error body of CONTRACT 4.1 (``message`` instead of the
        error's own, e.g. with secrets redacted)."""
        return json.dumps(
            {
                "error": {
                    "message": self.message if message is None else message,
                    "type": self.type,
                    "param": None,
                    "code": self.code,
                }
            }
        ).encode()

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.code!r}, {self.message!r})"


# Constructors for the rows of CONTRACT 4.1, so the texts are written once.


def missing_api_key() -> GatewayError:
    return GatewayError(401, "Missing API key in request", log_code="missing_api_key")


def invalid_api_key() -> GatewayError:
    return GatewayError(401, "Invalid API key", log_code="invalid_api_key")


def invalid_json(parser_text: str) -> GatewayError:
    return GatewayError(400, f"Failed to parse JSON: {parser_text}", "invalid_json")


def model_not_found(name: str) -> GatewayError:
    return GatewayError(400, f"Model '{name}' not found", "model_not_found")


def model_access_forbidden(name: str) -> GatewayError:
    return GatewayError(403, f"Access to model '{name}' is forbidden", "model_access_forbidden")


def budget_exceeded(
    key_id: str, period: str, limit: str, remaining: str, cost: str, headers: dict[str, str]
) -> GatewayError:
    """An API key's budget cannot hold this request's worst-case cost (issue
    17); the amounts are USD as ``x-budget-remaining-usd`` writes them."""
    return GatewayError(
        429,
        f"Budget exceeded for API key ID: {key_id}. Limited on {period} budget, current limit:"
        f" {limit} USD, remaining: {remaining} USD, this request may cost up to {cost} USD",
        "budget_exceeded",
        headers=headers,
    )


def model_price_missing(name: str, key_id: str, headers: dict[str, str]) -> GatewayError:
    """A key with a budget asked for a model (or a deployment of it) without a
    price: refused, never counted as free (issue 17)."""
    return GatewayError(
        403,
        f"Model '{name}' has no pricing; API key ID: {key_id} has a budget and may only use"
        " priced models",
        "model_price_missing",
        headers=headers,
    )


def request_timeout() -> GatewayError:
    return GatewayError(
        504, "Provider request timed out", "request_timeout", reason="timeout", outcome="timeout"
    )


def provider_error(what: str, outcome: str | int | None = None) -> GatewayError:
    """A 502; ``outcome`` says what failed for routing (``connect`` when the
    upstream could not be reached or its answer was cut)."""
    return GatewayError(
        502, f"Provider error: {what}", "provider_error", reason="upstream_error", outcome=outcome
    )


def provider_credentials_rejected(status: int) -> GatewayError:
    return provider_error(f"upstream rejected the provider credentials ({status})", "auth")


def unsupported_endpoint(name: str, endpoint: str) -> GatewayError:
    return GatewayError(400, f"Model '{name}' does not support {endpoint}", "unsupported_endpoint")


def request_too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body exceeds {limit} bytes", "request_too_large")


def internal_error() -> GatewayError:
    """A bug of ours, not the client's or the upstream's: logged with its traceback."""
    return GatewayError(500, "Internal server error", "internal_error", reason="upstream_error")


def not_found() -> GatewayError:
    return GatewayError(404, "Not found", "not_found")


def method_not_allowed() -> GatewayError:
    return GatewayError(405, "Method not allowed", "method_not_allowed")


# Refusals of the HTTP layer (twisted_gw.site) and of auth **[beyond]**: the
# site writes them in its listener's shape (the admin's is ``error_msg``).


def multiple_authorization_headers() -> GatewayError:
    """Two Authorization headers: a front proxy may have read the other one."""
    return GatewayError(400, "Multiple Authorization headers", "invalid_request")


def invalid_url() -> GatewayError:
    return GatewayError(400, "Request path is not valid UTF-8", "invalid_request")


def bad_request() -> GatewayError:
    return GatewayError(400, "Malformed HTTP request", "invalid_request")


def headers_too_large() -> GatewayError:
    return GatewayError(431, "Request header fields too large", "request_header_fields_too_large")


def headers_too_slow(seconds: float) -> GatewayError:
    return GatewayError(
        408, f"Request headers not received within {seconds:g} seconds", "header_timeout"
    )


def too_many_connections() -> GatewayError:
    return GatewayError(503, "Too many connections", "too_many_connections")


def invalid_host() -> GatewayError:
    return GatewayError(400, "Invalid Host header", "invalid_request")
