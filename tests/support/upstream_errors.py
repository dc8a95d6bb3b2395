"""The upstream-error table of CONTRACT 4.1, as test data: what an
openai-compatible upstream answers and what the gateway's client is told.

Every row runs in memory (tests/test_pipeline_errors.py); the black-box suite
(tests/test_proxy.py) runs a few of them against the real process.
"""

from __future__ import annotations

from typing import Any

import pytest


def upstream_error(message: str, code: str | None = None) -> dict[str, Any]:
    """An openai-style error body, as an upstream answers it."""
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


#: (upstream status, upstream answer, client status, error code, error message);
#: an answer of ``None`` is an HTML error page, not JSON
UPSTREAM_ERROR_ROWS: list[tuple[int, dict[str, Any] | None, int, str, str]] = [
    (
        500,
        upstream_error("boom"),
        502,
        "provider_error",
        "Provider error: upstream returned status 500: boom",
    ),
    (503, None, 502, "provider_error", "Provider error: upstream returned status 503"),
    (
        400,
        upstream_error("bad temperature", "invalid_value"),
        400,
        "invalid_value",
        "bad temperature",
    ),
    (404, upstream_error("no such model"), 404, "provider_error", "no such model"),
    (
        429,
        upstream_error("slow down", "rate_limit_exceeded"),
        429,
        "rate_limit_exceeded",
        "slow down",
    ),
    (
        401,
        upstream_error("Incorrect API key provided"),
        502,
        "provider_error",
        "Provider error: upstream rejected the provider credentials (401)",
    ),
    (
        403,
        upstream_error("forbidden"),
        502,
        "provider_error",
        "Provider error: upstream rejected the provider credentials (403)",
    ),
]


def upstream_error_table(*statuses: int) -> pytest.MarkDecorator:
    """Parametrize a test with the table's rows (those of ``statuses`` only,
    in the table's order, when given) as ``status, answer, expected_status,
    expected_code, expected_message``."""
    rows = [row for row in UPSTREAM_ERROR_ROWS if not statuses or row[0] in statuses]
    return pytest.mark.parametrize(
        "status, answer, expected_status, expected_code, expected_message", rows
    )


def expected_error_type(client_status: int) -> str:
    """The error ``type`` the client is told along with a mapped status."""
    return {429: "rate_limit_error", 502: "server_error"}.get(
        client_status, "invalid_request_error"
    )
