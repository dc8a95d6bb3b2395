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
