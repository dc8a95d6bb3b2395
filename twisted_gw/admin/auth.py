"""Admin API auth (CONTRACT 3): Authorization decides when present, else x-api-key."""

from __future__ import annotations

import hmac
from collections.abc import Sequence


def admin_token(authorization: bytes | None, x_api_key: bytes | None) -> bytes | None:
    """The presented admin key, or None when neither header is there."""
    if authorization is not None:
        value = authorization.strip()
        if value[:7].lower() == b"bearer ":
            value = value[7:].strip()
        return value
    return x_api_key


def check_admin_key(token: bytes | None, keys: Sequence[bytes]) -> str | None:
    """None when ``token`` is one of ``keys``, else the 401 error_msg.

    Every configured key is compared, in constant time, so neither which key
    matched nor how much of it did shows in the timing **[beyond]**."""
    if not token or not keys:  # CONTRACT 1: no admin key configured -> always 401
        return "Missing API key"
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token, key)
    return None if ok else "Invalid API key"


def authorize(
    authorization: Sequence[bytes] | None,
    x_api_key: Sequence[bytes] | None,
    keys: Sequence[bytes],
) -> tuple[int, str] | None:
    """None when the request may pass, else ``(status, error_msg)``.

    The headers are every value of each, as ``getRawHeaders`` gives them.
    Either header twice is a 400 **[beyond]** (a proxy in front may have read
    the other value); then the 401s of :func:`check_admin_key`."""
    if authorization is not None and len(authorization) > 1:
        return 400, "Multiple Authorization headers"
    if x_api_key is not None and len(x_api_key) > 1:
        return 400, "Multiple x-api-key headers"
    token = admin_token(
        authorization[0] if authorization else None, x_api_key[0] if x_api_key else None
    )
    problem = check_admin_key(token, keys)
    return None if problem is None else (401, problem)
