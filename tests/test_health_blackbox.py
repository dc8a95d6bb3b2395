"""CONTRACT 5.2, black-box: health, readiness and graceful shutdown of the
real gateway process.

``/healthz`` and ``/readyz`` on both listeners without auth; readiness 503
with its reason before etcd's first load and during an etcd outage (a real
etcd, killed and restarted), 200 again once it is back; SIGTERM while a
stream is open (a mock upstream pacing its events): readiness 503 on a
keep-alive connection already open, new connections refused, the stream
completes with ``[DONE]``, exit 0; a stream longer than the grace is cut and
logged ``end=client_gone``; a second SIGTERM cuts at once."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from tests.conftest import Gateway, start_gateway
from tests.support.access_log import LOGFMT
from tests.support.etcd import EtcdServer
from tests.support.gateway import free_port, http, is_listening, treq_stream
from tests.support.mock_upstream import chat_chunk, sse_event
from tests.test_etcd_store import eventually

CHAT = "/v1/chat/completions"
READY = (200, {"status": "ready"})
_ACCESS = re.compile(r"\] access (.*)$", re.MULTILINE)


def access_lines(out: str) -> list[dict[str, str]]:
    """The fields of every access-log line in ``out`` (values as written)."""
    return [dict(LOGFMT.findall(text)) for text in _ACCESS.findall(out)]


def probe(base: str, path: str) -> tuple[int, dict]:
    status, _, body = http("GET", base + path, timeout=3)
    return status, json.loads(body)


class KeepAlive:
    """One HTTP/1.1 connection kept open across requests (blocking: run it in a thread)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._buffer = b""

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        while b"\r\n\r\n" not in self._buffer:
            self._read()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            self._read()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(lines[0].split(" ")[1]), headers, body

    def closed_by_peer(self) -> bool:
        return self.sock.recv(1) == b""

    def _read(self) -> None:
        data = self.sock.recv(65536)
        assert data, "the connection was closed"
        self._buffer += data

    def close(self) -> None:
        self.sock.close()


# -- the probes ------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_on_both_listeners_without_auth(tmp_path):
    gw = start_gateway(tmp_path)
    try:
        for base in (gw.proxy, gw.admin):
            status, headers, body = http("GET", base + "/healthz")
            assert (status, body) == (200, b'{"status": "ok"}'), base
            assert headers["content-type"] == "application/json"
            status, _, body = http("GET", base + "/readyz")
            assert (status, body) == (200, b'{"status": "ready"}'), base
            assert http("HEAD", base + "/readyz")[0] == 200
        # only GET/HEAD are probes: a POST is an ordinary proxy request (auth first)
        assert http("POST", gw.proxy + "/healthz")[0] == 401
        # probes are not API requests: no access-log line (the POST has one)
        logged = access_lines(gw.process.stdout)
        assert [(e["method"], e["path"]) for e in logged] == [("POST", "/healthz")]
    finally:
        assert gw.process.stop() == 0


def etcd_gateway(directory, server: EtcdServer, **etcd) -> Gateway:
    settings = {"host": [server.url], "prefix": "/health", "timeout": 1, **etcd}
    directory.mkdir(parents=True, exist_ok=True)
    return start_gateway(directory, extra={"deployment": {"etcd": settings}})


def test_readiness_is_503_before_etcds_first_load_and_healthz_answers(tmp_path):
    server = EtcdServer(tmp_path / "etcd")  # not started yet: the first load waits
    gw = etcd_gateway(tmp_path / "gw", server, startup_retries=100, startup_retry_interval=0.2)
    try:
        eventually(
            lambda: (
                probe(gw.proxy, "/readyz")
                == (
                    503,
                    {"status": "not_ready", "reason": "config not loaded yet (etcd unreachable)"},
                )
            ),
            timeout=5,
            what="503 config not loaded yet",
        )
        assert probe(gw.admin, "/readyz")[0] == 503
        for base in (gw.proxy, gw.admin):  # alive: a liveness probe must not kill it
            assert probe(base, "/healthz") == (200, {"status": "ok"})
        server.start()
        eventually(lambda: probe(gw.proxy, "/readyz") == READY, timeout=5, what="ready")
        assert probe(gw.admin, "/readyz") == READY
    finally:
        gw.process.stop()
        server.stop()


def test_readiness_is_503_while_etcd_is_down_and_200_once_it_is_back(tmp_path):
    server = EtcdServer(tmp_path / "etcd").start()
    gw = etcd_gateway(tmp_path / "gw", server)
    try:  # the ports accept before the first load ends: ready a moment later
        eventually(lambda: probe(gw.proxy, "/readyz") == READY, timeout=5, what="ready")
        server.kill()  # the watch's connection closes: seen at once
        unreachable = (503, {"status": "not_ready", "reason": "etcd unreachable"})
        eventually(lambda: probe(gw.proxy, "/readyz") == unreachable, timeout=3, what="503")
        assert probe(gw.admin, "/readyz") == unreachable
        assert probe(gw.proxy, "/healthz") == (200, {"status": "ok"})
        server.start()  # the same port: the watch reconnects (1 s, 2 s ... backoff)
        eventually(lambda: probe(gw.proxy, "/readyz") == READY, timeout=10, what="ready again")
        assert probe(gw.admin, "/readyz") == READY
    finally:
        gw.process.stop()
        server.stop()


# -- SIGTERM -----------------------------------------------------------------------------------


async def streaming_gateway(tmp_path, upstream, events, gap, grace=None, end="close"):
    """A gateway (``shutdown_grace`` if given) with a model on ``upstream``
    pacing ``events`` chunks ``gap`` s apart, then ``[DONE]`` (or, with
    ``end="hang"``, nothing ever more); the gateway and a stream started."""
    extra = {"server": {"shutdown_grace": grace}} if grace is not None else None
    gw = start_gateway(tmp_path, extra=extra)
    await gw.add_model("paced", "openai/paced", {"api_key": "sk-up", "api_base": upstream.base_url})
    key = await gw.add_key(["paced"])
    frames = [sse_event(chat_chunk(f"t{i}")) for i in range(events)]
    if end == "close":
        frames.append(b"data: [DONE]\n\n")
    upstream.set_sse(CHAT, frames, gap=gap, end=end)
    stream = defer.ensureDeferred(
        treq_stream(
            "POST",
            gw.proxy + CHAT,
            headers={"Authorization": f"Bearer {key}"},
            json_body={
                "model": "paced",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
            timeout=20,
        )
    )
    await upstream.wait_for_requests(1, timeout=5)
    await task.deferLater(reactor, 0.1, lambda: None)  # the stream's head is out
    return gw, stream


async def exit_code(gw: Gateway, timeout: float = 15.0) -> int:
    return await threads.deferToThread(gw.process.wait, timeout)


@pytest_twisted.ensureDeferred
async def test_sigterm_lets_an_open_stream_finish_says_not_ready_and_refuses_new_connections(
    tmp_path, fresh_upstream
):
    gw, stream = await streaming_gateway(tmp_path, fresh_upstream, events=8, gap=0.25)
    kept = await threads.deferToThread(KeepAlive, gw.proxy_port)
    try:
        status, _, _ = await threads.deferToThread(kept.get, "/readyz")
        assert status == 200
        gw.process.signal(signal.SIGTERM)
        await task.deferLater(reactor, 0.2, lambda: None)
        # the connection already open hears it, and is closed after the answer
        status, headers, body = await threads.deferToThread(kept.get, "/readyz")
        assert (status, json.loads(body)) == (
            503,
            {"status": "not_ready", "reason": "shutting down"},
        )
        assert headers["connection"] == "close"
        assert await threads.deferToThread(kept.closed_by_peer)
        # new connections are refused while the stream goes on
        assert not await threads.deferToThread(is_listening, gw.proxy_port)
        assert not await threads.deferToThread(is_listening, gw.admin_port)
        assert not stream.called
        result = await stream
        assert result.status == 200 and result.ended == "done"
        assert result.data[-1] == "[DONE]" and len(result.json_chunks) == 8
        assert await exit_code(gw) == 0
        [line] = [e for e in access_lines(gw.process.stdout) if e["path"] == CHAT]
        assert line["end"] == "done"
    finally:
        kept.close()
        if gw.process.running:
            gw.process.stop()


@pytest_twisted.ensureDeferred
async def test_a_stream_longer_than_the_grace_is_cut_and_logged_client_gone(
    tmp_path, fresh_upstream
):
    gw, stream = await streaming_gateway(tmp_path, fresh_upstream, events=40, gap=0.25, grace=1)
    try:
        signalled = time.monotonic()
        gw.process.signal(signal.SIGTERM)
        result = await stream
        assert result.ended == "cut" and "[DONE]" not in result.data  # told it is incomplete
        assert 0.8 < time.monotonic() - signalled < 4
        assert await exit_code(gw) == 0
        [line] = [e for e in access_lines(gw.process.stdout) if e["path"] == CHAT]
        assert line["end"] == "client_gone"
        assert "the shutdown grace is over, cutting 1 requests still in progress" in (
            gw.process.stdout
        )
    finally:
        if gw.process.running:
            gw.process.stop()


@pytest_twisted.ensureDeferred
async def test_a_second_sigterm_cuts_at_once(tmp_path, fresh_upstream):
    gw, stream = await streaming_gateway(tmp_path, fresh_upstream, events=1, gap=0, end="hang")
    try:
        gw.process.signal(signal.SIGTERM)
        await task.deferLater(reactor, 0.5, lambda: None)
        assert not stream.called  # the default grace (30 s) lets it run
        signalled = time.monotonic()
        gw.process.signal(signal.SIGTERM)
        result = await stream
        assert result.ended == "cut" and "[DONE]" not in result.data
        assert await exit_code(gw, timeout=5) == 0
        assert time.monotonic() - signalled < 3
        [line] = [e for e in access_lines(gw.process.stdout) if e["path"] == CHAT]
        assert line["end"] == "client_gone"
        assert "a second signal (SIGTERM)" in gw.process.stdout
    finally:
        if gw.process.running:
            gw.process.stop()


def test_sigint_with_nothing_in_flight_exits_0_at_once(tmp_path):
    gw = start_gateway(tmp_path, mode="console")
    started = time.monotonic()
    assert gw.process.stop(sig=signal.SIGINT) == 0
    assert time.monotonic() - started < 3
    assert not is_listening(gw.proxy_port) and free_port()
