"""A programmable OpenAI-compatible upstream on real sockets, for black-box tests.

The gateway under test runs as a subprocess and talks HTTP to its provider, so
the provider has to be a real server.  :class:`MockUpstream` is one, hosted by
the test process's reactor: it records every request it receives, answers
what the test programmed (JSON, raw bytes, SSE streams, delays, dropped
connections) and tracks its TCP connections, so a test can assert not only
what the gateway sent but also that it went away when it should (cancellation
of an upstream request is visible here as a closed connection).

Nothing in here sleeps: delays and gaps are ``reactor.callLater`` calls, and
every "wait until" is a Deferred that fires from the event that satisfies it.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = [
    "DEFAULT_CONTENT",
    "DEFAULT_USAGE",
    "MockUpstream",
    "RecordedRequest",
    "SSEEnd",
    "chat_chunk",
    "sse_event",
]

#: Text of the default chat/messages answers, so tests can assert the relay.
DEFAULT_CONTENT = "Hello from the mock upstream."

#: Usage of the default chat answer (and of the default stream's usage chunk).
DEFAULT_USAGE: dict[str, int] = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}

#: How an SSE answer ends once its events are written.
#: ``close``: the response finishes cleanly (chunked terminator sent).
#: ``hang``: the response stays open until the client or :meth:`MockUpstream.stop` ends it.
#: ``cut``: the TCP connection is closed after the events are flushed, without the
#: chunked terminator, which is what a crashed upstream looks like to the client.
#: ``reset``: the TCP connection is aborted at once (RST); events still in Twisted's
#: write buffer may be lost, so put a gap before it if the client must see them.
SSEEnd = Literal["close", "hang", "cut", "reset"]

_T = TypeVar("_T")

_CREATED = 1_700_000_000


def sse_event(payload: object) -> bytes:
    """Frame one SSE ``data:`` event the way OpenAI does.

    ``payload`` is a JSON-able object, or a ``str``/``bytes`` sent verbatim
    (e.g. ``"[DONE]"``).  Saves streaming tests from hand-writing frames.
    """
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        data = payload.encode("utf-8")
    else:
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return b"data: " + data + b"\n\n"


def chat_chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    model: str = "mock-model",
    chunk_id: str = "chatcmpl-mock-stream",
) -> dict[str, Any]:
    """Build one ``chat.completion.chunk`` object.

    With ``usage`` it is the final usage chunk (``choices: []``), as OpenAI
    sends it when ``stream_options.include_usage`` is true.
    """
    chunk: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
    }
    if usage is not None:
        chunk["choices"] = []
        chunk["usage"] = dict(usage)
        return chunk
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk["choices"] = [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    ]
    return chunk


def chunks_json(*contents: str, usage: bool = True) -> list[dict[str, Any]]:
    """The chunks of a whole stream: the role, one chunk per content, the
    ``stop``, and (unless ``usage`` is false) a usage chunk of 2/3/5 tokens."""
    events = [chat_chunk(role="assistant", content="")]
    events += [chat_chunk(c) for c in contents]
    events.append(chat_chunk(finish_reason="stop"))
    if usage:
        events.append(
            chat_chunk(usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
        )
    return events


@dataclass
class RecordedRequest:
    """One request as the upstream saw it, and how its exchange ended.

    ``headers`` has lowercase names; repeated headers are joined with ``", "``.
    ``json`` is the parsed body, or None when the body is empty or not JSON.
    ``client_gone`` is True when the client closed the connection before the
    answer was completely written (the mock cutting it itself does not count).
    ``completed`` is True once the answer was completely written.
    ``received_at``/``ended_at`` are reactor times, so a test can measure how
    long the gateway kept an upstream request open.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    client_gone: bool = False
    completed: bool = False
    received_at: float = 0.0
    ended_at: float | None = None


@dataclass(frozen=True)
class _Full:
    """A complete, non-streamed answer."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class _Stream:
    """An SSE answer: headers at once, then events spaced by ``gap``."""

    status: int
    headers: tuple[tuple[str, str], ...]
    events: tuple[bytes, ...]
    gap: float
    end: SSEEnd
    end_delay: float


@dataclass(frozen=True)
class _Drop:
    """Close the connection without writing anything."""


_Answer = _Full | _Stream | _Drop


@dataclass
class _Waiter:
    ready: Callable[[], bool]
    result: Callable[[], Any]
    deferred: Deferred[Any] = field(default_factory=Deferred)


class _Waiters:
    """Deferreds that fire when a condition on the upstream's state holds.

    Conditions are re-checked by :meth:`notify` after every state change, so
    a waiter fires from the event that satisfied it, with no polling.
    """

    def __init__(self) -> None:
        self._waiting: list[_Waiter] = []

    def wait(
        self, ready: Callable[[], bool], result: Callable[[], _T], clock: Any, timeout: float | None
    ) -> Deferred[_T]:
        if ready():
            return succeed(result())
        waiter = _Waiter(ready, result)

        def cancel(_: Deferred[Any]) -> None:
            if waiter in self._waiting:
                self._waiting.remove(waiter)

        waiter.deferred = Deferred(canceller=cancel)
        self._waiting.append(waiter)
        if timeout is not None:
            waiter.deferred.addTimeout(timeout, clock)
        return waiter.deferred

    def notify(self) -> None:
        for waiter in list(self._waiting):
            if waiter in self._waiting and waiter.ready():
                self._waiting.remove(waiter)
                waiter.deferred.callback(waiter.result())


class _TrackedConnection(ProtocolWrapper):
    """Reports the connection's end *after* the HTTP channel has seen it.

    ``ProtocolWrapper`` unregisters before relaying ``connectionLost``; a
    test resumed from that point would not yet see ``client_gone`` set on the
    requests of the connection.  Reporting afterwards makes that ordering safe.
    """

    factory: _TrackingFactory

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.factory.on_close(self)


class _TrackingFactory(WrappingFactory):
    """Wraps the Site so the upstream can count and abort its connections."""

    protocol = _TrackedConnection

    def __init__(
        self,
        site: Site,
        on_open: Callable[[_TrackedConnection], None],
        on_close: Callable[[_TrackedConnection], None],
    ) -> None:
        super().__init__(site)
        self.on_open = on_open
        self.on_close = on_close
        self.noisy = False

    def registerProtocol(self, p: _TrackedConnection) -> None:
        super().registerProtocol(p)
        self.on_open(p)


class _UpstreamResource(Resource):
    """Hands every request, whatever its path, to the upstream."""

    isLeaf = True

    def __init__(self, upstream: MockUpstream) -> None:
        super().__init__()
        self._upstream = upstream

    def render(self, request: Request) -> object:
        self._upstream._handle(request)
        return NOT_DONE_YET


class _Exchange:
    """Answers one request, and stops as soon as its client has gone.

    Owns the request's pending timer: if the client disconnects while a delay
    or an SSE gap is pending, the timer is cancelled and nothing more is written.
    """

    def __init__(
        self,
        clock: Any,
        request: Request,
        record: RecordedRequest,
        answer: _Answer,
        delay: float,
        on_end: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._request = request
        self._record = record
        self._answer = answer
        self._delay = delay
        self._on_end = on_end
        self._pending: IDelayedCall | None = None
        self._cutting = False
        self._over = False
        request.notifyFinish().addCallbacks(self._finished, self._lost)

    def start(self) -> None:
        if self._delay > 0:
            self._pending = self._clock.callLater(self._delay, self._respond)
        else:
            self._respond()

    def _later(self, seconds: float, f: Callable[[], None]) -> None:
        if seconds > 0:
            self._pending = self._clock.callLater(seconds, f)
        else:
            f()

    def _respond(self) -> None:
        self._pending = None
        answer = self._answer
        if isinstance(answer, _Drop):
            self._close_transport()
        elif isinstance(answer, _Full):
            self._request.setResponseCode(answer.status)
            for name, value in answer.headers:
                self._request.setHeader(name, value)
            self._request.setHeader("content-length", str(len(answer.body)))
            self._request.write(answer.body)
            self._request.finish()
        else:
            self._request.setResponseCode(answer.status)
            for name, value in answer.headers:
                self._request.setHeader(name, value)
            # Send the headers now, as a real SSE upstream does, so "cut before
            # the first event" means "200 received, then the connection died".
            self._request.write(b"")
            self._send_event(answer, 0)

    def _send_event(self, answer: _Stream, index: int) -> None:
        self._pending = None
        if self._over:
            return
        events = answer.events
        if answer.gap <= 0:  # all at once, in a loop (recursion would hit the stack limit)
            while index < len(events):
                self._request.write(events[index])
                index += 1
        elif index < len(events):
            self._request.write(events[index])
            if index + 1 < len(events):
                self._later(answer.gap, lambda: self._send_event(answer, index + 1))
                return
        self._later(answer.end_delay, lambda: self._end_stream(answer.end))

    def _end_stream(self, end: SSEEnd) -> None:
        self._pending = None
        if self._over:
            return
        if end == "close":
            self._request.finish()
        elif end == "cut":
            self._close_transport()
        elif end == "reset":
            self._cutting = True
            self._request.channel.transport.abortConnection()
        # "hang": leave the response open.

    def shutting_down(self) -> None:
        """The upstream is stopping: the coming disconnect is ours, not the client's."""
        self._cutting = True

    def _close_transport(self) -> None:
        # Closing the transport rather than finishing the request: Twisted
        # flushes what was written, then sends FIN without the chunked
        # terminator, so the client sees a body that ended too early.
        self._cutting = True
        self._request.channel.transport.loseConnection()

    def _finished(self, _: object) -> None:
        self._record.completed = True
        self._end()

    def _lost(self, _: Failure) -> None:
        if not self._cutting:
            self._record.client_gone = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self._end()

    def _end(self) -> None:
        self._over = True
        self._record.ended_at = self._clock.seconds()
        self._on_end()


class MockUpstream:
    """An OpenAI-compatible upstream on 127.0.0.1, programmable per path.

    Answers are keyed by the exact request path (e.g. ``/v1/chat/completions``)
    and apply to every later request on it until reprogrammed or :meth:`reset`.
    Without a programmed answer, paths ending in ``/chat/completions``,
    ``/embeddings`` and ``/messages`` (Anthropic) get a valid default answer
    (streamed when the request says ``"stream": true``); anything else is a
    404 in OpenAI's error shape.

    Every ``wait_*``/``when_*`` method returns a Deferred that fires from the
    event that satisfies it (already fired if it is satisfied now), and takes
    an optional ``timeout`` in seconds after which it fails with
    :class:`twisted.internet.defer.TimeoutError`.
    """

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._reactor = reactor
        self._port: IListeningPort | None = None
        self._answers: dict[str, _Answer] = {}
        self._delays: dict[str, float] = {}
        self._open: set[_TrackedConnection] = set()
        self._exchanges: set[_Exchange] = set()
        self._waiters = _Waiters()
        self.requests: list[RecordedRequest] = []
        self.total_connections = 0
        self.closed_connections = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> int:
        """Listen on an ephemeral port of 127.0.0.1 and return it."""
        if self._port is not None:
            raise RuntimeError("MockUpstream is already started")
        site = Site(_UpstreamResource(self))
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]  # no access log noise
        factory = _TrackingFactory(site, self._connection_opened, self._connection_closed)
        self._port = self._reactor.listenTCP(0, factory, interface="127.0.0.1")
        return self.port

    def stop(self) -> Deferred[None]:
        """Stop listening and abort every open connection.

        Fires once the port is closed and every connection is gone, so a test
        that awaits it leaves nothing behind in the reactor.
        """
        if self._port is None:
            return succeed(None)
        port, self._port = self._port, None
        stopped = maybeDeferred(port.stopListening)
        for exchange in list(self._exchanges):
            exchange.shutting_down()
        for connection in list(self._open):
            connection.transport.abortConnection()
        all_closed = self.when_connections_closed(self.total_connections)
        return gatherResults([stopped, all_closed]).addCallback(lambda _: None)

    @property
    def port(self) -> int:
        """The listening port; only valid after :meth:`start`."""
        if self._port is None:
            raise RuntimeError("MockUpstream is not started")
        return self._port.getHost().port

    @property
    def base_url(self) -> str:
        """What to put in a model's ``provider_config.api_base``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        """Forget programmed answers, delays and recorded requests.

        Connection counters are kept: they describe sockets, which outlive a
        test's programming when the gateway pools connections.
        """
        self._answers.clear()
        self._delays.clear()
        self.requests.clear()

    # -- programming -------------------------------------------------------

    def set_json(
        self,
        path: str,
        obj: object,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer ``path`` with ``obj`` as JSON (any status, e.g. an error body)."""
        body = json.dumps(obj).encode("utf-8")
        self._answers[path] = _Full(
            status, _headers({"content-type": "application/json"}, headers), body
        )

    def set_raw(
        self,
        path: str,
        body: bytes,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer ``path`` with exactly ``body`` (e.g. bytes that are not JSON)."""
        self._answers[path] = _Full(status, _headers({"content-type": content_type}, headers), body)

    def set_sse(
        self,
        path: str,
        events: Iterable[bytes | str],
        gap: float = 0.0,
        end: SSEEnd = "close",
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        end_delay: float = 0.0,
    ) -> None:
        """Answer ``path`` with a stream: headers at once, then each item as is.

        Items are written verbatim (frame them with :func:`sse_event`), with
        ``gap`` seconds between consecutive items, then ``end_delay`` seconds
        later the stream ends as ``end`` says (see :data:`SSEEnd`).
        """
        raw = tuple(e.encode("utf-8") if isinstance(e, str) else e for e in events)
        base = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        self._answers[path] = _Stream(status, _headers(base, headers), raw, gap, end, end_delay)

    def set_drop(self, path: str) -> None:
        """Accept requests on ``path``, then close the connection without answering."""
        self._answers[path] = _Drop()

    def set_delay(self, path: str, seconds: float) -> None:
        """Wait ``seconds`` before sending the headers of any answer on ``path``.

        Applies to programmed and default answers alike; 0 removes the delay.
        """
        if seconds > 0:
            self._delays[path] = seconds
        else:
            self._delays.pop(path, None)

    def clear(self, path: str) -> None:
        """Go back to the default answer (and no delay) for ``path``."""
        self._answers.pop(path, None)
        self._delays.pop(path, None)

    # -- observing ---------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """TCP connections open right now."""
        return len(self._open)

    def wait_for_requests(
        self, n: int, timeout: float | None = None
    ) -> Deferred[list[RecordedRequest]]:
        """Fire with the first ``n`` recorded requests once there are that many.

        Fires as soon as request ``n`` has been recorded, before its answer is
        written, so a test can act while the gateway waits on a delay.
        """
        return self._waiters.wait(
            lambda: len(self.requests) >= n, lambda: self.requests[:n], self._reactor, timeout
        )

    def wait_for_connections(self, n: int, timeout: float | None = None) -> Deferred[int]:
        """Fire once ``n`` connections have been accepted in total."""
        return self._waiters.wait(
            lambda: self.total_connections >= n,
            lambda: self.total_connections,
            self._reactor,
            timeout,
        )

    def when_connections_closed(self, n: int, timeout: float | None = None) -> Deferred[int]:
        """Fire once ``n`` connections have closed in total (counting from start).

        Absolute counts make this race-free: read :attr:`closed_connections`
        before triggering the close, then wait for that number plus one.
        """
        return self._waiters.wait(
            lambda: self.closed_connections >= n,
            lambda: self.closed_connections,
            self._reactor,
            timeout,
        )

    def wait_for_disconnect(self, timeout: float | None = None) -> Deferred[int]:
        """Fire when the next connection closes, after this call.

        Call it *before* doing what should close the connection, e.g.::

            gone = upstream.wait_for_disconnect(timeout=0.1)
            client_request.cancel()
            await gone   # the gateway dropped its upstream request within 100 ms
        """
        return self.when_connections_closed(self.closed_connections + 1, timeout)

    def wait_for_idle(self, timeout: float | None = None) -> Deferred[int]:
        """Fire once no connection is open (e.g. the gateway released them all)."""
        return self._waiters.wait(
            lambda: not self._open, lambda: self.closed_connections, self._reactor, timeout
        )

    # -- internals ---------------------------------------------------------

    def _connection_opened(self, connection: _TrackedConnection) -> None:
        self._open.add(connection)
        self.total_connections += 1
        self._waiters.notify()

    def _connection_closed(self, connection: _TrackedConnection) -> None:
        self._open.discard(connection)
        self.closed_connections += 1
        self._waiters.notify()

    def _handle(self, request: Request) -> None:
        record = _record(request, self._reactor.seconds())
        self.requests.append(record)
        path = record.path
        answer = self._answers.get(path)
        if answer is None:
            answer = _default_answer(record)

        def ended() -> None:
            self._exchanges.discard(exchange)
            self._waiters.notify()

        exchange = _Exchange(
            self._reactor, request, record, answer, self._delays.get(path, 0.0), ended
        )
        self._exchanges.add(exchange)
        exchange.start()
        # Last, so a test resumed by this sees the exchange already under way.
        self._waiters.notify()


def _headers(
    base: Mapping[str, str], extra: Mapping[str, str] | None
) -> tuple[tuple[str, str], ...]:
    merged = {k.lower(): v for k, v in base.items()}
    merged.update({k.lower(): v for k, v in (extra or {}).items()})
    return tuple(merged.items())


def _record(request: Request, now: float) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        headers[name.decode("latin-1").lower()] = ", ".join(v.decode("latin-1") for v in values)
    request.content.seek(0)
    body = request.content.read()
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    return RecordedRequest(
        method=request.method.decode("ascii"),
        path=request.path.decode("utf-8", "replace"),
        headers=headers,
        body=body,
        json=parsed,
        received_at=now,
    )


# -- default answers -------------------------------------------------------


def _default_answer(record: RecordedRequest) -> _Answer:
    body = record.json if isinstance(record.json, dict) else {}
    model = body.get("model") if isinstance(body.get("model"), str) else "mock-model"
    stream = body.get("stream") is True
    path = record.path.rstrip("/")
    if record.method == "POST" and path.endswith("/chat/completions"):
        if stream:
            return _default_chat_stream(model, body)
        return _json_answer(_default_chat(model))
    if record.method == "POST" and path.endswith("/embeddings"):
        return _json_answer(_default_embeddings(model, body))
    if record.method == "POST" and path.endswith("/messages"):
        if stream:
            return _default_messages_stream(model)
        return _json_answer(_default_messages(model))
    error = {
        "error": {
            "message": f"mock upstream has no answer for {record.method} {record.path}",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }
    return _json_answer(error, 404)


def _json_answer(obj: object, status: int = 200) -> _Full:
    return _Full(status, (("content-type", "application/json"),), json.dumps(obj).encode("utf-8"))


def _default_chat(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": DEFAULT_CONTENT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": dict(DEFAULT_USAGE),
    }


def _default_chat_stream(model: str, body: Mapping[str, Any]) -> _Stream:
    # Like OpenAI: the usage chunk comes only when the client asked for it,
    # so a test can tell whether the gateway set include_usage.
    words = DEFAULT_CONTENT.split(" ")
    pieces = [words[0]] + [" " + w for w in words[1:]]
    chunks: list[dict[str, Any]] = [chat_chunk("", role="assistant", model=model)]
    chunks += [chat_chunk(p, model=model) for p in pieces]
    chunks.append(chat_chunk(finish_reason="stop", model=model))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        chunks.append(chat_chunk(usage=DEFAULT_USAGE, model=model))
    events = tuple(sse_event(c) for c in chunks) + (sse_event("[DONE]"),)
    headers = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))
    return _Stream(200, headers, events, 0.0, "close", 0.0)


def _default_embeddings(model: str, body: Mapping[str, Any]) -> dict[str, Any]:
    raw_input = body.get("input")
    inputs = raw_input if isinstance(raw_input, list) else [raw_input]
    base64_wanted = body.get("encoding_format") == "base64"
    data = []
    for index in range(len(inputs)):
        vector = [round(0.1 * (index + 1), 6), 0.2, -0.3]
        embedding: Any = vector
        if base64_wanted:
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }


def _default_messages(model: str) -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": DEFAULT_CONTENT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }


def _default_messages_stream(model: str) -> _Stream:
    def event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode("ascii") + b"\n" + sse_event(data)

    start = dict(_default_messages(model), content=[], stop_reason=None)
    start["usage"] = {"input_tokens": 3, "output_tokens": 1}
    events = (
        event("message_start", {"type": "message_start", "message": start}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": DEFAULT_CONTENT},
            },
        ),
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 4},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    )
    headers = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))
    return _Stream(200, headers, events, 0.0, "close", 0.0)
