"""The raw-socket client for streamed answers, which wrk cannot time: it
timestamps every read, so it sees the first byte and each event arrive."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from _common import CHAT_PATH, CLIENT_KEY, HOST, BenchError

PATHS = ("direct", "fwd", "gw")  # upstream; through a plain TCP forwarder; through the gateway

_SENT_NS_RE = re.compile(rb'"bench_sent_ns":(\d+)')


@dataclass
class StreamTiming:
    """One streamed answer as the client saw it. Times are CLOCK_MONOTONIC ns."""

    sent: int  # just before the request was written
    first_byte: int  # the first response byte arrived
    events: list[int]  # arrival of each SSE event, ``[DONE]`` included (last)
    upstream_sent: list[int | None]  # the upstream's "bench_sent_ns" of each event
    end: int  # the end of the chunked body (the 0-size chunk)
    done: bool  # it ended with ``data: [DONE]``

    def ms(self, t: int) -> float:
        return (t - self.sent) / 1e6


class StreamClient:
    """HTTP/1.1 keep-alive client for streamed answers, one request at a time.

    A blocking socket with TCP_NODELAY; every ``recv`` is timestamped, and an
    event counts as arrived when the read that completed its ``\\n\\n`` returns.
    It decodes the chunked framing itself, so it sees what a real client sees
    and when: nothing in between buffers."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def close(self) -> None:
        """Close the connection; the next ``stream`` opens a new one."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def stream(self, body: str) -> StreamTiming:
        """POST ``body`` and read the whole streamed answer, timing every read."""
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = body.encode()
        request = (
            f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        sent = time.monotonic_ns()
        try:
            self.sock.sendall(request)
            return self._read(sent)
        except (OSError, BenchError, ValueError) as e:
            self.close()
            if isinstance(e, BenchError):
                raise
            raise BenchError(f"stream from port {self.port}: {e!r}") from None

    def _read(self, sent: int) -> StreamTiming:
        sock = self.sock
        deadline = sent + int(self.timeout * 1e9)
        raw = b""
        first = 0
        status = None
        close = False
        sse = b""
        size = -1  # bytes left in the current chunk; -1 = a size line is next
        last_chunk = False
        finished = False
        events: list[int] = []
        upstream: list[int | None] = []
        done = False
        while True:
            data = sock.recv(65536)
            now = time.monotonic_ns()
            if not data:
                raise BenchError(f"port {self.port} closed the connection mid-response")
            if not first:
                first = now
            raw += data
            if status is None:
                i = raw.find(b"\r\n\r\n")
                if i < 0:
                    continue
                lines = raw[:i].decode("latin-1").split("\r\n")
                raw = raw[i + 4 :]
                status = int(lines[0].split()[1])
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip().lower()
                close = headers.get("connection") == "close"
                if status != 200 or "chunked" not in headers.get("transfer-encoding", ""):
                    time.sleep(0.05)  # a short error body: let it arrive
                    with contextlib.suppress(OSError):
                        raw += sock.recv(65536)
                    raise BenchError(f"port {self.port}: {lines[0]} {raw[:300]!r}, not a stream")
            while True:  # the chunked framing
                if size < 0:
                    j = raw.find(b"\r\n")
                    if j < 0:
                        break
                    if last_chunk:  # the empty line after "0\r\n" (no trailers)
                        finished = True
                        break
                    size = int(raw[:j].split(b";", 1)[0], 16)
                    raw = raw[j + 2 :]
                    if size == 0:
                        last_chunk = True
                        size = -1
                    continue
                take = raw[:size]
                sse += take
                raw = raw[len(take) :]
                size -= len(take)
                if size:
                    break
                if len(raw) < 2:  # the CRLF after the chunk data
                    size = 0
                    break
                raw = raw[2:]
                size = -1
            while True:  # whole events
                k = sse.find(b"\n\n")
                if k < 0:
                    break
                event, sse = sse[:k], sse[k + 2 :]
                events.append(now)
                done = event == b"data: [DONE]"
                m = _SENT_NS_RE.search(event)
                upstream.append(int(m.group(1)) if m else None)
            if finished:
                if close:
                    self.close()
                return StreamTiming(sent, first, events, upstream, now, done)
            if now > deadline:
                raise BenchError(f"port {self.port}: stream not over after {self.timeout} s")


@contextlib.contextmanager
def stream_clients(ports: dict[str, int], timeout: float) -> Iterator[dict[str, StreamClient]]:
    """One client per named port, all closed at the end of the block."""
    clients = {k: StreamClient(port, timeout) for k, port in ports.items()}
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def checked(client: StreamClient, body: str, events: int, what: str) -> StreamTiming:
    """One stream on ``client``; it must carry ``events`` data events, then ``[DONE]``."""
    timing = client.stream(body)
    if len(timing.events) != events + 1 or not timing.done:
        raise BenchError(
            f"{what} streamed {len(timing.events)} events (done={timing.done}), "
            f"expected {events} + [DONE]"
        )
    return timing


def check_stream(port: int, body: str, events: int, what: str) -> StreamTiming:
    """``checked`` on a connection of its own, closed after."""
    with stream_clients({what: port}, 10.0) as clients:
        return checked(clients[what], body, events, what)


def rotating_streams(
    clients: dict[str, StreamClient], body: str, n: int, events: int
) -> dict[str, list[StreamTiming]]:
    """``n`` streams on each path, one path after the other in a rotating order,
    so the i-th streams of the paths were taken close together in time."""
    got: dict[str, list[StreamTiming]] = {k: [] for k in clients}
    names = list(clients)
    for i in range(n):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            got[k].append(checked(clients[k], body, events, k))
    return got
