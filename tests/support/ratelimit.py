"""What a client of the rate limiter is told (CONTRACT 4.5): the 429 error
objects, ``Retry-After`` and the ``x-ratelimit-reset-*`` durations.

Shared by the in-memory suite (tests/test_pipeline_limits.py) and the
black-box one (tests/test_ratelimit_blackbox.py), so both pin the same texts.
"""

from __future__ import annotations

import re
from typing import Any

#: an ``x-ratelimit-reset-*`` value: ``1m30s``, ``45s``, ``2m``
RESET = re.compile(r"^(\d+m)?(\d+s)?$")


def window_429(scope: str, id: str, kind: str, limit: int) -> dict[str, Any]:
    """The error object of a request refused by a key's or a model's window."""
    label = "API key ID" if scope == "key" else "model ID"
    return {
        "message": f"Rate limit exceeded for {label}: {id}. "
        f"Limited on {kind}, current limit: {limit}, remaining: 0",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def concurrency_429(id: str, limit: int = 1) -> dict[str, Any]:
    """The error object of a request refused for want of a concurrency slot."""
    return {
        "message": f"Concurrency limit exceeded for resource ID: {id}. "
        f"Limit: {limit}, current: {limit}",
        "type": "rate_limit_error",
        "param": None,
        "code": "concurrency_limit_exceeded",
    }


def assert_retry_after(headers: dict[str, str], window: int = 60) -> None:
    value = headers.get("retry-after")
    assert value is not None and value.isdigit(), headers  # whole seconds
    assert 0 <= int(value) <= window


def reset_seconds(value: str) -> int:
    """An ``x-ratelimit-reset-*`` value in seconds."""
    match = RESET.match(value)
    assert value and match, f"bad reset duration {value!r}"
    minutes, seconds = match.groups()
    return int((minutes or "0m")[:-1]) * 60 + int((seconds or "0s")[:-1])
