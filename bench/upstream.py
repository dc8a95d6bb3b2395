"""A fast, fixed-answer OpenAI-compatible upstream for benchmarks (not a test double).

A raw asyncio ``Protocol`` HTTP/1.1 server with keep-alive and pipelining: it
answers every ``POST`` (any path; ``/v1/chat/completions`` is what the bench
sends) with one small ``chat.completion`` JSON that carries ``usage``, and
``GET`` with the same body. It parses only what it must (the request line,
``Content-Length`` or chunked framing, ``Connection: close``), so on one core
it answers tens of thousands of requests a second and is never the bottleneck
of a gateway benchmark. Uses uvloop when it is installed.

A request whose body says ``"stream": true`` gets a ``text/event-stream``
answer instead, the way OpenAI streams a chat completion: ``--stream-chunks``
data events (default 22: a role chunk, 19 content chunks, a finish chunk and
the ``usage`` chunk with empty ``choices``), then ``data: [DONE]``, one HTTP
chunk per event on a keep-alive ``Transfer-Encoding: chunked`` response. By
default the whole stream goes out in one write; with ``--chunk-gap-ms N`` the
events go out N ms apart (on a fixed schedule from the first, so sleeps do not
drift), and each event then carries ``"bench_sent_ns"``, the upstream's
``CLOCK_MONOTONIC`` time when it was written, so a client on the same host can
tell how long each event spent in flight. ``[DONE]`` follows the last event at
once.

    python bench/upstream.py --port 0          # prints "LISTENING <port>"
    python bench/upstream.py --port 0 --chunk-gap-ms 200 --stream-chunks 5
    python bench/upstream.py --port 0 --forward-to 8000   # a plain TCP forwarder

``--forward-to`` turns it into a byte-for-byte TCP forwarder that parses
nothing: the cheapest possible proxy hop, which the benchmark puts on the
gateway's core to tell what any extra process in the path costs on this host
(scheduling, wake-ups) from what the gateway's code costs.

It listens on 127.0.0.1 only and exits by itself after ``--max-seconds``
(default 1 h) so an orphaned copy cannot linger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time

CHAT_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "pong"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}

_BODY = json.dumps(CHAT_COMPLETION, separators=(",", ":")).encode()
_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
)
RESPONSE_KEEP_ALIVE = _HEAD + b"\r\n" + _BODY
RESPONSE_CLOSE = _HEAD + b"Connection: close\r\n\r\n" + _BODY
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

MAX_HEAD = 64 * 1024

# -- streaming answers ------------------------------------------------------------

STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
)
STREAM_TAIL = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"  # the [DONE] event, then the last chunk
WORDS = ("Pong!", "Here", "is", "a", "short", "answer,", "streamed", "one", "token", "at")


def stream_events(n: int) -> list[dict]:
    """The ``n`` chunk objects of one streamed answer (n >= 3)."""
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
    }

    def chunk(delta: dict, finish: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], "usage": None}

    content = n - 3
    events = [chunk({"role": "assistant", "content": ""})]
    for i in range(content):
        word = WORDS[i % len(WORDS)]
        events.append(chunk({"content": word if i == 0 else " " + word}))
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 5, "completion_tokens": content, "total_tokens": 5 + content}
    events.append({**base, "choices": [], "usage": usage})
    return events


def sse_chunk(event: bytes) -> bytes:
    """One ``data:`` event as one HTTP/1.1 chunk."""
    frame = b"data: " + event + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class Streams:
    """The streamed answer, built once at start-up (see ``configure``)."""

    events: tuple[bytes, ...] = ()
    whole_keep_alive = b""
    whole_close = b""
    gap = 0.0  # seconds between events; 0 = the whole stream in one write


def configure(chunks: int, gap_ms: float) -> None:
    events = [json.dumps(e, separators=(",", ":")).encode() for e in stream_events(chunks)]
    body = b"".join(sse_chunk(e) for e in events) + STREAM_TAIL
    Streams.events = tuple(events)
    Streams.whole_keep_alive = STREAM_HEAD + b"\r\n" + body
    Streams.whole_close = STREAM_HEAD + b"Connection: close\r\n\r\n" + body
    Streams.gap = gap_ms / 1000.0


configure(22, 0.0)


class UpstreamProtocol(asyncio.Protocol):
    """Answers each complete request in the buffer, in order (pipelining-safe).

    A paced stream (``--chunk-gap-ms``) holds the connection: requests that
    arrive meanwhile wait in the buffer until it is over."""

    __slots__ = ("buf", "busy", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy is not None:
            self.busy.cancel()
            self.busy = None

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.busy is None:
            self._answer()

    def _answer(self) -> None:
        buf = self.buf
        out = []
        close = False
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    out.append(BAD_REQUEST)
                    close = True
                    buf = b""
                break
            head = buf[:end].lower()
            pos = end + 4
            cl = head.find(b"\r\ncontent-length:")
            if cl >= 0:
                eol = head.find(b"\r\n", cl + 2)
                try:
                    length = int(head[cl + 17 : eol if eol >= 0 else len(head)])
                except ValueError:
                    out.append(BAD_REQUEST)
                    close = True
                    buf = b""
                    break
                if len(buf) < pos + length:
                    break  # body not complete yet
                pos += length
            elif b"\r\ntransfer-encoding: chunked" in head:
                done = _chunked_end(buf, pos)
                if done is None:
                    break
                pos = done
            stream = STREAM_RE.search(buf, end + 4, pos) is not None
            close = b"\r\nconnection: close" in head
            buf = b"" if close else buf[pos:]
            if stream and Streams.gap > 0:
                self.buf = buf
                if out:
                    self.transport.write(b"".join(out))
                self.busy = asyncio.ensure_future(self._paced_stream(close))
                return
            if stream:
                out.append(Streams.whole_close if close else Streams.whole_keep_alive)
            else:
                out.append(RESPONSE_CLOSE if close else RESPONSE_KEEP_ALIVE)
            if close:
                break
        self.buf = buf
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            self.transport.close()

    async def _paced_stream(self, close: bool) -> None:
        """One event every ``Streams.gap`` s, each stamped with its send time."""
        loop = asyncio.get_running_loop()
        transport = self.transport
        events = Streams.events
        head = STREAM_HEAD + (b"Connection: close\r\n\r\n" if close else b"\r\n")
        t0 = loop.time()
        for i, event in enumerate(events):
            if i:
                delay = t0 + i * Streams.gap - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if transport.is_closing():
                return
            stamped = event[:-1] + b',"bench_sent_ns":%d}' % time.monotonic_ns()
            frame = sse_chunk(stamped)
            if i == 0:
                frame = head + frame
            if i == len(events) - 1:
                frame += STREAM_TAIL
            transport.write(frame)
        self.busy = None
        if close:
            transport.close()
        elif self.buf:
            self._answer()


def _chunked_end(buf: bytes, pos: int) -> int | None:
    """Offset just past a complete chunked body starting at ``pos``, or None."""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            return None
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # no trailers expected: "0\r\n\r\n"
            return None if end < 0 else end + 4
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return None


# -- a do-nothing TCP forwarder (the baseline for "what does any proxy hop cost") ----


class _ForwardUpstream(asyncio.Protocol):
    """The forwarder's connection to the target: bytes go back to the client."""

    def __init__(self, client: ForwardProtocol) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class ForwardProtocol(asyncio.Protocol):
    """Pipes each client connection to ``target`` byte for byte, parsing nothing."""

    target: tuple[str, int] = ("127.0.0.1", 0)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._task = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _ForwardUpstream(self), *ForwardProtocol.target
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream
        if self.pending:
            upstream.write(b"".join(self.pending))
            self.pending = []
        if self.transport.is_closing():
            upstream.close()

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(host: str, port: int, max_seconds: float, forward: bool = False) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        ForwardProtocol if forward else UpstreamProtocol,
        host,
        port,
        backlog=1024,
        reuse_address=True,
    )
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"LISTENING {bound}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    except TimeoutError:
        pass
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long")
    parser.add_argument(
        "--stream-chunks",
        type=int,
        default=22,
        help="data events per streamed answer: role, N-3 content, finish, usage (default 22)",
    )
    parser.add_argument(
        "--forward-to",
        type=int,
        default=0,
        metavar="PORT",
        help="be a plain TCP forwarder to 127.0.0.1:PORT instead (a baseline proxy hop)",
    )
    parser.add_argument(
        "--chunk-gap-ms",
        type=float,
        default=0.0,
        help="ms between the events of a stream (default 0: the whole stream in one write)",
    )
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("::1", "localhost"):
        parser.error("the bench upstream listens on loopback only")
    if args.stream_chunks < 3:
        parser.error("--stream-chunks needs >= 3 (role, finish and usage chunks)")
    if args.chunk_gap_ms < 0:
        parser.error("--chunk-gap-ms must be >= 0")
    configure(args.stream_chunks, args.chunk_gap_ms)
    ForwardProtocol.target = (args.host, args.forward_to)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, args.max_seconds, forward=args.forward_to > 0))


if __name__ == "__main__":
    main()
