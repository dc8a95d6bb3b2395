"""What etcd's v3 JSON gateway (``/v3/...``) puts on the wire, as Python values.

Why apart from the client: this is the part of :mod:`twisted_gw.config.etcd_client`
that is pure. etcd's JSON gateway writes keys and values in base64, 64-bit
integers as strings (and leaves zeros out), and errors as gRPC status codes;
here are those encodings, the results of each call decoded into frozen
dataclasses, the building blocks of a transaction, and the errors a caller
sees. Nothing here does I/O or knows about Twisted, so all of it can be
tested with plain data, without an etcd; the client only sends what these
build and decodes what comes back with them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

#: gRPC status codes etcd puts in its JSON errors
GRPC_INVALID_ARGUMENT = 3
GRPC_FAILED_PRECONDITION = 9
GRPC_UNAVAILABLE = 14
GRPC_UNAUTHENTICATED = 16


# -- errors ------------------------------------------------------------------


class EtcdError(Exception):
    """Something went wrong talking to etcd; ``str()`` is safe to show (no secrets)."""


class EtcdUnavailable(EtcdError):
    """No host answered within the budget; the message says what each one did."""


class EtcdServerError(EtcdError):
    """etcd answered with an error (``code`` is its gRPC status code, if any)."""

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    @property
    def invalid_token(self) -> bool:
        """The call needs a (new) token: expired, forgotten by a restart, or missing."""
        return is_token_problem(self.message) or self.code == GRPC_UNAUTHENTICATED

    @property
    def unavailable(self) -> bool:
        """etcd is up but cannot serve (no leader, overloaded): try another host."""
        return self.code == GRPC_UNAVAILABLE


class EtcdAuthError(EtcdServerError):
    """``user``/``password`` were refused."""


class EtcdCompacted(EtcdError):
    """A watch asked for revisions etcd has compacted away; reload everything."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept revision {compact_revision})")
        self.compact_revision = compact_revision


def is_token_problem(message: str) -> bool:
    """etcd's message says the call lacks a valid token (authenticate again)."""
    return "invalid auth token" in message or "user name is empty" in message


# -- wire values ---------------------------------------------------------------


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def b64(value: str | bytes) -> str:
    """A key or value as etcd's JSON carries it (``str`` is sent as UTF-8)."""
    return base64.b64encode(_bytes(value)).decode("ascii")


def _unb64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def int64(value: str | int | None) -> int:
    """etcd's JSON writes int64 as strings and omits zeros."""
    return int(value) if value else 0


def prefix_range_end(prefix: str | bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix``.

    etcd's rule: drop trailing 0xff bytes and increment the last byte; a
    prefix of only 0xff bytes (or empty) means "to the end of the keyspace"
    (``b"\\0"``)."""
    end = bytearray(_bytes(prefix))
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    """One stored key as etcd reports it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def from_json(cls, raw: dict) -> KeyValue:
        return cls(
            _unb64(raw.get("key")),
            _unb64(raw.get("value")),
            int64(raw.get("create_revision")),
            int64(raw.get("mod_revision")),
            int64(raw.get("version")),
        )


def _kv_or_none(raw: dict | None) -> KeyValue | None:
    return KeyValue.from_json(raw) if raw else None


def header_revision(raw: dict) -> int:
    """The store revision in an answer's ``header`` (0 when etcd left it out)."""
    return int64((raw.get("header") or {}).get("revision"))


@dataclass(frozen=True)
class RangeResult:
    """``revision`` is the store revision the read saw (the header's)."""

    revision: int
    kvs: tuple[KeyValue, ...]
    count: int

    @classmethod
    def from_json(cls, raw: dict) -> RangeResult:
        kvs = tuple(KeyValue.from_json(kv) for kv in raw.get("kvs") or ())
        return cls(header_revision(raw), kvs, int64(raw.get("count")))


@dataclass(frozen=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None

    @classmethod
    def from_json(cls, raw: dict) -> PutResult:
        return cls(header_revision(raw), _kv_or_none(raw.get("prev_kv")))


@dataclass(frozen=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...]

    @classmethod
    def from_json(cls, raw: dict) -> DeleteResult:
        prev = tuple(KeyValue.from_json(kv) for kv in raw.get("prev_kvs") or ())
        return cls(header_revision(raw), int64(raw.get("deleted")), prev)


@dataclass(frozen=True)
class TxnResult:
    """``responses`` are those of the branch that ran (success or failure)."""

    revision: int
    succeeded: bool
    responses: tuple[RangeResult | PutResult | DeleteResult, ...]

    @classmethod
    def from_json(cls, raw: dict) -> TxnResult:
        responses: list[RangeResult | PutResult | DeleteResult] = []
        for item in raw.get("responses") or ():
            if "response_range" in item:
                responses.append(RangeResult.from_json(item["response_range"]))
            elif "response_put" in item:
                responses.append(PutResult.from_json(item["response_put"]))
            elif "response_delete_range" in item:
                responses.append(DeleteResult.from_json(item["response_delete_range"]))
        return cls(header_revision(raw), bool(raw.get("succeeded")), tuple(responses))


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KeyValue


@dataclass(frozen=True)
class WatchResponse:
    """One message of a watch stream: events in revision order."""

    revision: int
    events: tuple[WatchEvent, ...]

    @classmethod
    def from_json(cls, raw: dict) -> WatchResponse:
        events = tuple(
            WatchEvent(ev.get("type") or "PUT", KeyValue.from_json(ev.get("kv") or {}))
            for ev in raw.get("events") or ()
        )
        return cls(header_revision(raw), events)


# -- transaction building blocks -------------------------------------------------

_TARGET_FIELDS = {
    "VERSION": "version",
    "CREATE": "create_revision",
    "MOD": "mod_revision",
    "VALUE": "value",
}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def compare(
    key: str | bytes,
    target: str,
    op: str,
    value: int | str | bytes,
    range_end: str | bytes | None = None,
) -> dict:
    """One txn compare: ``compare(key, "MOD", "<", 42)``.

    ``target`` is ``VERSION``, ``CREATE``, ``MOD`` or ``VALUE``; ``op`` is
    ``==``, ``!=``, ``<`` or ``>``. With ``range_end`` the compare must hold
    for every key in ``[key, range_end)`` (an empty range compares as a key
    with zero revisions)."""
    field = _TARGET_FIELDS[target]
    wire: dict[str, str] = {"key": b64(key), "target": target, "result": _RESULTS[op]}
    wire[field] = b64(value) if field == "value" else str(int(value))  # type: ignore[arg-type]
    if range_end is not None:
        wire["range_end"] = b64(range_end)
    return wire


def put_op(key: str | bytes, value: str | bytes, prev_kv: bool = False) -> dict:
    """A txn operation that puts ``value`` at ``key``."""
    return {"request_put": {"key": b64(key), "value": b64(value), "prev_kv": prev_kv}}


def range_op(key: str | bytes, range_end: str | bytes | None = None) -> dict:
    """A txn operation that reads ``key`` (or ``[key, range_end)``)."""
    req: dict[str, str] = {"key": b64(key)}
    if range_end is not None:
        req["range_end"] = b64(range_end)
    return {"request_range": req}


def delete_op(
    key: str | bytes, range_end: str | bytes | None = None, prev_kv: bool = False
) -> dict:
    """A txn operation that deletes ``key`` (or ``[key, range_end)``)."""
    req: dict[str, str | bool] = {"key": b64(key), "prev_kv": prev_kv}
    if range_end is not None:
        req["range_end"] = b64(range_end)
    return {"request_delete_range": req}


# -- answers -------------------------------------------------------------------


def server_error(status: int, answer: Any) -> EtcdServerError:
    """The error a non-200 answer stands for; ``answer`` is whatever JSON came
    back (etcd's ``{"message", "code"}``, or the gateway's ``{"error"}``)."""
    if not isinstance(answer, dict):
        answer = {}
    message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")
    code = answer.get("code")
    return EtcdServerError(message, code if isinstance(code, int) else None, status)


__all__ = [
    "GRPC_FAILED_PRECONDITION",
    "GRPC_INVALID_ARGUMENT",
    "GRPC_UNAUTHENTICATED",
    "GRPC_UNAVAILABLE",
    "DeleteResult",
    "EtcdAuthError",
    "EtcdCompacted",
    "EtcdError",
    "EtcdServerError",
    "EtcdUnavailable",
    "KeyValue",
    "PutResult",
    "RangeResult",
    "TxnResult",
    "WatchEvent",
    "WatchResponse",
    "b64",
    "compare",
    "delete_op",
    "header_revision",
    "int64",
    "is_token_problem",
    "prefix_range_end",
    "put_op",
    "range_op",
    "server_error",
]
