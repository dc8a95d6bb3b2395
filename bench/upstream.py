"""A fast, fixed-answer OpenAI-compatible upstream for benchmarks (not a test double).

A raw asyncio ``Protocol`` HTTP/1.1 server with keep-alive and pipelining: it
answers every ``POST`` (any path; ``/v1/chat/completions`` is what the bench
sends) with one small ``chat.completion`` JSON that carries ``usage``, and
``GET`` with the same body. It parses only what it must (the request line,
``Content-Length`` or chunked framing, ``Connection: close``), so on one core
it answers tens of thousands of requests a second and is never the bottleneck
of a gateway benchmark. Uses uvloop when it is installed.

    python bench/upstream.py --port 0          # prints "LISTENING <port>"

It listens on 127.0.0.1 only and exits by itself after ``--max-seconds``
(default 1 h) so an orphaned copy cannot linger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

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


class UpstreamProtocol(asyncio.Protocol):
    """Answers each complete request in the buffer, in order (pipelining-safe)."""

    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
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
            if b"\r\nconnection: close" in head:
                out.append(RESPONSE_CLOSE)
                close = True
                buf = b""
                break
            out.append(RESPONSE_KEEP_ALIVE)
            buf = buf[pos:]
        self.buf = buf
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            self.transport.close()


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


async def serve(host: str, port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, host, port, backlog=1024, reuse_address=True
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
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("::1", "localhost"):
        parser.error("the bench upstream listens on loopback only")
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, args.max_seconds))


if __name__ == "__main__":
    main()
