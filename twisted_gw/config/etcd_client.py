"""A small etcd v3 client over treq, against etcd's JSON gateway (``/v3/...``).

Why our own: no maintained Twisted-native etcd v3 client exists (txaioetcd's
last release is from 2018; the others are asyncio or gRPC). etcd serves the
whole v3 API as JSON over HTTP (``/v3/kv/range``, ``/v3/kv/put``,
``/v3/kv/deleterange``, ``/v3/kv/txn``, ``/v3/watch`` as a stream of JSON
lines, ``/v3/auth/authenticate``), with keys and values in base64 and 64-bit
integers as strings; this module speaks exactly that and nothing else, so the
store on top of it (:mod:`twisted_gw.config.etcd_store`) reads like etcd's API.

What it guarantees:

- **Bounded calls.** Every unary call (and the opening of a watch) finishes
  within ``timeout`` seconds overall, however many hosts it tries: it answers,
  or fails with :class:`EtcdUnavailable`. Nothing waits on a dead etcd.
- **Fail-over.** Hosts are tried in order, starting with the last one that
  answered. A host that cannot be reached (refused, DNS, connect timeout, TLS
  failure, connection dropped before an answer, or etcd's own "unavailable"
  errors such as ``no leader``) is skipped for the next one; each connect
  attempt gets ``timeout / len(hosts)`` so one black-holed host cannot eat the
  whole budget. A request that was dropped before its answer may be replayed
  on the next host: etcd's puts and deletes are idempotent, and a replayed
  transaction only fails its compares (callers of :meth:`EtcdClient.txn`
  re-read and decide again).
- **Auth.** With ``user``/``password``, a token from ``/v3/auth/authenticate``
  is sent as the ``Authorization`` header; when etcd says the token is invalid
  (it expired, or etcd restarted and forgot it) the client authenticates again
  once and replays the call. A server with auth disabled is used without a
  token.
- **One connection pool** for everything, persistent, never retried behind
  our back (``retryAutomatically`` off: the fail-over above decides).
- http and https hosts; for https the server certificate is checked against
  the system trust store, or a given trust root (``tls_policy``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS

from twisted_gw._outbound import (
    EndpointFactory,
    FailureWords,
    close_connection,
    connection_pool,
    describe_failure,
    http_client,
    is_cancellation,
    read_body,
    tls_policy,
)

log = Logger()

_T = TypeVar("_T")

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
        return _is_token_problem(self.message) or self.code == GRPC_UNAUTHENTICATED

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


def _is_token_problem(message: str) -> bool:
    return "invalid auth token" in message or "user name is empty" in message


# -- wire values ---------------------------------------------------------------


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _b64(value: str | bytes) -> str:
    return base64.b64encode(_bytes(value)).decode("ascii")


def _unb64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _int(value: Any) -> int:
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
            _int(raw.get("create_revision")),
            _int(raw.get("mod_revision")),
            _int(raw.get("version")),
        )


def _kv_or_none(raw: dict | None) -> KeyValue | None:
    return KeyValue.from_json(raw) if raw else None


def _revision(raw: dict) -> int:
    return _int((raw.get("header") or {}).get("revision"))


@dataclass(frozen=True)
class RangeResult:
    """``revision`` is the store revision the read saw (the header's)."""

    revision: int
    kvs: tuple[KeyValue, ...]
    count: int

    @classmethod
    def from_json(cls, raw: dict) -> RangeResult:
        kvs = tuple(KeyValue.from_json(kv) for kv in raw.get("kvs") or ())
        return cls(_revision(raw), kvs, _int(raw.get("count")))


@dataclass(frozen=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None

    @classmethod
    def from_json(cls, raw: dict) -> PutResult:
        return cls(_revision(raw), _kv_or_none(raw.get("prev_kv")))


@dataclass(frozen=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...]

    @classmethod
    def from_json(cls, raw: dict) -> DeleteResult:
        prev = tuple(KeyValue.from_json(kv) for kv in raw.get("prev_kvs") or ())
        return cls(_revision(raw), _int(raw.get("deleted")), prev)


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
        return cls(_revision(raw), bool(raw.get("succeeded")), tuple(responses))


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
        return cls(_revision(raw), events)


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
    wire: dict[str, Any] = {"key": _b64(key), "target": target, "result": _RESULTS[op]}
    wire[field] = _b64(value) if field == "value" else str(int(value))  # type: ignore[arg-type]
    if range_end is not None:
        wire["range_end"] = _b64(range_end)
    return wire


def put_op(key: str | bytes, value: str | bytes, prev_kv: bool = False) -> dict:
    """A txn operation that puts ``value`` at ``key``."""
    return {"request_put": {"key": _b64(key), "value": _b64(value), "prev_kv": prev_kv}}


def range_op(key: str | bytes, range_end: str | bytes | None = None) -> dict:
    """A txn operation that reads ``key`` (or ``[key, range_end)``)."""
    req: dict[str, Any] = {"key": _b64(key)}
    if range_end is not None:
        req["range_end"] = _b64(range_end)
    return {"request_range": req}


def delete_op(
    key: str | bytes, range_end: str | bytes | None = None, prev_kv: bool = False
) -> dict:
    """A txn operation that deletes ``key`` (or ``[key, range_end)``)."""
    req: dict[str, Any] = {"key": _b64(key), "prev_kv": prev_kv}
    if range_end is not None:
        req["range_end"] = _b64(range_end)
    return {"request_delete_range": req}


# -- transport -----------------------------------------------------------------


#: how a transport failure reads in EtcdUnavailable's message (hosts only, no secrets)
_WORDS = FailureWords(
    refused="connection refused",
    dns="DNS lookup failed",
    timed_out="connect timed out",
    connect="cannot connect ({error})",
    tls="TLS failure ({error})",
    no_response="connection lost before an answer",
    lost="connection lost before an answer",
    other=None,
)


class _HostFailed(Exception):
    """This host could not be used for this call; try the next one."""


class _Expired(Exception):
    """The call's deadline passed."""


def _describe(failure: Failure) -> str:
    """A short phrase for a transport failure (no secrets: hosts only)."""
    return describe_failure(failure, _WORDS)


class _JSONLines(Protocol):
    """Splits a streamed body into JSON objects, one per line (etcd's watch)."""

    def __init__(self, on_message: Callable[[dict], None], on_lost: Callable[[Failure], None]):
        self._buffer = b""
        self._on_message = on_message
        self._on_lost = on_lost
        self.aborted = False

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer and not self.aborted:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = {"error": {"message": f"undecodable watch message: {line[:200]!r}"}}
            self._on_message(message)

    def abort(self) -> None:
        self.aborted = True
        close_connection(self.transport)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._on_lost(reason)


class Watch:
    """A live watch stream (see :meth:`EtcdClient.watch`).

    ``revision`` is the store revision when etcd created it; ``done`` fires
    with None after :meth:`cancel`, or fails when the stream ends any other way
    (:class:`EtcdUnavailable` when the connection is lost,
    :class:`EtcdServerError` when etcd cancels it), so a caller awaiting it
    always learns that it must watch again."""

    def __init__(self, on_response: Callable[[WatchResponse], None]) -> None:
        self.revision = 0
        self.done: Deferred[None] = Deferred()
        self._on_response = on_response
        self._protocol: _JSONLines | None = None
        self._cancelled = False

    def cancel(self) -> None:
        """Stop watching: drop the stream; ``done`` fires with None."""
        self._cancelled = True
        if self._protocol is not None:
            self._protocol.abort()
        if not self.done.called:
            self.done.callback(None)

    def _finish(self, error: EtcdError | None) -> None:
        if self._protocol is not None:
            self._protocol.abort()
        if self.done.called:
            return
        if error is None or self._cancelled:
            self.done.callback(None)
        else:
            self.done.errback(Failure(error))

    def _message(self, message: dict) -> None:
        if self.done.called:
            return
        if "error" in message:
            error = message["error"] or {}
            self._finish(
                EtcdServerError(str(error.get("message") or error), error.get("grpc_code"))
            )
            return
        result = message.get("result") or {}
        if result.get("canceled"):
            compact = _int(result.get("compact_revision"))
            reason = result.get("cancel_reason") or "watch canceled by etcd"
            self._finish(EtcdCompacted(compact) if compact else EtcdServerError(reason))
            return
        if result.get("events"):
            try:
                self._on_response(WatchResponse.from_json(result))
            except Exception:  # noqa: BLE001 - our handler's bug must not kill the watch
                log.failure("watch event handler failed")

    def _lost(self, reason: Failure) -> None:
        if self._cancelled:
            self._finish(None)
        else:
            self._finish(EtcdUnavailable("connection to etcd lost"))


class EtcdClient:
    """etcd v3 over its JSON gateway; see the module docstring for guarantees."""

    def __init__(
        self,
        hosts: Sequence[str],
        timeout: float = 5.0,
        user: str | None = None,
        password: str | None = None,
        *,
        reactor: Any = None,
        pool: HTTPConnectionPool | None = None,
        tls_policy: IPolicyForHTTPS | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("at least one etcd host is needed")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.hosts = tuple(h.rstrip("/") for h in hosts)
        self.timeout = float(timeout)
        self._user = user
        self._password = password
        self._token: str | None = None
        self._current = 0  # index of the host to try first
        if pool is None:
            pool = connection_pool(reactor, max_per_host=8, idle_timeout=60)
        self.pool = pool
        endpoints = EndpointFactory(
            reactor,
            connect_timeout=max(self.timeout / len(self.hosts), 0.05),
            tls=tls_policy,
        )
        self._http = http_client(reactor, pool, endpoints)
        self._watches: set[Watch] = set()

    @classmethod
    def from_config(cls, config: Any, reactor: Any = None) -> EtcdClient:
        """Build from :class:`twisted_gw.config.file.EtcdConfig`."""
        return cls(
            config.hosts,
            config.timeout,
            config.user,
            config.password,
            reactor=reactor,
            tls_policy=tls_policy(
                getattr(config, "ca_file", None), getattr(config, "verify", True)
            ),
        )

    # -- KV ----------------------------------------------------------------------

    def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        count_only: bool = False,
        timeout: float | None = None,
    ) -> Deferred[RangeResult]:
        """Read ``key``, ``[key, range_end)``, or every key under ``key`` (``prefix``)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            range_end = prefix_range_end(key)
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        if limit:
            body["limit"] = str(limit)
        if revision:
            body["revision"] = str(revision)
        if count_only:
            body["count_only"] = True
        return self._unary("/v3/kv/range", body, timeout, RangeResult.from_json)

    def put(
        self,
        key: str | bytes,
        value: str | bytes,
        *,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> Deferred[PutResult]:
        """Store ``value`` at ``key``."""
        body = {"key": _b64(key), "value": _b64(value), "prev_kv": prev_kv}
        return self._unary("/v3/kv/put", body, timeout, PutResult.from_json)

    def delete(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> Deferred[DeleteResult]:
        """Delete ``key``, ``[key, range_end)``, or every key under ``key``."""
        body: dict[str, Any] = {"key": _b64(key), "prev_kv": prev_kv}
        if prefix:
            range_end = prefix_range_end(key)
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        return self._unary("/v3/kv/deleterange", body, timeout, DeleteResult.from_json)

    def txn(
        self,
        compares: Sequence[dict],
        success: Sequence[dict],
        failure: Sequence[dict] = (),
        *,
        timeout: float | None = None,
    ) -> Deferred[TxnResult]:
        """If every compare holds, run ``success``, else ``failure``, atomically.

        Build the parts with :func:`compare`, :func:`put_op`, :func:`range_op`
        and :func:`delete_op`."""
        body = {"compare": list(compares), "success": list(success), "failure": list(failure)}
        return self._unary("/v3/kv/txn", body, timeout, TxnResult.from_json)

    def compact(self, revision: int, *, timeout: float | None = None) -> Deferred[int]:
        """Compact history up to ``revision``; fires with the header revision."""
        return self._unary("/v3/kv/compaction", {"revision": str(revision)}, timeout, _revision)

    # -- watch -------------------------------------------------------------------

    def watch(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        on_response: Callable[[WatchResponse], None],
        timeout: float | None = None,
    ) -> Deferred[Watch]:
        """Open a watch; fires with the :class:`Watch` once etcd created it.

        ``on_response`` is called with each :class:`WatchResponse` carrying
        events, in order. Opening is bounded like any call; it fails with
        :class:`EtcdCompacted` when ``start_revision`` was compacted away."""
        request: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            range_end = prefix_range_end(key)
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        if start_revision:
            request["start_revision"] = str(start_revision)
        body = {"create_request": request}
        return Deferred.fromCoroutine(self._open_watch(body, on_response, timeout))

    async def _open_watch(
        self, body: dict, on_response: Callable[[WatchResponse], None], timeout: float | None
    ) -> Watch:
        deadline = self._deadline(timeout)
        reauthenticated = False
        while True:
            await self._ensure_token(deadline)
            response = await self._request("/v3/watch", body, deadline, stream=True)
            watch = Watch(on_response)
            first: Deferred[dict] = Deferred()

            def on_message(message: dict, watch: Watch = watch, first: Deferred = first) -> None:
                if not first.called:
                    first.callback(message)
                else:
                    watch._message(message)

            def on_lost(reason: Failure, watch: Watch = watch, first: Deferred = first) -> None:
                if not first.called:
                    first.errback(reason)
                else:
                    watch._lost(reason)

            protocol = _JSONLines(on_message, on_lost)
            watch._protocol = protocol
            response.deliverBody(protocol)
            try:
                message = await self._bounded(first, deadline, watch.cancel)
            except _Expired:
                raise EtcdUnavailable("etcd did not confirm the watch in time") from None
            except CancelledError:
                watch.cancel()
                raise
            except Exception as e:  # noqa: BLE001 - any transport failure: the stream is gone
                watch.cancel()
                raise EtcdUnavailable(f"watch not created ({_describe(Failure(e))})") from None
            if "error" in message:
                watch.cancel()
                error = message["error"] or {}
                raise EtcdServerError(str(error.get("message") or error), error.get("grpc_code"))
            result = message.get("result") or {}
            if result.get("canceled"):
                watch.cancel()
                compact = _int(result.get("compact_revision"))
                if compact:
                    raise EtcdCompacted(compact)
                reason = result.get("cancel_reason") or "watch canceled by etcd"
                if _is_token_problem(reason) and self._user and not reauthenticated:
                    self._token = None
                    reauthenticated = True
                    continue
                raise EtcdServerError(reason)
            watch.revision = _revision(result)
            self._watches.add(watch)
            watch.done.addBoth(self._forget_watch, watch)
            if result.get("events"):  # etcd sends them separately, but be safe
                watch._message(message)
            return watch

    def _forget_watch(self, result: Any, watch: Watch) -> Any:
        self._watches.discard(watch)
        return result

    # -- plumbing ----------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Cancel open watches and close pooled connections."""
        for watch in list(self._watches):
            watch.cancel()
        return self.pool.closeCachedConnections()

    def _deadline(self, timeout: float | None) -> float:
        return self.reactor.seconds() + (self.timeout if timeout is None else timeout)

    def _unary(
        self, path: str, body: dict, timeout: float | None, parse: Callable[[dict], _T]
    ) -> Deferred[_T]:
        return Deferred.fromCoroutine(self._unary_async(path, body, timeout, parse))

    async def _unary_async(
        self, path: str, body: dict, timeout: float | None, parse: Callable[[dict], _T]
    ) -> _T:
        deadline = self._deadline(timeout)
        reauthenticated = False
        while True:
            await self._ensure_token(deadline)
            try:
                return parse(await self._request(path, body, deadline))
            except EtcdServerError as e:
                if e.invalid_token and self._user and not reauthenticated:
                    self._token = None
                    reauthenticated = True
                    continue
                raise

    async def _ensure_token(self, deadline: float) -> None:
        if self._user is None or self._token is not None:
            return
        credentials = {"name": self._user, "password": self._password or ""}
        try:
            answer = await self._request("/v3/auth/authenticate", credentials, deadline, auth=False)
        except EtcdServerError as e:
            if "authentication is not enabled" in e.message:
                self._token = ""  # auth is off on this cluster: no header needed
                return
            raise EtcdAuthError(f"etcd authentication failed: {e.message}", e.code) from None
        self._token = str(answer.get("token") or "")

    async def _request(
        self, path: str, body: dict, deadline: float, *, auth: bool = True, stream: bool = False
    ) -> Any:
        """POST ``body`` to the first host that answers; the parsed JSON answer
        (or, with ``stream``, the unread 200 response)."""
        data = json.dumps(body).encode("utf-8")
        headers = {b"Content-Type": [b"application/json"]}
        if auth and self._token:
            headers[b"Authorization"] = [self._token.encode("utf-8")]
        n = len(self.hosts)
        problems: list[str] = []
        start = self._current
        for attempt in range(2 * n):  # two rounds: a dropped pooled connection gets a retry
            index = (start + attempt) % n
            host = self.hosts[index]
            try:
                status, answer = await self._post_one(host + path, data, headers, deadline, stream)
            except _HostFailed as e:
                problems.append(f"{host}: {e}")
                self._current = (index + 1) % n
                continue
            except _Expired:
                problems.append(f"{host}: no answer in time")
                self._current = (index + 1) % n
                break
            if status == 200:
                self._current = index
                return answer
            error = _server_error(status, answer)
            if error.unavailable:
                problems.append(f"{host}: {error.message}")
                self._current = (index + 1) % n
                continue
            self._current = index
            raise error
        budget = self.timeout
        detail = "; ".join(dict.fromkeys(problems)) or f"no answer within {budget:g} s"
        raise EtcdUnavailable(f"etcd unreachable ({detail})")

    async def _post_one(
        self, url: str, data: bytes, headers: dict, deadline: float, stream: bool
    ) -> tuple[int, Any]:
        request = self._http.request(
            "POST", url, data=data, headers=Headers(headers), unbuffered=True
        )
        try:
            response = await self._bounded(request, deadline)
        except (_Expired, CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - any transport failure: try the next host
            raise _HostFailed(_describe(Failure(e))) from None
        if stream and response.code == 200:
            return response.code, response
        try:
            payload = await self._bounded(read_body(response), deadline)
        except (_Expired, CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - any transport failure: try the next host
            raise _HostFailed(_describe(Failure(e))) from None
        try:
            answer = json.loads(payload) if payload else {}
        except ValueError:
            answer = {"message": payload.decode("utf-8", "replace").strip()[:200]}
        return response.code, answer

    async def _bounded(
        self, d: Deferred[_T], deadline: float, on_expire: Callable[[], None] | None = None
    ) -> _T:
        """Await ``d``, cancelling it at ``deadline`` (then raise _Expired).

        A cancellation that did not come from the deadline came from our
        caller: it is re-raised as CancelledError whatever shape the
        transport gave it, so no fail-over loop mistakes it for a dead host."""
        remaining = deadline - self.reactor.seconds()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if on_expire is not None:
                on_expire()
            d.cancel()

        if remaining <= 0:
            expire()
        timer = self.reactor.callLater(max(remaining, 0), expire) if not expired else None
        try:
            return await d
        except Exception as e:
            if expired:
                raise _Expired() from None
            if is_cancellation(Failure(e)):
                raise CancelledError() from None
            raise
        finally:
            if timer is not None and timer.active():
                timer.cancel()


def _server_error(status: int, answer: Any) -> EtcdServerError:
    if not isinstance(answer, dict):
        answer = {}
    message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")
    code = answer.get("code")
    return EtcdServerError(message, code if isinstance(code, int) else None, status)


__all__ = [
    "DeleteResult",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdServerError",
    "EtcdUnavailable",
    "KeyValue",
    "PutResult",
    "RangeResult",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "WatchResponse",
    "compare",
    "delete_op",
    "prefix_range_end",
    "put_op",
    "range_op",
    "tls_policy",
]
