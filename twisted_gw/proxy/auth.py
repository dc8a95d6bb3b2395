"""Reading the client's key from ``Authorization``, else ``x-api-key`` (CONTRACT 4.1,
CONTRACT-NEXT 0)."""

from __future__ import annotations

from collections.abc import Sequence

from twisted_gw.config.entities import ApiKey
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.errors import invalid_api_key, missing_api_key, multiple_authorization_headers


def bearer_token(header: bytes | None) -> str | None:
    """The key in an Authorization value: a case-insensitive ``Bearer `` prefix
    is stripped, else the whole value is the key. None when absent."""
    if header is None:
        return None
    value = header.decode("latin-1").strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value


def authenticate(
    snapshot: Snapshot,
    header: Sequence[bytes] | bytes | None,
    x_api_key: Sequence[bytes] | None = None,
) -> ApiKey:
    """The ApiKey for this request, or the GatewayError of the contract.

    ``header`` is every Authorization value of the request, as
    ``request.requestHeaders.getRawHeaders(b"authorization")`` gives them
    (a single ``bytes`` value is taken too); without one, the ``x-api-key``
    values (CONTRACT-NEXT 0: Anthropic's SDKs send their key there), taken
    whole. Two or more are a 400 **[beyond]**: a proxy in front of the
    gateway may have read the other one."""
    if not header and x_api_key:
        if len(x_api_key) > 1:
            raise multiple_authorization_headers()
        token = x_api_key[0].decode("latin-1").strip()
        api_key = snapshot.keys_by_key.get(token)
        if api_key is None:
            raise invalid_api_key()
        return api_key
    if header is not None and not isinstance(header, bytes):
        if len(header) > 1:
            raise multiple_authorization_headers()
        header = header[0] if header else None
    token = bearer_token(header)
    if token is None:
        raise missing_api_key()
    api_key = snapshot.keys_by_key.get(token)
    if api_key is None:
        raise invalid_api_key()
    return api_key
