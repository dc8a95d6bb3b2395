"""Upstreams that misbehave on purpose, on real sockets, for the fuzz and soak tests.

:class:`FaultUpstream` is an OpenAI-compatible upstream hosted by the test
process's reactor whose every answer is chosen by a marker in the request
body: ``fault:<kind>:<token>`` anywhere in it (the gateway forwards message
contents and ``input`` unchanged, so a chat message or an embeddings input
carries it). ``kind`` is one of :data:`KINDS`; ``token`` is a number the test
uses to wait for that very request (:meth:`FaultUpstream.wait_seen`). A body
without a marker gets a normal answer. It counts its TCP connections and the
exchanges still in progress (a request received whose answer is neither
finished nor cut), which is what "the gateway left nothing open upstream"
means once pooled idle keep-alive connections are set aside.

:class:`ThreadedUpstream` is a well-behaved, strict OpenAI-compatible upstream
served from a thread by the standard library, for blocking tests (hypothesis
does not mix with pytest-twisted's reactor, so its examples cannot wait on a
server hosted by that reactor).

Nothing in here sleeps: gaps are ``reactor.callLater`` calls, and waits are
Deferreds fired by the event that satisfies them.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.server import Request, Site

from tests.support.mock_upstream import _UpstreamResource

__all__ = [
    "KINDS",
    "OVERSIZED_LINE_BYTES",
    "FaultUpstream",
    "ThreadedUpstream",
    "marker",
]

#: How each kind answers (stream = the request said ``"stream": true``).
KINDS: dict[str, str] = {
    "ok": "a normal answer: JSON, or an SSE stream ending with [DONE]",
    "slow_stream": "stream: 8 content chunks 30 ms apart, then [DONE] (JSON: as ok)",
    "reset": "TCP reset before answering anything",
    "close": "FIN before answering anything",
    "stall": "never answers (the gateway must give up at the model's timeout)",
    "hold_headers": "stream: 200 text/event-stream headers, then nothing (JSON: as stall)",
    "stall_mid": "stream: one chunk, then nothing (JSON: as stall)",
    "cut_mid": "stream: two chunks, then FIN without the chunked terminator; "
    "JSON: half the body announced by Content-Length, then FIN",
    "malformed_first": "stream: a data event that is not JSON, first; JSON: a body that is not JSON",
    "malformed_mid": "stream: one chunk, then a data event that is not JSON (JSON: as malformed_first)",
    "oversized_first": "stream: a single ~2 MiB line without a newline, first, then a clean end; "
    "JSON: ~2 MiB that is not JSON",
    "oversized_mid": "stream: one chunk, then the ~2 MiB line, then a clean end "
    "(JSON: as oversized_first)",
    "json200": "200 application/json with a whole chat completion, even to a stream request",
    "status_5xx": "a 500, 502 or 503 in OpenAI's error shape",
}

#: Size of the oversized SSE line: above the gateway's 1 MiB default event bound.
OVERSIZED_LINE_BYTES = 2 * 1024 * 1024

_MARKER = re.compile(rb"fault:([a-z0-9_]+):(\d+)")
_CREATED = 1_700_000_000
_USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def marker(kind: str, token: int) -> str:
    """The text to put in a request body so :class:`FaultUpstream` answers with ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}")
    return f"fault:{kind}:{token}"


# -- answers (pure) ------------------------------------------------------------------


def _chunk(content: str | None = None, *, role: str | None = None, finish: str | None = None):
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "fault-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _event(obj: object) -> bytes:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return b"data: " + data + b"\n\n"


def _stream_events(pieces: int = 3) -> list[bytes]:
    events = [_event(_chunk("", role="assistant"))]
    events += [_event(_chunk(f"w{i} ")) for i in range(pieces)]
    events.append(_event(_chunk(finish="stop")))
    usage = {**_chunk(), "choices": [], "usage": dict(_USAGE)}
    events.append(_event(usage))
    events.append(_event(b"[DONE]"))
    return events


def _completion(model: str = "fault-model") -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "fine"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": dict(_USAGE),
    }


def _embeddings(body: Any) -> dict[str, Any]:
    raw = body.get("input") if isinstance(body, dict) else None
    inputs = raw if isinstance(raw, list) else [raw]
    data = [
        {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), 0.2, -0.3]}
        for i in range(len(inputs))
    ]
    usage = {"prompt_tokens": 3, "total_tokens": 3}
    return {"object": "list", "data": data, "model": "fault-embed", "usage": usage}


def _error(status: int, message: str, code: str | None = None) -> bytes:
    error = {"message": message, "type": "server_error", "param": None, "code": code}
    return json.dumps({"error": error}).encode()


# -- the Twisted fault upstream --------------------------------------------------------


class _Tracked(ProtocolWrapper):
    factory: _Tracking

    def connectionLost(self, reason: Failure) -> None:
        busy = self.factory.upstream._busy.get(self, 0)
        super().connectionLost(reason)
        self.factory.upstream._connection_closed(self, busy, reason)


class _Tracking(WrappingFactory):
    protocol = _Tracked

    def __init__(self, site: Site, upstream: FaultUpstream) -> None:
        super().__init__(site)
        self.upstream = upstream
        self.noisy = False

    def registerProtocol(self, p: _Tracked) -> None:
        super().registerProtocol(p)
        self.upstream._connection_opened(p)


class _QuietSite(Site):
    noisy = False

    def log(self, request: Request) -> None:  # no access log of our own
        pass


class _Exchange:
    """Plays one kind of answer on one request and notices when it is over."""

    def __init__(self, upstream: FaultUpstream, request: Request, kind: str, token: int | None):
        self.upstream = upstream
        self.request = request
        self.kind = kind
        self.token = token
        self.connection = request.channel.transport  # the request forgets its channel
        self.over = False
        self.client_gone = False
        self._cutting = False
        self._pending: IDelayedCall | None = None
        request.notifyFinish().addCallbacks(self._finished, self._lost)

    # -- plumbing --

    @property
    def _transport(self) -> Any:
        return self.request.channel.transport

    def _later(self, seconds: float, f: Callable[[], None]) -> None:
        def run() -> None:
            self._pending = None
            if not self.over:
                f()

        self._pending = self.upstream.reactor.callLater(seconds, run)

    def _cut(self) -> None:
        """FIN after what was written: a body that ends too early."""
        self._cutting = True
        self._transport.loseConnection()

    def _reset(self) -> None:
        self._cutting = True
        self._transport.abortConnection()

    def _json(self, status: int, body: bytes) -> None:
        self.request.setResponseCode(status)
        self.request.setHeader(b"content-type", b"application/json")
        self.request.setHeader(b"content-length", str(len(body)).encode())
        self.request.write(body)
        self.request.finish()

    def _sse_headers(self) -> None:
        self.request.setResponseCode(200)
        self.request.setHeader(b"content-type", b"text/event-stream")
        self.request.setHeader(b"cache-control", b"no-cache")
        self.request.write(b"")  # the headers go out now, as a real SSE upstream's do

    def _write_all(self, events: list[bytes], then: Callable[[], None]) -> None:
        for event in events:
            self.request.write(event)
        then()

    def _trickle(self, events: list[bytes], gap: float, then: Callable[[], None]) -> None:
        if not events:
            then()
            return
        self.request.write(events[0])
        self._later(gap, lambda: self._trickle(events[1:], gap, then))

    # -- the answers --

    def start(self, body: Any, path: str) -> None:
        stream = isinstance(body, dict) and body.get("stream") is True
        kind = self.kind
        if kind == "reset":
            self._reset()
        elif kind == "close":
            self._cut()
        elif kind == "stall" or (kind in ("hold_headers", "stall_mid") and not stream):
            pass  # nothing, ever: the gateway has to give up
        elif kind == "status_5xx":
            status = (500, 502, 503)[(self.token or 0) % 3]
            self._json(status, _error(status, f"upstream failed with {status}", "server_error"))
        elif path.rstrip("/").endswith("/embeddings"):
            self._plain(kind, json.dumps(_embeddings(body)).encode())
        elif not stream or kind == "json200":
            self._plain(kind, json.dumps(_completion()).encode())
        else:
            self._stream(kind)

    def _plain(self, kind: str, good: bytes) -> None:
        if kind == "cut_mid":
            self.request.setResponseCode(200)
            self.request.setHeader(b"content-type", b"application/json")
            self.request.setHeader(b"content-length", str(len(good)).encode())
            self.request.write(good[: len(good) // 2])
            self._cut()
        elif kind in ("malformed_first", "malformed_mid"):
            self._json(200, b'{"id": "chatcmpl-fault", "choices": [')
        elif kind in ("oversized_first", "oversized_mid"):
            self._json(200, b"x" * OVERSIZED_LINE_BYTES)
        else:  # ok, slow_stream, json200
            self._json(200, good)

    def _stream(self, kind: str) -> None:
        self._sse_headers()
        events = _stream_events()
        first = events[0]
        finish = self.request.finish
        if kind == "ok":
            self._write_all(events, finish)
        elif kind == "slow_stream":
            self._trickle(_stream_events(pieces=8), 0.03, finish)
        elif kind == "hold_headers":
            pass
        elif kind == "stall_mid":
            self.request.write(first)
        elif kind == "cut_mid":
            self._write_all(events[:2], self._cut)
        elif kind == "malformed_first":
            self._write_all([b"data: {not json\n\n", *events], finish)
        elif kind == "malformed_mid":
            self._write_all([first, b"data: {not json\n\n", *events[1:]], finish)
        elif kind == "oversized_first":
            self._write_all([b"data: " + b"x" * OVERSIZED_LINE_BYTES], finish)
        elif kind == "oversized_mid":
            self._write_all([first, b"data: " + b"x" * OVERSIZED_LINE_BYTES], finish)
        else:
            raise AssertionError(f"unhandled stream kind {kind}")

    # -- the end --

    def _finished(self, _: object) -> None:
        self._end()

    def _lost(self, _: Failure) -> None:
        if not self._cutting:
            self.client_gone = True
        self._end()

    def _end(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self.over = True
        self.upstream._exchange_ended(self)


class FaultUpstream:
    """An OpenAI-compatible upstream on 127.0.0.1 that fails as each request asks.

    ``seen`` counts requests by kind; ``client_gone`` counts exchanges the
    gateway walked away from before the answer was complete (cancellations);
    :attr:`in_progress` is the number of exchanges still under way.
    """

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self._port: IListeningPort | None = None
        self._open: set[_Tracked] = set()
        self._exchanges: set[_Exchange] = set()
        self._seen_tokens: set[int] = set()
        self._token_waiters: dict[int, list[Deferred[None]]] = {}
        self._idle_waiters: list[Deferred[None]] = []
        self.seen: Counter[str] = Counter()
        self.client_gone: Counter[str] = Counter()
        self.total_connections = 0
        #: connections the gateway ended while no request was in progress on
        #: them, by how and by the kind of the last answer on them (dropping a
        #: pooled connection is fine; handing it to a request at the same time is not)
        self.idle_closes: Counter[str] = Counter()
        self._busy: dict[Any, int] = {}
        self._last_kind: dict[Any, str] = {}

    # -- lifecycle --

    def start(self) -> int:
        """Listen on an ephemeral port of 127.0.0.1 and return it."""
        # the mock upstream's resource: it only calls our _handle
        factory = _Tracking(_QuietSite(_UpstreamResource(self)), self)
        self._port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        return self.port

    def stop(self) -> Deferred[None]:
        """Stop listening and abort every connection; fires when all are gone."""
        if self._port is None:
            return succeed(None)
        port, self._port = self._port, None
        stopped = maybeDeferred(port.stopListening)
        for exchange in list(self._exchanges):
            exchange._cutting = True
        waits = []
        for connection in list(self._open):
            gone: Deferred[None] = Deferred()
            connection._fault_gone = gone  # type: ignore[attr-defined]
            waits.append(gone)
            connection.transport.abortConnection()
        return gatherResults([stopped, *waits]).addCallback(lambda _: None)

    @property
    def port(self) -> int:
        assert self._port is not None, "FaultUpstream is not started"
        return self._port.getHost().port

    @property
    def base_url(self) -> str:
        """What to put in a model's ``provider_config.api_base``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- what a test reads --

    @property
    def open_connections(self) -> int:
        """TCP connections open right now (idle pooled keep-alive ones included)."""
        return len(self._open)

    @property
    def in_progress(self) -> int:
        """Requests received whose answer is neither finished nor cut yet."""
        return len(self._exchanges)

    def in_progress_kinds(self) -> Counter[str]:
        return Counter(e.kind for e in self._exchanges)

    def has_seen(self, token: int) -> bool:
        """Whether the request carrying ``token`` arrived."""
        return token in self._seen_tokens

    def wait_seen(self, token: int) -> Deferred[None]:
        """Fires once the request carrying ``token`` arrived and its answer
        started (for a stream: its headers are written); cancellable."""
        if token in self._seen_tokens:
            return succeed(None)
        waiters = self._token_waiters.setdefault(token, [])

        def cancel(d: Deferred[None]) -> None:
            if d in waiters:
                waiters.remove(d)

        d: Deferred[None] = Deferred(canceller=cancel)
        waiters.append(d)
        return d

    def wait_idle(self, timeout: float) -> Deferred[None]:
        """Fires when no exchange is in progress; fails with TimeoutError after ``timeout``."""
        if not self._exchanges:
            return succeed(None)
        d: Deferred[None] = Deferred(canceller=lambda d: self._idle_waiters.remove(d))
        self._idle_waiters.append(d)
        return d.addTimeout(timeout, self.reactor)

    # -- events --

    def _connection_opened(self, connection: _Tracked) -> None:
        self._open.add(connection)
        self.total_connections += 1

    def _connection_closed(self, connection: _Tracked, busy: int, reason: Failure) -> None:
        self._open.discard(connection)
        self._busy.pop(connection, None)
        last = self._last_kind.pop(connection, None)
        if not busy:
            how = "reset" if reason.check(ConnectionLost) else "closed"
            self.idle_closes[f"{how} after {last}" if last else f"{how} unused"] += 1
        gone = getattr(connection, "_fault_gone", None)
        if gone is not None:
            gone.callback(None)

    def _exchange_ended(self, exchange: _Exchange) -> None:
        self._exchanges.discard(exchange)
        if exchange.connection in self._busy:
            self._busy[exchange.connection] -= 1
        if exchange.client_gone:
            self.client_gone[exchange.kind] += 1
        if not self._exchanges:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def _handle(self, request: Request) -> None:
        request.content.seek(0)
        raw = request.content.read()
        found = _MARKER.search(raw)
        kind, token = ("ok", None)
        if found is not None and found.group(1).decode() in KINDS:
            kind, token = found.group(1).decode(), int(found.group(2))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        connection = request.channel.transport
        self._busy[connection] = self._busy.get(connection, 0) + 1
        self._last_kind[connection] = kind
        exchange = _Exchange(self, request, kind, token)
        self._exchanges.add(exchange)
        self.seen[kind] += 1
        exchange.start(body, request.path.decode("utf-8", "replace"))
        if token is not None:
            self._seen_tokens.add(token)
            for d in self._token_waiters.pop(token, []):
                d.callback(None)


# -- the threaded, well-behaved upstream --------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _invalid_json(e: Exception) -> bytes:
    error = {"message": f"invalid JSON body: {e}", "type": "invalid_request_error"}
    return json.dumps({"error": error | {"param": None, "code": "invalid_json"}}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self._read_body()
        with self.server.lock:
            self.server.requests += 1
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            with self.server.lock:
                self.server.invalid_bodies.append(raw[:300])
            self._send(400, _invalid_json(e))
            return
        if _has_lone_surrogate(body):
            self._send(400, _invalid_json(ValueError("lone surrogate in a string")))
            return
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/embeddings"):
            self._send(200, json.dumps(_embeddings(body)).encode())
        elif not path.endswith("/chat/completions"):
            error = {"message": "no such path", "type": "invalid_request_error"}
            self._send(404, json.dumps({"error": error | {"param": None, "code": None}}).encode())
        elif isinstance(body, dict) and body.get("stream") is True:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in _stream_events():
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(200, json.dumps(_completion()).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.invalid_bodies: list[bytes] = []


class ThreadedUpstream:
    """A strict OpenAI-compatible upstream on 127.0.0.1, served from threads.

    Answers ``/chat/completions`` (SSE when ``"stream": true``) and
    ``/embeddings``; a body that is not strict JSON (NaN, Infinity, lone
    surrogates) gets a 400 in OpenAI's error shape, as OpenAI would give.
    :attr:`invalid_bodies` keeps the first bytes of every body it received
    that was not JSON at all (NaN and Infinity included): the gateway should
    never write one.
    """

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ThreadedUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def requests(self) -> int:
        return self._server.requests

    @property
    def invalid_bodies(self) -> list[bytes]:
        with self._server.lock:
            return list(self._server.invalid_bodies)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"
