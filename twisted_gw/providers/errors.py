"""Map an upstream's error answer to the contract's error (CONTRACT 4.1).

Pure: a status and body in, a GatewayError out. Provider and client secrets
that an upstream might echo back ("Incorrect API key provided: sk-...") are
cut out before any text reaches a client or a log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from twisted.web.http_headers import Headers

from twisted_gw.errors import GatewayError, provider_credentials_rejected, provider_error


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret with ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _upstream_error(body: bytes) -> tuple[str | None, str | None]:
    """(message, code) from an OpenAI- or Anthropic-shaped error body, if any."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    err = doc.get("error", doc)
    if isinstance(err, str):
        return err, None
    if not isinstance(err, dict):
        return None, None
    message = err.get("message")
    code = err.get("code")  # CONTRACT 4.1: the upstream's code, else provider_error
    return (
        message if isinstance(message, str) else None,
        code if isinstance(code, str) else None,
    )


def map_upstream_status(
    status: int,
    body: bytes,
    secrets: Iterable[str | None] = (),
    retry_after: str | None = None,
) -> GatewayError:
    """The error a client sees for an upstream non-2xx answer; routing reads
    the upstream's status (its ``outcome``) and ``Retry-After`` from it."""
    secrets = tuple(secrets)
    if status in (401, 403):
        error = provider_credentials_rejected(status)
        error.upstream_status = status
        return error
    message, code = _upstream_error(body)
    if 400 <= status < 500:
        text = redact(message or f"upstream returned status {status}", secrets)
        error = GatewayError(
            status, text, code or "provider_error", reason="upstream_error", outcome=status
        )
    else:
        detail = f"upstream returned status {status}"
        if message:
            detail += f": {message}"
        error = provider_error(redact(detail, secrets), status)
    if status in (429, 503):
        error.retry_after = retry_after
    error.upstream_status = status
    return error


def retry_after_of(headers: Headers) -> str | None:
    """An upstream answer's ``Retry-After`` header, if it sent one."""
    values = headers.getRawHeaders(b"retry-after")
    return values[0].decode("latin-1")[:64] if values else None
