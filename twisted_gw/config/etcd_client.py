"""A small etcd v3 client over treq, against etcd's JSON gateway (``/v3/...``).

Why our own: no maintained Twisted-native etcd v3 client exists (txaioetcd's
last release is from 2018; the others are asyncio or gRPC). etcd serves the
whole v3 API as JSON over HTTP (``/v3/kv/range``, ``/v3/kv/put``,
``/v3/kv/deleterange``, ``/v3/kv/txn``, ``/v3/watch`` as a stream of JSON
lines, ``/v3/auth/authenticate``), with keys and values in base64 and 64-bit
integers as strings; this module speaks exactly that and nothing else, so the
store on top of it (:mod:`twisted_gw.config.etcd_store`) reads like etcd's API.
What goes on the wire (encodings, results, transaction parts, errors) is
:mod:`twisted_gw.config.etcd_wire`, pure; this module is the I/O around it.

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

import json
from collections.abc import Callable, Sequence
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
from twisted_gw.config.etcd_wire import (
    DeleteResult,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdServerError,
    EtcdUnavailable,
    PutResult,
    RangeResult,
    TxnResult,
    WatchResponse,
    b64,
    header_revision,
    int64,
    is_token_problem,
    prefix_range_end,
    server_error,
)
from twisted_gw.config.file import EtcdConfig

log = Logger()

_T = TypeVar("_T")

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
            compact = int64(result.get("compact_revision"))
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
        reactor: Any = None,  # time, TCP and name resolution: what HostnameEndpoint needs
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
    def from_config(cls, config: EtcdConfig, reactor: Any = None) -> EtcdClient:
        """Build from the config file's ``etcd`` section (``reactor`` as for the constructor)."""
        return cls(
            config.hosts,
            config.timeout,
            config.user,
            config.password,
            reactor=reactor,
            tls_policy=tls_policy(config.ca_file, config.verify),
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
        body: dict[str, str | bool] = {"key": b64(key)}
        if prefix:
            range_end = prefix_range_end(key)
        if range_end is not None:
            body["range_end"] = b64(range_end)
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
        body = {"key": b64(key), "value": b64(value), "prev_kv": prev_kv}
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
        body: dict[str, str | bool] = {"key": b64(key), "prev_kv": prev_kv}
        if prefix:
            range_end = prefix_range_end(key)
        if range_end is not None:
            body["range_end"] = b64(range_end)
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
        return self._unary(
            "/v3/kv/compaction", {"revision": str(revision)}, timeout, header_revision
        )

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
        request: dict[str, str] = {"key": b64(key)}
        if prefix:
            range_end = prefix_range_end(key)
        if range_end is not None:
            request["range_end"] = b64(range_end)
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
                compact = int64(result.get("compact_revision"))
                if compact:
                    raise EtcdCompacted(compact)
                reason = result.get("cancel_reason") or "watch canceled by etcd"
                if is_token_problem(reason) and self._user and not reauthenticated:
                    self._token = None
                    reauthenticated = True
                    continue
                raise EtcdServerError(reason)
            watch.revision = header_revision(result)
            self._watches.add(watch)
            watch.done.addBoth(self._forget_watch, watch)
            if result.get("events"):  # etcd sends them separately, but be safe
                watch._message(message)
            return watch

    def _forget_watch(self, result: Failure | None, watch: Watch) -> Failure | None:
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
            error = server_error(status, answer)
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


__all__ = [
    "EtcdClient",
    "Watch",
]
