"""Reading the client's key from ``Authorization`` (CONTRACT 4.1)."""

from __future__ import annotations

from twisted_gw.config.entities import ApiKey
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.errors import invalid_api_key, missing_api_key


def bearer_token(header: bytes | None) -> str | None:
    """The key in an Authorization value: a case-insensitive ``Bearer `` prefix
    is stripped, else the whole value is the key. None when absent."""
    if header is None:
        return None
    value = header.decode("latin-1").strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value


def authenticate(snapshot: Snapshot, header: bytes | None) -> ApiKey:
    """The ApiKey for this header, or the 401 GatewayError of the contract."""
    token = bearer_token(header)
    if token is None:
        raise missing_api_key()
    api_key = snapshot.keys_by_key.get(token)
    if api_key is None:
        raise invalid_api_key()
    return api_key
