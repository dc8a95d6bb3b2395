"""How much does twisted-gw add on top of its upstream? A benchmark, not a test.

    python bench/overhead.py                      # 5 s per level, concurrency 1,16,64
    python bench/overhead.py --duration 10 --concurrency 1,8,64,128
    python bench/overhead.py --mode stream        # streamed answers only (= --stream)
    python bench/overhead.py --profile            # + where the gateway's time goes

What it does, all on 127.0.0.1 and bounded in time:

1. starts ``bench/upstream.py`` (a raw asyncio HTTP/1.1 keep-alive server with a
   fixed ``chat.completion`` answer, or a 22-event SSE stream for
   ``"stream": true``) pinned to the load core, and for streams a second one
   that paces its events ``--chunk-gap-ms`` apart;
2. writes a gateway config (embedded store in a temp dir, admin key, free
   ports), starts ``twisted-gw --config`` pinned to ONE core (``taskset``),
   creates the models and the API key through the Admin API, stops it, then
   restarts it on the populated store and measures cold start = process start
   -> first 200 on ``POST /v1/chat/completions`` (``--cold-runs`` times), and
   the idle RSS after start-up;
3. for each concurrency and mode (``--mode stream|nonstream|both``), drives
   ``wrk`` (pinned to the load core, Lua script for the POST body, headers and
   p50/p99) for ``--duration`` seconds against the upstream directly
   (baseline) and through the gateway, sampling the gateway's CPU% and RSS
   from /proc; for streams p50/p99 are of the whole stream;
4. streams only: wrk cannot see the first byte, so a small raw-socket client
   that timestamps every read runs ``--ttfb-streams`` sequential streams at one
   connection, direct and through the gateway in turns (time to first byte and
   to each event), then ``--gap-streams`` paced streams, where each event
   carries the upstream's send time, for the delay the gateway adds per event;
5. prints side-by-side tables, with the targets next to the figures;
6. ``--profile``: one more run at the highest concurrency (per mode) with
   py-spy attached to the gateway (or the gateway under cProfile when py-spy is
   missing, or with ``--profiler cprofile``), printing the top functions by self
   and cumulative time, hot spots and a per-subsystem breakdown, for streams
   also the per-event path; plus ``-X importtime`` for the start-up.

Needs ``wrk`` (``apt-get install -y wrk``) and, for ``--profile``, preferably
``py-spy`` (``pip install py-spy``). Every subprocess is stopped on exit,
Ctrl-C and SIGTERM included (and dies with this script via PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ADMIN_KEY = "bench-admin-key"
CLIENT_KEY = "sk-bench"
#: --rate-limits: every kind configured on the key and the model, never reached,
#: so the run measures what checking and accounting cost per request
BENCH_LIMITS = {"rpm": 10**9, "rpd": 10**9, "tpm": 10**12, "tpd": 10**12, "concurrency": 10**6}
MODEL_NAME = "bench"
UPSTREAM_MODEL = "bench-model"
CHAT_PATH = "/v1/chat/completions"
REQUEST_BODY = json.dumps(
    {"model": MODEL_NAME, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 8},
    separators=(",", ":"),
)

STREAM_REQUEST_BODY = json.dumps(
    {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 32,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    separators=(",", ":"),
)
GAP_MODEL_NAME = "bench-gap"  # a second model, on an upstream that paces its events
GAP_REQUEST_BODY = STREAM_REQUEST_BODY.replace(f'"{MODEL_NAME}"', f'"{GAP_MODEL_NAME}"', 1)
STREAM_EVENTS = 22  # data events per stream: role, 19 content, finish, usage; then [DONE]

TARGET_RPS = 1300  # at TARGET_RPS_CONCURRENCY connections, gateway on one core
TARGET_RPS_CONCURRENCY = 64
TARGET_ADDED_P50_MS = 1.0  # at 1 connection
TARGET_COLD_START_MS = 1000.0
TARGET_IDLE_RSS_MB = 60.0
TARGET_STREAMS = 400  # streams/s at TARGET_RPS_CONCURRENCY connections, gateway on one core
TARGET_ADDED_TTFB_MS = 1.0  # at 1 connection

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"requests\": %%.0f, \"duration_us\": %%.0f, \"bytes\": %%.0f, " ..
    "\"err_connect\": %%.0f, \"err_read\": %%.0f, \"err_write\": %%.0f, " ..
    "\"err_status\": %%.0f, \"err_timeout\": %%.0f, \"p50\": %%.1f, \"p90\": %%.1f, " ..
    "\"p99\": %%.1f, \"p999\": %%.1f, \"max\": %%.1f, \"mean\": %%.1f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


class BenchError(Exception):
    """A step failed; the message says which and why."""


# -- subprocesses ----------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child if this script dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Processes:
    """Every subprocess this script starts, so that all of them get stopped."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], cpu: int | None, **kwargs: Any) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]  # taskset execs: same pid
        proc = subprocess.Popen(
            argv,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - this script starts no threads
            start_new_session=True,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def stop(
        self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0
    ) -> float:
        """Signal, wait (then SIGKILL); returns the seconds it took to exit."""
        t0 = time.perf_counter()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)
        return time.perf_counter() - t0

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=3.0)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- /proc sampling ------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def core_times(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one core from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                return sum(values) - idle, sum(values)
    return 0, 0


@dataclass
class Usage:
    cpu_pct: float = 0.0
    rss_peak_mb: float = 0.0
    upstream_cpu_pct: float = 0.0
    load_core_pct: float | None = None
    noise_pct: float | None = None  # gateway core busy with anything but the gateway
    cpu_s: float = 0.0  # gateway CPU seconds over the run


class Sampler:
    """CPU% of the gateway and the upstream, peak RSS, the load core's busy %."""

    def __init__(
        self,
        gateway_pid: int | None,
        upstream_pid: int,
        load_cpu: int,
        gateway_cpu: int,
        also_on_gw_core: tuple[int, ...] = (),
    ) -> None:
        self.pids = {"gw": gateway_pid, "up": upstream_pid}
        # our own other processes on the gateway core (the TCP forwarders): not noise
        for i, pid in enumerate(also_on_gw_core):
            self.pids[f"own{i}"] = pid
        self.cpus = {"load": load_cpu, "gw": gateway_cpu}
        self.rss_peak = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.ticks0 = {k: cpu_ticks(p) for k, p in self.pids.items() if p}
        self.core0 = {k: core_times(c) for k, c in self.cpus.items()}
        self.sample()

    def sample(self) -> None:
        if self.pids["gw"]:
            with contextlib.suppress(OSError):
                self.rss_peak = max(self.rss_peak, rss_mb(self.pids["gw"]))

    def stop(self) -> Usage:
        self.sample()
        wall = max(time.perf_counter() - self.t0, 1e-6)
        pct = {
            k: 100.0 * (cpu_ticks(p) - self.ticks0[k]) / CLK_TCK / wall
            for k, p in self.pids.items()
            if p
        }
        usage = Usage(pct.get("gw", 0.0), self.rss_peak, pct.get("up", 0.0))
        usage.cpu_s = usage.cpu_pct / 100.0 * wall
        busy = {}
        for k, c in self.cpus.items():
            busy1, total1 = core_times(c)
            dt = total1 - self.core0[k][1]
            busy[k] = 100.0 * (busy1 - self.core0[k][0]) / dt if dt else None
        usage.load_core_pct = busy["load"]
        if busy["gw"] is not None and self.cpus["gw"] != self.cpus["load"]:
            own = sum(v for k, v in pct.items() if k.startswith("own"))
            usage.noise_pct = max(0.0, busy["gw"] - usage.cpu_pct - own)
        return usage


# -- small HTTP helpers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_call(
    port: int, method: str, path: str, body: Any = None, key: str | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, str | bytes | None) else json.dumps(body)
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def log_tail(path: str, lines: int = 15) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
    return ""


# -- streams: a tiny client that timestamps every event -------------------------------

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
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def stream(self, body: str) -> StreamTiming:
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


def check_stream(port: int, body: str, events: int, what: str) -> StreamTiming:
    """One stream; it must carry ``events`` data events, then ``[DONE]``."""
    client = StreamClient(port)
    try:
        timing = client.stream(body)
    finally:
        client.close()
    if len(timing.events) != events + 1 or not timing.done:
        raise BenchError(
            f"{what} streamed {len(timing.events)} events (done={timing.done}), "
            f"expected {events} + [DONE]"
        )
    return timing


PATHS = ("direct", "fwd", "gw")  # upstream; through a plain TCP forwarder; through the gateway


def checked(client: StreamClient, body: str, events: int, what: str) -> StreamTiming:
    timing = client.stream(body)
    if len(timing.events) != events + 1 or not timing.done:
        raise BenchError(
            f"{what} streamed {len(timing.events)} events (done={timing.done}), "
            f"expected {events} + [DONE]"
        )
    return timing


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


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))]


# -- the pieces ------------------------------------------------------------------


@dataclass
class Gateway:
    proc: subprocess.Popen
    started: float  # perf_counter just before Popen
    log_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Bench:
    args: argparse.Namespace
    procs: Processes
    tmp: str
    upstream_port: int = 0
    upstream_pid: int = 0
    gap_upstream_port: int = 0  # paced streams (--chunk-gap-ms), for the gap run
    gap_upstream_pid: int = 0
    fwd_port: int = 0  # plain TCP forwarders on the gateway core: to the upstream,
    gap_fwd_port: int = 0  # and to the paced upstream (the baseline proxy hop)
    fwd_pids: tuple[int, ...] = ()
    proxy_port: int = 0
    admin_port: int = 0
    config_path: str = ""
    gateway: Gateway | None = None
    notes: list[str] = field(default_factory=list)

    # upstream

    def _spawn_upstream(self, *extra: str, cpu: int | None = None) -> tuple[int, int]:
        """Start one ``bench/upstream.py``; (port, pid)."""
        argv = [
            sys.executable,
            os.path.join(HERE, "upstream.py"),
            "--host",
            HOST,
            "--port",
            "0",
            "--max-seconds",
            str(self.args.max_seconds),
            *extra,
        ]
        cpu = self.args.load_cpu if cpu is None else cpu
        proc = self.procs.spawn(argv, cpu, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("LISTENING "):
            raise BenchError(f"upstream did not start (said {line!r})")
        return int(line.split()[1]), proc.pid

    def start_upstream(self) -> None:
        self.upstream_port, self.upstream_pid = self._spawn_upstream()
        status, body = http_call(self.upstream_port, "POST", CHAT_PATH, REQUEST_BODY)
        if status != 200 or b"chat.completion" not in body:
            raise BenchError(f"upstream answered {status} {body[:200]!r}")
        if self.args.stream:
            check_stream(self.upstream_port, STREAM_REQUEST_BODY, STREAM_EVENTS, "the upstream")
            gap = self.args.chunk_gap_ms
            extra = ("--chunk-gap-ms", f"{gap:g}", "--stream-chunks", str(self.args.gap_chunks))
            self.gap_upstream_port, self.gap_upstream_pid = self._spawn_upstream(*extra)
            gw_cpu = self.args.gateway_cpu  # where the gateway's hop is, idle under wrk
            fwd = ("--forward-to", str(self.upstream_port))
            self.fwd_port, pid1 = self._spawn_upstream(*fwd, cpu=gw_cpu)
            fwd = ("--forward-to", str(self.gap_upstream_port))
            self.gap_fwd_port, pid2 = self._spawn_upstream(*fwd, cpu=gw_cpu)
            self.fwd_pids = (pid1, pid2)
            check_stream(self.fwd_port, STREAM_REQUEST_BODY, STREAM_EVENTS, "the TCP forwarder")

    # gateway

    def write_config(self) -> None:
        self.proxy_port, self.admin_port = free_port(), free_port()
        config = {
            "deployment": {
                "store": {"path": os.path.join(self.tmp, "store.json")},
                "admin": {"admin_key": [{"key": ADMIN_KEY}]},
            },
            "server": {
                "proxy": {"listen": f"{HOST}:{self.proxy_port}"},
                "admin": {"listen": f"{HOST}:{self.admin_port}"},
            },
        }
        # JSON is YAML too; the .yaml name is what users write.
        self.config_path = os.path.join(self.tmp, "config.yaml")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

    def gateway_argv(self, python_flags: tuple[str, ...] = ()) -> list[str]:
        cfg = ["--config", self.config_path]
        bindir = os.path.dirname(sys.executable)
        if self.args.launcher == "twistd":
            twistd = os.path.join(bindir, "twistd")
            twistd = twistd if os.access(twistd, os.X_OK) else shutil.which("twistd") or "twistd"
            return [sys.executable, *python_flags, twistd, "-n", "--pidfile=", "twisted-gw", *cfg]
        if python_flags:
            return [sys.executable, *python_flags, "-m", "twisted_gw", *cfg]
        # The real console script, not a pyenv shim (a shim adds ~60 ms to every start).
        script = os.path.join(bindir, "twisted-gw")
        if os.access(script, os.X_OK):
            return [script, *cfg]
        return [sys.executable, "-m", "twisted_gw", *cfg]

    def start_gateway(self, python_flags: tuple[str, ...] = (), tag: str = "") -> Gateway:
        for port in (self.proxy_port, self.admin_port):
            if accepts(port):  # a gateway still up would answer in the new one's place
                raise BenchError(f"port {port} is still taken before starting a gateway")
        log_path = os.path.join(self.tmp, f"gateway{tag}.log")
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            started = time.perf_counter()
            proc = self.procs.spawn(
                self.gateway_argv(python_flags),
                self.args.gateway_cpu,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        finally:
            log.close()
        return Gateway(proc, started, log_path)

    def _check_alive(self, gw: Gateway, what: str) -> None:
        if gw.proc.poll() is not None:
            raise BenchError(
                f"gateway exited with {gw.proc.returncode} while {what}:\n{log_tail(gw.log_path)}"
            )

    def wait_accepting(self, gw: Gateway, port: int, timeout: float = 15.0) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self._check_alive(gw, f"waiting for port {port}")
            if accepts(port):
                return time.perf_counter() - gw.started
            time.sleep(0.002)
        raise BenchError(f"gateway port {port} not accepting after {timeout} s")

    def wait_first_200(self, gw: Gateway, timeout: float = 15.0) -> tuple[float, float]:
        """(s to proxy port accepting, s to first 200 on a chat completion)."""
        accepted = self.wait_accepting(gw, self.proxy_port, timeout)
        deadline = time.perf_counter() + timeout
        last = "no answer"
        while time.perf_counter() < deadline:
            self._check_alive(gw, "waiting for the first 200")
            try:
                status, body = http_call(
                    self.proxy_port, "POST", CHAT_PATH, REQUEST_BODY, CLIENT_KEY, timeout=5
                )
            except OSError as e:
                last = repr(e)
                time.sleep(0.002)
                continue
            if status == 200:
                done = time.perf_counter() - gw.started
                if b'"usage"' not in body:
                    raise BenchError(f"gateway 200 without usage: {body[:300]!r}")
                return accepted, done
            last = f"{status} {body[:200]!r}"
            time.sleep(0.002)
        raise BenchError(f"no 200 from the gateway within {timeout} s (last: {last})")

    def provision(self) -> None:
        """First start: create the model and the key through the Admin API."""
        gw = self.start_gateway(tag="-provision")
        self.wait_accepting(gw, self.admin_port)
        entities = []
        models = [(MODEL_NAME, self.upstream_port)]
        if self.gap_upstream_port:
            models.append((GAP_MODEL_NAME, self.gap_upstream_port))
        for name, port in models:
            model = {
                "name": name,
                "model": f"openai/{UPSTREAM_MODEL}",
                "provider_config": {
                    "api_key": "sk-upstream",
                    "api_base": f"http://{HOST}:{port}/v1",
                },
            }
            if self.args.rate_limits:
                model["rate_limit"] = dict(BENCH_LIMITS)
            entities.append(("/aisix/admin/models", model))
        apikey = {"key": CLIENT_KEY, "allowed_models": [name for name, _ in models]}
        if self.args.rate_limits:
            apikey["rate_limit"] = dict(BENCH_LIMITS)
        entities.append(("/aisix/admin/apikeys", apikey))
        for path, entity in entities:
            status, body = http_call(self.admin_port, "POST", path, entity, ADMIN_KEY)
            if status != 201:
                raise BenchError(f"POST {path} -> {status} {body[:300]!r}")
        self.wait_first_200(gw, timeout=10)  # the running gateway picked them up
        self.procs.stop(gw.proc)

    def cold_starts(self) -> tuple[list[float], list[float], list[float]]:
        """Restart on the populated store; the last gateway stays up."""
        firsts, accepts_, stops = [], [], []
        for i in range(self.args.cold_runs):
            gw = self.start_gateway()
            accepted, first = self.wait_first_200(gw)
            accepts_.append(accepted * 1000)
            firsts.append(first * 1000)
            if i < self.args.cold_runs - 1:
                stops.append(self.procs.stop(gw.proc) * 1000)
            else:
                self.gateway = gw
        return firsts, accepts_, stops

    # load

    def _spawn_wrk(self, port: int, connections: int, duration: int, body: str) -> subprocess.Popen:
        name = "chat-stream.lua" if body == STREAM_REQUEST_BODY else "chat.lua"
        script = os.path.join(self.tmp, name)
        if not os.path.exists(script):
            with open(script, "w") as f:
                f.write(WRK_LUA % {"body": body, "key": CLIENT_KEY})
        threads = max(1, min(self.args.wrk_threads, connections))
        argv = [
            self.args.wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "-s",
            script,
            f"http://{HOST}:{port}{CHAT_PATH}",
        ]
        return self.procs.spawn(
            argv, self.args.load_cpu, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def wrk(
        self, port: int, connections: int, duration: int, body: str = REQUEST_BODY
    ) -> dict[str, Any]:
        """One wrk run; its throughput, latency percentiles (us) and error counts."""
        return self._wrk_result(self._spawn_wrk(port, connections, duration, body), duration)

    def wrk_sampled(
        self, port: int, connections: int, duration: int, body: str = REQUEST_BODY
    ) -> dict[str, Any]:
        """wrk through the gateway while sampling its CPU and RSS."""
        sampler = Sampler(
            self.gateway.pid, self.upstream_pid, self.args.load_cpu, self.args.gateway_cpu
        )
        proc = self._spawn_wrk(port, connections, duration, body)
        sampler.start()
        return self._wrk_result(proc, duration, sampler)

    def _wrk_result(
        self, proc: subprocess.Popen, duration: int, sampler: Sampler | None = None
    ) -> dict[str, Any]:
        deadline = time.perf_counter() + duration + 20
        while proc.poll() is None and time.perf_counter() < deadline:
            if sampler is not None:
                sampler.sample()
            time.sleep(0.1)
        usage = sampler.stop() if sampler is not None else None
        self.procs.stop(proc)  # no-op when it finished; bounded when it hung
        out = proc.stdout.read().decode(errors="replace")
        m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
        if not m:
            raise BenchError(f"wrk gave no result:\n{out[-2000:]}")
        result = json.loads(m.group(1))
        result["rps"] = result["requests"] / max(result["duration_us"] / 1e6, 1e-9)
        result["errors"] = sum(v for k, v in result.items() if k.startswith("err_"))
        if usage is not None:
            result["usage"] = usage
        return result


# -- the runs ----------------------------------------------------------------------------


def run_levels(bench: Bench, body: str, what: str) -> tuple[list[tuple[int, dict, dict]], float]:
    """wrk at every concurrency, direct then through the gateway; (levels, log bytes/req)."""
    args = bench.args
    levels = []
    log_bytes = 0
    log_reqs = 0
    for c in args.concurrency:
        if args.warmup:
            bench.wrk(bench.upstream_port, c, args.warmup, body)
        direct = bench.wrk(bench.upstream_port, c, args.duration, body)
        if args.warmup:
            bench.wrk(bench.proxy_port, c, args.warmup, body)
        size0 = os.path.getsize(bench.gateway.log_path)
        gw = bench.wrk_sampled(bench.proxy_port, c, args.duration, body)
        log_bytes += os.path.getsize(bench.gateway.log_path) - size0
        log_reqs += gw["requests"]
        levels.append((c, direct, gw))
        print(
            f"  c={c}: direct {direct['rps']:.0f} {what}/s, gateway {gw['rps']:.0f} {what}/s",
            flush=True,
        )
        if gw["errors"]:
            bench.notes.append(
                f"c={c}: wrk counted {gw['errors']:.0f} errors through the gateway "
                f"({ {k: v for k, v in gw.items() if k.startswith('err_') and v} }); "
                f"log tail:\n{log_tail(bench.gateway.log_path, 5)}"
            )
    return levels, log_bytes / log_reqs if log_reqs else None


def stream_clients(bench: Bench, ports: dict[str, int], timeout: float) -> dict:
    return {k: StreamClient(port, timeout) for k, port in ports.items()}


def ttfb_run(bench: Bench) -> dict[str, Any]:
    """Sequential streams at 1 connection on each path (direct, TCP forwarder,
    gateway): ``--ttfb-streams`` back to back, in 4 blocks per path taken in
    turns, each after 3 unmeasured ones; then half as many with
    ``--ttfb-idle-ms`` of idle before each request."""
    args = bench.args
    ports = {"direct": bench.upstream_port, "fwd": bench.fwd_port, "gw": bench.proxy_port}
    clients = stream_clients(bench, ports, 10.0)
    hot: dict[str, list[StreamTiming]] = {k: [] for k in clients}
    idle: dict[str, list[StreamTiming]] = {k: [] for k in clients}
    body = STREAM_REQUEST_BODY
    sampler = Sampler(
        bench.gateway.pid, bench.upstream_pid, args.load_cpu, args.gateway_cpu, bench.fwd_pids
    )
    usage = None
    try:
        sampler.start()
        blocks = 4
        for b in range(blocks):
            per = args.ttfb_streams * (b + 1) // blocks - args.ttfb_streams * b // blocks
            for k, client in clients.items():
                for _ in range(3):  # the path idled while the others ran
                    checked(client, body, STREAM_EVENTS, k)
                hot[k] += [checked(client, body, STREAM_EVENTS, k) for _ in range(per)]
        usage = sampler.stop()
        if args.ttfb_idle_ms > 0:
            for k, client in clients.items():
                for _ in range(max(1, args.ttfb_streams // 2)):
                    time.sleep(args.ttfb_idle_ms / 1000.0)
                    idle[k].append(checked(client, body, STREAM_EVENTS, k))
    finally:
        for client in clients.values():
            client.close()
    return {"hot": hot, "idle": idle, "usage": usage}


def gap_run(bench: Bench) -> dict[str, list[StreamTiming]]:
    """``--gap-streams`` paced streams (``--chunk-gap-ms`` between events) on each
    path: the paced upstream, a TCP forwarder to it, the gateway's ``bench-gap``."""
    args = bench.args
    timeout = args.gap_chunks * args.chunk_gap_ms / 1000.0 + 10.0
    ports = {
        "direct": bench.gap_upstream_port,
        "fwd": bench.gap_fwd_port,
        "gw": bench.proxy_port,
    }
    clients = stream_clients(bench, ports, timeout)
    try:
        rotating_streams(clients, GAP_REQUEST_BODY, 1, args.gap_chunks)  # warm-up
        return rotating_streams(clients, GAP_REQUEST_BODY, args.gap_streams, args.gap_chunks)
    finally:
        for client in clients.values():
            client.close()


# -- profiling -----------------------------------------------------------------------

# Self time is grouped by where the code lives: (label, path fragment, bare
# function names or None for any). First match wins, so specific rows go first.
CATEGORIES = [
    (
        "twisted.web access log (HTTPFactory.log)",
        "twisted/web/http.py",
        {"log", "combinedLogFormatter", "_escape", "datetimeToLogString"},
    ),
    ("logging (twisted.logger / legacy log)", "twisted/logger/", None),
    ("logging (twisted.logger / legacy log)", "twisted/python/log.py", None),
    ("Content-Type parsing (stdlib email, twisted.web _parseContentType)", "email/", None),
    (
        "Content-Type parsing (stdlib email, twisted.web _parseContentType)",
        "twisted/web/http.py",
        {"_parseContentType"},
    ),
    ("upstream client (treq)", "treq/", None),
    ("upstream client (twisted.web.client / _newclient)", "twisted/web/client.py", None),
    ("upstream client (twisted.web.client / _newclient)", "twisted/web/_newclient.py", None),
    ("cookie jar / urllib (treq's per-request cookie handling)", "http/cookiejar.py", None),
    ("cookie jar / urllib (treq's per-request cookie handling)", "urllib/", None),
    ("URL objects (hyperlink)", "hyperlink/", None),
    ("routing (Klein / werkzeug)", "klein/", None),
    ("routing (Klein / werkzeug)", "werkzeug/", None),
    ("HTTP server (twisted.web http/server/resource, LineReceiver)", "twisted/web/", None),
    (
        "HTTP server (twisted.web http/server/resource, LineReceiver)",
        "twisted/protocols/basic.py",
        None,
    ),
    ("json", "json/", None),
    ("Deferreds", "twisted/internet/defer.py", None),
    ("reactor / TCP transport / endpoints", "twisted/internet/", None),
    ("twisted.python (context, failure, components, ...)", "twisted/python/", None),
    ("zope.interface", "zope/interface", None),
    ("gateway code (twisted_gw)", "twisted_gw/", None),
]

# Inclusive time of a few functions that answer "what does X cost per request":
# (label, function names, path fragment). A name with a dot must match py-spy's
# qualified "Class.method"; cProfile knows bare names only, so there the part
# after the last dot is compared. py-spy counts each sample once even when
# several listed functions nest; cProfile takes the largest cumtime.
HOTSPOTS = [
    (
        "incoming request: parse, route, handler, start of the upstream call",
        {"Request.requestReceived"},
        "twisted/web/http.py",
    ),
    (
        "  Content-Type parse via stdlib email (Site(parsePOSTFormSubmission=True))",
        {"_parseContentType"},
        "twisted/web/http.py",
    ),
    ("  Klein render (routing + handler)", {"KleinResource.render"}, "klein/_resource.py"),
    (
        "    werkzeug routing (Map.bind + MapAdapter.match)",
        {"Map.bind", "MapAdapter.match"},
        "werkzeug/routing/",
    ),
    (
        "    gateway handler ProxyApp._model_call (auth, body, hooks, provider)",
        {"ProxyApp._model_call"},
        "twisted_gw/proxy/app.py",
    ),
    (
        "      treq HTTPClient.request (URL objects, cookies, then Agent)",
        {"HTTPClient.request"},
        "treq/client.py",
    ),
    (
        "        Agent.request (endpoint per request, pool, write request)",
        {"Agent.request"},
        "twisted/web/client.py",
    ),
    (
        "          HostnameEndpoint() built per request (idna)",
        {"HostnameEndpoint.__init__"},
        "twisted/internet/endpoints.py",
    ),
    (
        "upstream response: HTTP11ClientProtocol.dataReceived (parse, body, callbacks)",
        {"HTTP11ClientProtocol.dataReceived"},
        "twisted/web/_newclient.py",
    ),
    (
        "  gateway success path ProxyApp._succeeded (post_call, write, finish, finalize)",
        {"ProxyApp._succeeded"},
        "twisted_gw/proxy/app.py",
    ),
    ("    response Request.finish (incl. access log)", {"Request.finish"}, "twisted/web/"),
    ("      access log line HTTPFactory.log", {"HTTPFactory.log"}, "twisted/web/http.py"),
    ("    hooks finalize", {"HookManager.finalize"}, "twisted_gw/hooks/"),
    (
        "treq cookie jar (add_cookie_header + extract_cookies)",
        {"CookieJar.add_cookie_header", "CookieJar.extract_cookies"},
        "http/cookiejar.py",
    ),
    (
        "twisted.logger events published (LogPublisher.__call__)",
        {"LogPublisher.__call__"},
        "twisted/logger/_observer.py",
    ),
    ("json.dumps", {"dumps"}, "json/__init__.py"),
    ("json.loads", {"loads"}, "json/__init__.py"),
    (
        "new upstream connections (HostnameEndpoint.connect)",
        {"HostnameEndpoint.connect"},
        "twisted/internet/endpoints.py",
    ),
]


# The same for a streamed answer. A fourth element names functions of which
# one must also be on the stack (py-spy only): "loads" under StreamRelay.chunk
# is the per-event check, not the request body's parse.
STREAM_HOTSPOTS = [
    (
        "incoming request: parse, route, handler, open the upstream stream",
        {"Request.requestReceived"},
        "twisted/web/http.py",
    ),
    (
        "  gateway handler ProxyApp._model_call (auth, body, hooks, provider)",
        {"ProxyApp._model_call"},
        "twisted_gw/proxy/app.py",
    ),
    (
        "    OpenAICompatibleProvider.stream_chat (upstream JSON, treq request)",
        {"OpenAICompatibleProvider.stream_chat"},
        "twisted_gw/providers/openai.py",
    ),
    (
        "upstream response: HTTP11ClientProtocol.dataReceived (headers + every event)",
        {"HTTP11ClientProtocol.dataReceived"},
        "twisted/web/_newclient.py",
    ),
    (
        "  stream opened: Deferred chain to StreamRelay._opened (source, deliverBody)",
        {"StreamRelay._opened"},
        "twisted_gw/streaming/relay.py",
    ),
    (
        "  upstream chunked decoding _ChunkedTransferDecoder.dataReceived (incl. below)",
        {"_ChunkedTransferDecoder.dataReceived"},
        "twisted/web/http.py",
    ),
    (
        "    per-event path _SSEBodyProtocol.dataReceived",
        {"_SSEBodyProtocol.dataReceived"},
        "twisted_gw/streaming/source.py",
    ),
    ("      SSEParser.feed (lines, fields, SSEEvent)", {"SSEParser.feed"}, "streaming/sse.py"),
    (
        "      StreamRelay.chunk (check the event, write it)",
        {"StreamRelay.chunk"},
        "twisted_gw/streaming/relay.py",
    ),
    (
        "        jsonutil.loads of the event (decode + JSONDecoder)",
        {"loads"},
        "twisted_gw/jsonutil.py",
        {"StreamRelay.chunk"},
    ),
    (
        "        StreamRelay._start_response (headers, registerProducer)",
        {"StreamRelay._start_response"},
        "twisted_gw/streaming/relay.py",
    ),
    (
        "        Request.write per event (chunk framing, transport buffer)",
        {"Request.write"},
        "twisted/web/",
        {"StreamRelay.chunk"},
    ),
    (
        "  end of the upstream body: HTTPClientParser._finished (pool, relay end)",
        {"HTTPClientParser._finished"},
        "twisted/web/_newclient.py",
    ),
    (
        "    StreamRelay.upstream_ended ([DONE], finish, finalize)",
        {"StreamRelay.upstream_ended"},
        "twisted_gw/streaming/relay.py",
    ),
    ("      Request.finish", {"Request.finish"}, "twisted/web/", {"StreamRelay.upstream_ended"}),
    ("      hooks finalize (metrics, access log)", {"HookManager.finalize"}, "twisted_gw/hooks/"),
    (
        "socket writes (FileDescriptor.doWrite: client + upstream)",
        {"FileDescriptor.doWrite"},
        "twisted/internet/abstract.py",
    ),
    (
        "twisted.logger events published (LogPublisher.__call__)",
        {"LogPublisher.__call__"},
        "twisted/logger/_observer.py",
    ),
    (
        "new upstream connections (HostnameEndpoint/TCP4ClientEndpoint.connect)",
        {"HostnameEndpoint.connect", "TCP4ClientEndpoint.connect"},
        "twisted/internet/endpoints.py",
    ),
]

# Stacks through any of these are "the per-event path": from the upstream's
# chunked body to the client's transport buffer; but not the end of the body
# (the decoder's last chunk runs the response's end: pool, [DONE], finalize).
PER_EVENT_ROOTS = {
    ("_ChunkedTransferDecoder.dataReceived", "twisted/web/http.py"),
    ("_SSEBodyProtocol.dataReceived", "twisted_gw/streaming/source.py"),
}
PER_EVENT_EXCLUDE = {("HTTPClientParser._finished", "twisted/web/_newclient.py")}


def short_path(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", "/main/"):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + len(marker) :]
    return path


def bare(func: str) -> str:
    """'Class.method' or 'f.<locals>.g' -> the last name."""
    return func.rsplit(".", 1)[-1]


def categorize(path: str, func: str) -> str:
    name = bare(func)
    for label, fragment, funcs in CATEGORIES:
        if fragment in path and (funcs is None or name in funcs):
            return label
    return "other (stdlib, C builtins, unattributed)"


@dataclass
class ProfileRow:
    func: str
    path: str
    self_value: float
    cum_value: float
    calls: int | None = None


@dataclass
class Profile:
    rows: list[ProfileRow]
    total: float
    unit: str  # "samples" (py-spy) or "s" (cProfile)
    stacks: list[tuple[list[tuple[str, str]], int]] | None = None  # py-spy only
    parked: int = 0

    def hotspot(self, names: set[str], fragment: str, under: set[str] | None = None) -> float:
        """Inclusive time of the named functions (each sample once); with
        ``under``, only samples where one of those is on the stack too."""
        if self.stacks is not None:
            return sum(
                count
                for frames, count in self.stacks
                if any(fragment in p and f in names for f, p in frames)
                and (under is None or any(f in under for f, _ in frames))
            )
        bare_names = {bare(n) for n in names}
        return max(
            (r.cum_value for r in self.rows if fragment in r.path and r.func in bare_names),
            default=0.0,
        )


IDLE_LEAVES = {("wait", "threading.py"), ("get", "queue.py"), ("acquire", "threading.py")}


def parse_pyspy_raw(path: str) -> Profile:
    """Collapsed stacks ('f (file:line);g (...) N') -> per-function self/inclusive samples.

    Samples of a thread parked in a lock/queue wait (the reactor's idle thread
    pool worker, which py-spy's blocking mode reports as active) are dropped
    and counted apart."""
    self_c: Counter = Counter()
    cum_c: Counter = Counter()
    total = 0
    parked = 0
    stacks = []
    frame_re = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
    with open(path, errors="replace") as f:
        for line in f:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            frames = []
            for frame in stack.split(";"):
                m = frame_re.match(frame)
                frames.append((m.group(1), m.group(2)) if m else (frame, ""))
            leaf_func, leaf_path = frames[-1]
            if (bare(leaf_func), os.path.basename(leaf_path)) in IDLE_LEAVES:
                parked += count
                continue
            total += count
            stacks.append((frames, count))
            self_c[frames[-1]] += count
            for fr in set(frames):
                cum_c[fr] += count
    rows = [ProfileRow(fn, p, self_c.get((fn, p), 0), c) for (fn, p), c in cum_c.items()]
    return Profile(rows, total, "samples", stacks, parked)


def stack_subset(
    prof: Profile, roots: set[tuple[str, str]], exclude: set[tuple[str, str]] | None = None
) -> Profile:
    """The samples whose stack passes through one of ``roots`` (name, path fragment)
    and none of ``exclude``, with inclusive time counted from the first root down."""

    def hit(frame: tuple[str, str], wanted: set[tuple[str, str]]) -> bool:
        return any(frame[0] == name and frag in frame[1] for name, frag in wanted)

    self_c: Counter = Counter()
    cum_c: Counter = Counter()
    total = 0
    for frames, count in prof.stacks or ():
        start = next((i for i, fr in enumerate(frames) if hit(fr, roots)), None)
        if start is None or (exclude and any(hit(fr, exclude) for fr in frames)):
            continue
        total += count
        self_c[frames[-1]] += count
        for fr in set(frames[start:]):
            cum_c[fr] += count
    rows = [ProfileRow(fn, p, self_c.get((fn, p), 0), c) for (fn, p), c in cum_c.items()]
    return Profile(rows, total, "samples")


def parse_cprofile(path: str) -> Profile:
    import pstats

    stats = pstats.Stats(path)
    rows = []
    total = 0.0
    for (file, _line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(ProfileRow(func, short_path(file), tt, ct, nc))
        total += tt
    return Profile(rows, total, "s")


def print_profile(
    prof: Profile,
    top: int,
    us_per_req: float | None,
    hotspots: list[tuple] = HOTSPOTS,
    per: str = "request",
) -> None:
    """Top functions by self and cumulative time, hot spots, self time by subsystem."""
    rows, total, unit = prof.rows, prof.total, prof.unit

    def pct(v: float) -> str:
        return f"{100.0 * v / total:5.1f}%" if total else "    -"

    def us(v: float) -> str:
        return f"{us_per_req * v / total:6.0f}" if total and us_per_req else "     -"

    calls = unit == "s"
    short = "st" if per == "stream" else "req"
    per_req = f" us/{short}" if us_per_req else ""
    head = f"  {'self':>6} {'cum':>6}{per_req}" + (f" {'calls':>8} {'us/call':>8}" if calls else "")
    for title, key in (("self time (tottime)", "self_value"), ("cumulative time", "cum_value")):
        print(f"\nTop {top} functions by {title}, % of {total:.0f} {unit}:")
        print(head + "  function")
        for r in sorted(rows, key=lambda r: getattr(r, key), reverse=True)[:top]:
            extra = f" {us(getattr(r, key))}" if us_per_req else ""
            if calls:
                per = 1e6 * r.self_value / r.calls if r.calls else 0.0
                extra += f" {r.calls or 0:>8} {per:>8.1f}"
            line = (
                f"  {pct(r.self_value)} {pct(r.cum_value)}{extra}  {r.func} ({short_path(r.path)})"
            )
            print(line[:170])
    print(
        "\nHot spots (inclusive time"
        + (f", us of gateway CPU per {per}" if us_per_req else "")
        + "):"
    )
    for label, names, fragment, *under in hotspots:
        v = prof.hotspot(names, fragment, under[0] if under else None)
        print(f"  {pct(v)} {us(v) if us_per_req else ''}  {label}")
    groups: Counter = Counter()
    for r in rows:
        groups[categorize(r.path, r.func)] += r.self_value
    print("\nSelf time by subsystem:")
    for label, v in groups.most_common():
        print(f"  {pct(v)} {us(v) if us_per_req else ''}  {label}")


def print_per_event(prof: Profile, top: int, us_per_stream: float | None) -> None:
    """Where the per-event path's time goes: the samples below the upstream's
    chunked decoder or the SSE body protocol, by self and inclusive time."""
    sub = stack_subset(prof, PER_EVENT_ROOTS, PER_EVENT_EXCLUDE)
    total = prof.total
    if not sub.total or not total:
        print("\n(no samples on the per-event path)")
        return

    def share(v: float) -> str:
        text = f"{100.0 * v / total:5.1f}%"
        if us_per_stream:
            per_st = us_per_stream * v / total
            text += f" {per_st:6.1f} {per_st / STREAM_EVENTS:6.2f}"
        return text

    roots = " or ".join(sorted(name for name, _ in PER_EVENT_ROOTS))
    cols = "  share  us/st  us/ev" if us_per_stream else "  share"
    print(
        f"\nPer-event path (stacks through {roots}, but not the end of the body under "
        f"HTTPClientParser._finished): {share(sub.total).strip()} "
        f"({'% of samples, us/stream, us/event' if us_per_stream else '% of samples'}; "
        f"us/ev = us/stream / {STREAM_EVENTS} events)"
    )
    for title, key in (("self time", "self_value"), ("inclusive time", "cum_value")):
        print(f"Top {top} functions on the per-event path by {title}:")
        print(cols + "  function")
        for r in sorted(sub.rows, key=lambda r: getattr(r, key), reverse=True)[:top]:
            print(f"  {share(getattr(r, key))}  {r.func} ({short_path(r.path)})"[:170])


def run_profile(bench: Bench, table_us_per_req: float | None = None, stream: bool = False) -> None:
    """One more run at the highest concurrency, with the gateway profiled.

    Sample shares are turned into us per request (per stream with ``stream``)
    with the unprofiled run's CPU time per request (``table_us_per_req``) when
    there is one: py-spy's pauses inflate the profiled run's own figure."""
    args = bench.args
    c = max(args.concurrency)
    d = args.profile_duration
    body = STREAM_REQUEST_BODY if stream else REQUEST_BODY
    what = "stream" if stream else "req"
    pyspy = args.py_spy
    use_pyspy = args.profiler == "py-spy" or (args.profiler == "auto" and pyspy)
    if use_pyspy and not pyspy:
        raise BenchError("py-spy not found: pip install py-spy (or --profiler cprofile)")
    if not use_pyspy:
        run_cprofile(bench, c, d, stream)
        return
    print(
        f"\n== profile{' (streams)' if stream else ''}: gateway at {c} connections for {d} s "
        f"(py-spy record --pid, {args.profile_rate} Hz, idle samples dropped) =="
    )
    out = os.path.join(bench.tmp, "pyspy-stream.txt" if stream else "pyspy.txt")
    argv = [pyspy, "record", "--pid", str(bench.gateway.pid), "--duration", str(d + 2)]
    argv += ["--rate", str(args.profile_rate), "--format", "raw", "--function", "-o", out]
    if args.profile_nonblocking:
        argv.append("--nonblocking")
    spy = bench.procs.spawn(argv, args.load_cpu, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # attached before the load starts; idle samples are dropped anyway
    result = bench.wrk_sampled(bench.proxy_port, c, d, body)
    try:
        _, err = spy.communicate(timeout=d + 20)
    except subprocess.TimeoutExpired:
        bench.procs.stop(spy, signal.SIGINT)
        err = b""
    bench.procs.stop(spy)
    if not os.path.exists(out):
        raise BenchError(f"py-spy wrote no profile: {err.decode(errors='replace')[-800:]}")
    usage: Usage = result["usage"]
    own = 1e6 * usage.cpu_s / result["requests"] if result["requests"] else None
    us_per_req = table_us_per_req or own
    u = "st" if stream else "req"
    print(
        f"profiled run: {result['rps']:.0f} {what}/s, p50 {result['p50'] / 1000:.2f} ms, gateway "
        f"CPU {usage.cpu_pct:.0f}% = {own or 0:.0f} us/{u} (py-spy pauses the gateway for each "
        f"sample, so these are worse than in the table); us/{u} below = sample share x "
        f"{us_per_req or 0:.0f} us/{u}" + (" (unprofiled run)" if table_us_per_req else "")
    )
    prof = parse_pyspy_raw(out)
    if prof.parked:
        print(f"({prof.parked} samples of idle worker threads parked in a wait left out)")
    if stream:
        print_profile(prof, args.profile_top, us_per_req, STREAM_HOTSPOTS, "stream")
        print_per_event(prof, args.profile_top, us_per_req)
    else:
        print_profile(prof, args.profile_top, us_per_req)
    if args.keep:
        print(f"\n(collapsed stacks: {out}; for a flame graph use --format flamegraph)")


def run_cprofile(bench: Bench, c: int, d: int, stream: bool = False) -> None:
    """Fallback without py-spy: a fresh gateway under cProfile for one run."""
    args = bench.args
    body = STREAM_REQUEST_BODY if stream else REQUEST_BODY
    print(
        f"\n== profile{' (streams)' if stream else ''}: gateway restarted under cProfile, "
        f"{c} connections for {d} s "
        "(cProfile slows the Python code ~2x; stats cover the whole process life) =="
    )
    if bench.gateway is not None:
        bench.procs.stop(bench.gateway.proc)
    prof = os.path.join(bench.tmp, "gateway-stream.prof" if stream else "gateway.prof")
    gw = bench.start_gateway(("-m", "cProfile", "-o", prof), tag="-cprofile")
    bench.gateway = gw
    bench.wait_first_200(gw)
    if args.warmup:
        bench.wrk(bench.proxy_port, c, args.warmup, body)
    result = bench.wrk_sampled(bench.proxy_port, c, d, body)
    bench.procs.stop(gw.proc, signal.SIGINT, timeout=15)  # cProfile writes on a clean exit
    bench.gateway = None
    what = "streams" if stream else "req"
    print(f"profiled run: {result['rps']:.0f} {what}/s, p50 {result['p50'] / 1000:.2f} ms")
    if not os.path.exists(prof):
        raise BenchError("cProfile wrote no profile (the gateway did not exit cleanly)")
    if stream:
        print_profile(parse_cprofile(prof), args.profile_top, None, STREAM_HOTSPOTS, "stream")
        print("(the per-event path breakdown needs py-spy's stacks)")
    else:
        print_profile(parse_cprofile(prof), args.profile_top, None)
    if args.keep:
        print(f"\n(pstats file: {prof})")


def import_time(bench: Bench, top: int = 12) -> None:
    """Start the gateway once under -X importtime and show the heaviest imports."""
    if bench.gateway is not None:  # it holds the ports
        bench.procs.stop(bench.gateway.proc)
        bench.gateway = None
    gw = bench.start_gateway(("-X", "importtime"), tag="-importtime")
    try:
        bench.wait_first_200(gw)
    finally:
        bench.procs.stop(gw.proc)
    entries = []
    with open(gw.log_path, errors="replace") as f:
        for line in f:
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
            if m:
                entries.append((int(m.group(2)), int(m.group(1)), len(m.group(3)), m.group(4)))
    if not entries:
        return
    total_self = sum(e[1] for e in entries)
    roots = sorted((e for e in entries if e[2] == 1), reverse=True)
    print(
        f"\n== start-up imports (-X importtime): {len(entries)} modules, "
        f"{total_self / 1000:.0f} ms total self time; heaviest top-level imports =="
    )
    for cum, _self, _indent, name in roots[:top]:
        print(f"  {cum / 1000:7.1f} ms  {name}")


# -- report ---------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_levels(levels: list[tuple[int, dict, dict]], stream: bool) -> None:
    """The wrk table: direct vs gateway at each concurrency, targets beside."""
    rate, per = ("st/s", "us/st") if stream else ("rps", "us/req")
    head = (
        f"{'conc':>5} | {'direct ' + rate:>10} {'p50 ms':>7} {'p99 ms':>7} | {'gw ' + rate:>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'CPU%':>5} {per:>6} "
        + (f"{'us/ev':>5} " if stream else "")
        + f"{'RSS MB':>7} | {'up CPU%':>7} {'load core%':>10} {'noise%':>6} {'errors':>6} | target"
    )
    print(head)
    print("-" * len(head))
    for c, direct, gw in levels:
        usage: Usage = gw["usage"]
        added = (gw["p50"] - direct["p50"]) / 1000
        target = ""
        if c == TARGET_RPS_CONCURRENCY:
            goal = TARGET_STREAMS if stream else TARGET_RPS
            target = f">= {goal} {'streams/s' if stream else 'rps'}: {mark(gw['rps'] >= goal)}"
        elif c == 1 and not stream:
            target = f"+p50 <= {TARGET_ADDED_P50_MS:g} ms: {mark(added <= TARGET_ADDED_P50_MS)}"
        load = f"{usage.load_core_pct:.0f}" if usage.load_core_pct is not None else "-"
        noise = f"{usage.noise_pct:.0f}" if usage.noise_pct is not None else "-"
        errors = int(direct["errors"] + gw["errors"])
        us_req = 1e6 * usage.cpu_s / gw["requests"] if gw["requests"] else 0.0
        us_ev = f"{us_req / STREAM_EVENTS:>5.1f} " if stream else ""
        print(
            f"{c:>5} | {direct['rps']:>10.0f} {direct['p50'] / 1000:>7.2f} "
            f"{direct['p99'] / 1000:>7.2f} | {gw['rps']:>8.0f} {gw['p50'] / 1000:>7.2f} "
            f"{gw['p99'] / 1000:>7.2f} {added:>8.2f} {usage.cpu_pct:>5.0f} {us_req:>6.0f} {us_ev}"
            f"{usage.rss_peak_mb:>7.1f} | {usage.upstream_cpu_pct:>7.0f} {load:>10} {noise:>6} "
            f"{errors:>6} | {target}"
        )


def print_pinning(bench: Bench) -> None:
    args = bench.args
    print(
        f"gateway pinned to CPU {args.gateway_cpu}; wrk + upstream pinned to CPU {args.load_cpu}; "
        f"{args.duration} s per run after {args.warmup} s warm-up; launcher: "
        f"{' '.join(bench.gateway_argv())}"
    )


def print_notes(bench: Bench) -> None:
    for note in bench.notes:
        print(f"note: {note}")
    bench.notes.clear()


def report(
    bench: Bench,
    levels: list[tuple[int, dict, dict]],
    log_bytes_per_req: float | None,
) -> None:
    print("\n== twisted-gw overhead ==")
    print_pinning(bench)
    print_levels(levels, stream=False)
    if log_bytes_per_req is not None:
        print(f"gateway stdout/log written per proxied request: {log_bytes_per_req:.0f} bytes")
    print(
        "columns: +p50 = gateway p50 - direct p50 at the same concurrency; CPU%/RSS = gateway "
        "process (100% = its one core saturated, RSS = peak); us/req = gateway CPU time per "
        "request; up CPU% = upstream; load core% = "
        "busy % of the wrk/upstream core (near 100 means the load side limits the figures); "
        "noise% = gateway core busy with other processes (other people's tests, ...)"
    )
    print_notes(bench)


def report_startup(
    cold: tuple[list[float], list[float], list[float]],
    idle_rss: float,
    idle_rss_after: float | None,
) -> None:
    firsts, accepted, stops = cold
    cold_ms = statistics.median(firsts)
    print(
        f"\ncold start (process start -> first 200 chat completion): median {cold_ms:.0f} ms "
        f"[{', '.join(f'{v:.0f}' for v in firsts)}]; proxy port accepting at median "
        f"{statistics.median(accepted):.0f} ms   target <= {TARGET_COLD_START_MS:.0f} ms: "
        f"{mark(cold_ms <= TARGET_COLD_START_MS)}"
    )
    if stops:
        print(f"shutdown (SIGTERM -> exit): median {statistics.median(stops):.0f} ms")
    print(
        f"idle RSS after start-up: {idle_rss:.1f} MB   target <= {TARGET_IDLE_RSS_MB:.0f} MB: "
        f"{mark(idle_rss <= TARGET_IDLE_RSS_MB)}"
        + (f"; idle RSS after the load: {idle_rss_after:.1f} MB" if idle_rss_after else "")
    )


def report_stream(
    bench: Bench,
    levels: list[tuple[int, dict, dict]],
    log_bytes_per_stream: float | None,
    ttfb: dict[str, Any],
    gap: dict[str, list[StreamTiming]] | None,
) -> None:
    args = bench.args
    print(
        f"\n== twisted-gw streaming overhead: {STREAM_EVENTS} events + [DONE] per stream, "
        "written at once by the upstream (chunked, keep-alive) =="
    )
    print_pinning(bench)
    print_levels(levels, stream=True)
    if log_bytes_per_stream is not None:
        print(f"gateway stdout/log written per stream: {log_bytes_per_stream:.0f} bytes")
    print(
        "columns: as above, per stream: st/s = whole streams per second, p50/p99 = the whole "
        f"stream (request to the last byte), us/st = gateway CPU per stream, us/ev = that / "
        f"{STREAM_EVENTS} events"
    )

    report_ttfb(args, ttfb)
    if gap:
        report_gap(args, gap)
    print_notes(bench)


def report_ttfb(args: argparse.Namespace, ttfb: dict[str, Any]) -> None:
    """Time to first byte (and to the end) on the three paths at 1 connection."""
    hot, idle = ttfb["hot"], ttfb["idle"]
    print(
        f"\n== time to first byte at 1 connection: {len(hot['gw'])} sequential streams per "
        "path, back to back in 4 blocks per path taken in turns (raw-socket client, ms since "
        "the request was written); tcp fwd = a do-nothing TCP forwarder on the gateway's "
        "core, the floor for any proxy process =="
    )
    head = (
        f"{'':<28} | {'direct p50':>10} {'p99':>6} | {'tcp fwd p50':>11} {'p99':>6} | "
        f"{'gw p50':>7} {'p99':>6} | {'added p50':>9} {'p99':>6} | {'gw-fwd p50':>10} | target"
    )
    print(head)
    print("-" * len(head))
    rows = [
        ("first byte (TTFB)", hot, lambda t: t.ms(t.first_byte)),
        ("end of body (0-size chunk)", hot, lambda t: t.ms(t.end)),
    ]
    if idle["gw"]:
        rows.append((f"TTFB, {args.ttfb_idle_ms:g} ms idle before each", idle, None))
    for label, runs, get in rows:
        get = get or (lambda t: t.ms(t.first_byte))
        v = {k: [get(t) for t in runs[k]] for k in PATHS}
        p50 = {k: percentile(v[k], 50) for k in PATHS}
        p99 = {k: percentile(v[k], 99) for k in PATHS}
        a50, a99 = p50["gw"] - p50["direct"], p99["gw"] - p99["direct"]
        target = ""
        if label.startswith("first byte"):
            target = f"+p50 <= {TARGET_ADDED_TTFB_MS:g} ms: {mark(a50 <= TARGET_ADDED_TTFB_MS)}"
        print(
            f"{label:<28} | {p50['direct']:>10.3f} {p99['direct']:>6.3f} | {p50['fwd']:>11.3f} "
            f"{p99['fwd']:>6.3f} | {p50['gw']:>7.3f} {p99['gw']:>6.3f} | {a50:>9.3f} {a99:>6.3f} "
            f"| {p50['gw'] - p50['fwd']:>10.3f} | {target}"
        )
    spread = [t.ms(t.events[-1]) - t.ms(t.events[0]) for t in hot["gw"]]
    reads = statistics.median(len(set(t.events)) for t in hot["gw"])
    print(
        f"The upstream writes all {STREAM_EVENTS} events at once; through the gateway they "
        f"came in a median {reads:g} read(s) (first to last event: p50 "
        f"{percentile(spread, 50):.3f} ms, max {max(spread):.3f} ms): the gateway reads them "
        "in one go and its writes leave in one send, so its first byte waits for the whole "
        "stream to be relayed and this TTFB holds all of the relay work. added = gw - direct; "
        "gw-fwd = the gateway's own share beyond a bare proxy hop. The idle row shows what "
        "this host adds when the cores sleep between requests (vCPU wake-ups), on every path."
    )
    usage: Usage | None = ttfb["usage"]
    if usage is not None:
        n = len(hot["gw"]) + 4 * 3  # + the 3 unmeasured streams before each block
        noise = f"{usage.noise_pct:.0f}%" if usage.noise_pct is not None else "-"
        print(
            f"During the back-to-back run the gateway used {1e6 * usage.cpu_s / n:.0f} us CPU "
            f"per stream; noise on its core (other processes): {noise} of the run's wall time."
        )


def report_gap(args: argparse.Namespace, gap: dict[str, list[StreamTiming]]) -> None:
    """Per-event arrival with the upstream pacing its events ``--chunk-gap-ms`` apart."""
    n_ev = args.gap_chunks
    n = len(gap["gw"])
    print(
        f"\n== paced streams: upstream writes {n_ev} events {args.chunk_gap_ms:g} ms apart, "
        f"then [DONE]; {n} streams per path in turns, every event timestamped on arrival "
        "(ms) =="
    )
    head = (
        f"{'event':<14} | {'direct at':>9} {'gw at':>7} | {'+ms p50':>7} {'max':>6} | "
        f"{'flight: direct':>14} {'fwd':>6} {'gw':>6} {'gw max':>6} | {'relay +ms p50':>13} "
        f"{'max':>6} | {'gw-fwd p50':>10}"
    )
    print(head)
    print("-" * len(head))
    names = ["role", *["content"] * (n_ev - 3), "finish", "usage", "[DONE]"]

    def flight(t: StreamTiming, k: int) -> float | None:
        """Arrival minus the upstream's send stamp ([DONE] rides with the last event)."""
        sent = t.upstream_sent[min(k, n_ev - 1)]
        return (t.events[k] - sent) / 1e6 if sent else None

    for k in range(n_ev + 1):
        at = {p: [t.ms(t.events[k]) for t in gap[p]] for p in PATHS}
        added = [g - d for d, g in zip(at["direct"], at["gw"], strict=True)]
        fl = {p: [flight(t, k) for t in gap[p]] for p in PATHS}
        ok = [i for i in range(n) if all(fl[p][i] is not None for p in PATHS)]
        if ok:
            f = {p: [fl[p][i] for i in ok] for p in PATHS}
            relay = [f["gw"][j] - f["direct"][j] for j in range(len(ok))]
            own = [f["gw"][j] - f["fwd"][j] for j in range(len(ok))]
            cols = (
                f"{percentile(f['direct'], 50):>14.3f} {percentile(f['fwd'], 50):>6.3f} "
                f"{percentile(f['gw'], 50):>6.3f} {max(f['gw']):>6.3f} | "
                f"{percentile(relay, 50):>13.3f} {max(relay):>6.3f} | "
                f"{percentile(own, 50):>10.3f}"
            )
        else:
            cols = f"{'-':>14} {'-':>6} {'-':>6} {'-':>6} | {'-':>13} {'-':>6} | {'-':>10}"
        print(
            f"{k + 1:>2} {names[k]:<11} | {percentile(at['direct'], 50):>9.2f} "
            f"{percentile(at['gw'], 50):>7.2f} | {percentile(added, 50):>7.3f} "
            f"{max(added):>6.3f} | {cols}"
        )
    first_gap = [t.ms(t.events[1]) - t.ms(t.events[0]) for t in gap["gw"]]
    first_gap_d = [t.ms(t.events[1]) - t.ms(t.events[0]) for t in gap["direct"]]
    ok = min(first_gap) >= 0.9 * args.chunk_gap_ms
    print(
        f"chunk 1 -> chunk 2 through the gateway: p50 {percentile(first_gap, 50):.2f} ms "
        f"[min {min(first_gap):.2f}, max {max(first_gap):.2f}] (direct p50 "
        f"{percentile(first_gap_d, 50):.2f} ms): chunk 1 arrives ~{args.chunk_gap_ms:g} ms "
        f"before chunk 2, i.e. it is relayed at once, not held: {mark(ok)}"
    )
    first_added = [
        g.ms(g.events[0]) - d.ms(d.events[0])
        for d, g in zip(*(gap[p] for p in ("direct", "gw")), strict=True)
    ]
    fwd_added = [
        f.ms(f.events[0]) - d.ms(d.events[0])
        for d, f in zip(*(gap[p] for p in ("direct", "fwd")), strict=True)
    ]
    print(
        "added time to the first event when events come apart (every path idle before): "
        f"gateway p50 {percentile(first_added, 50):.3f} ms, max {max(first_added):.3f} ms; "
        f"tcp fwd p50 {percentile(fwd_added, 50):.3f} ms"
    )
    print(
        "columns: at = arrival since the request was written (p50); +ms = through the "
        "gateway minus direct, stream by stream (includes forwarding the request); flight = "
        "arrival minus the upstream's send stamp for that event (one host clock), i.e. the "
        "path upstream -> client alone; relay +ms = gateway flight - direct flight: what the "
        "gateway adds to each event once the stream runs; gw-fwd = gateway flight - tcp fwd "
        "flight: its share beyond a bare proxy hop (which also has to wake up after 200 ms idle)"
    )


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--duration", type=int, default=5, help="seconds per measured run (wrk: whole s)"
    )
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each run")
    p.add_argument(
        "--concurrency", default="1,16,64", help="comma-separated connection counts (1,16,64)"
    )
    p.add_argument("--cold-runs", type=int, default=3, help="cold starts to measure (median)")
    p.add_argument("--gateway-cpu", type=int, default=0, help="core the gateway is pinned to")
    p.add_argument("--load-cpu", type=int, default=1, help="core for wrk and the upstream")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (one load core: 1)")
    p.add_argument(
        "--launcher",
        choices=["script", "twistd"],
        default="script",
        help="twisted-gw console script or twistd -n twisted-gw",
    )
    p.add_argument(
        "--mode",
        choices=["stream", "nonstream", "both"],
        default="both",
        help="plain chat completions, streamed ones (stream: true), or both (default)",
    )
    p.add_argument(
        "--stream", dest="mode", action="store_const", const="stream", help="= --mode stream"
    )
    p.add_argument(
        "--ttfb-streams",
        type=int,
        default=200,
        help="sequential streams per path for the time-to-first-byte run (1 connection)",
    )
    p.add_argument(
        "--chunk-gap-ms",
        type=float,
        default=200.0,
        help="ms between events in the paced-stream run (0 skips that run)",
    )
    p.add_argument(
        "--ttfb-idle-ms",
        type=float,
        default=5.0,
        help="idle before each request in the second TTFB run (0 skips it)",
    )
    p.add_argument("--gap-chunks", type=int, default=5, help="data events per paced stream")
    p.add_argument("--gap-streams", type=int, default=10, help="paced streams per path")
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile the highest-concurrency run (of each mode that runs)",
    )
    p.add_argument("--profiler", choices=["auto", "py-spy", "cprofile"], default="auto")
    p.add_argument(
        "--profile-rate",
        type=int,
        default=100,
        help="py-spy samples per second (each pauses the gateway; 100 costs ~15%% throughput)",
    )
    p.add_argument("--profile-top", type=int, default=25, help="functions to list")
    p.add_argument("--profile-duration", type=int, default=15, help="seconds of the profiled run")
    p.add_argument(
        "--profile-nonblocking",
        action="store_true",
        help="py-spy --nonblocking: no pauses, but some stacks come out torn",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, profiles)")
    p.add_argument(
        "--rate-limits",
        action="store_true",
        help="configure every rate limit (never reached) on the key and model: the hooks' cost",
    )
    p.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    p.add_argument(
        "--max-seconds",
        type=int,
        default=1800,
        help="hard bound: the upstream exits by itself after this long",
    )
    args = p.parse_args(argv)
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        p.error("--concurrency takes integers, e.g. 1,16,64")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency needs connection counts >= 1")
    if args.duration < 1:
        p.error("--duration is whole seconds >= 1 (wrk's unit)")
    if args.ttfb_streams < 1 or args.gap_streams < 1:
        p.error("--ttfb-streams and --gap-streams need >= 1")
    if args.gap_chunks < 3:
        p.error("--gap-chunks needs >= 3 (role, finish and usage events)")
    if args.chunk_gap_ms < 0:
        p.error("--chunk-gap-ms must be >= 0")
    args.stream = args.mode in ("stream", "both")
    args.nonstream = args.mode in ("nonstream", "both")
    return args


def find_tools(args: argparse.Namespace) -> None:
    args.wrk = shutil.which("wrk")
    if not args.wrk and not args.no_install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found; installing it: apt-get install -y wrk", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            timeout=300,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        args.wrk = shutil.which("wrk")
    if not args.wrk:
        raise BenchError("wrk is needed: apt-get install -y wrk (Debian) and run again")
    bindir = os.path.dirname(sys.executable)
    local = os.path.join(bindir, "py-spy")
    args.py_spy = local if os.access(local, os.X_OK) else shutil.which("py-spy")
    cpus = os.sched_getaffinity(0)
    if args.gateway_cpu not in cpus or args.load_cpu not in cpus:
        raise BenchError(f"--gateway-cpu/--load-cpu must be among the usable CPUs {sorted(cpus)}")
    if not shutil.which("taskset"):
        raise BenchError("taskset (util-linux) is needed to pin the processes")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    procs = Processes()
    tmp = tempfile.mkdtemp(prefix="twisted-gw-bench-")
    try:
        find_tools(args)
        if args.gateway_cpu == args.load_cpu:
            print("warning: gateway and load share a core; figures will be pessimistic")
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.load_cpu})  # keep this script off the gateway core
        bench = Bench(args, procs, tmp)
        bench.start_upstream()
        bench.write_config()
        print(
            f"upstream on :{bench.upstream_port}, gateway proxy :{bench.proxy_port} admin "
            f":{bench.admin_port}, work dir {tmp}",
            flush=True,
        )
        bench.provision()
        cold = bench.cold_starts()
        time.sleep(1.0)
        idle_rss = rss_mb(bench.gateway.pid)
        modes = [m for m, on in (("plain", args.nonstream), ("stream", args.stream)) if on]
        print(
            f"cold start {statistics.median(cold[0]):.0f} ms, idle RSS {idle_rss:.1f} MB; "
            f"running {len(args.concurrency)} levels x 2 x {args.duration} s "
            f"({' + '.join(modes)}) ...",
            flush=True,
        )
        plain = stream = None
        if args.nonstream:
            plain = run_levels(bench, REQUEST_BODY, "req")
        if args.stream:
            check_stream(bench.proxy_port, STREAM_REQUEST_BODY, STREAM_EVENTS, "the gateway")
            stream = run_levels(bench, STREAM_REQUEST_BODY, "streams")
            print(f"  time to first byte: {args.ttfb_streams} streams per path ...", flush=True)
            ttfb = ttfb_run(bench)
            gap = None
            if args.chunk_gap_ms > 0:
                print(
                    f"  paced streams: {args.gap_streams} per path, {args.gap_chunks} events "
                    f"{args.chunk_gap_ms:g} ms apart ...",
                    flush=True,
                )
                gap = gap_run(bench)
        time.sleep(1.0)
        idle_after = rss_mb(bench.gateway.pid)
        if plain is not None:
            report(bench, *plain)
            report_startup(cold, idle_rss, idle_after)
        if stream is not None:
            report_stream(bench, *stream, ttfb, gap)
            if plain is None:
                report_startup(cold, idle_rss, idle_after)
        if args.profile:
            for runs, is_stream in ((plain, False), (stream, True)):
                if runs is None:
                    continue
                _, _, top_gw = runs[0][-1]  # the highest concurrency, the one profiled
                cpu_s = top_gw["usage"].cpu_s
                us = 1e6 * cpu_s / top_gw["requests"] if top_gw["requests"] else None
                run_profile(bench, us, is_stream)
            import_time(bench)
        return 0
    except BenchError as e:
        print(f"bench failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping subprocesses", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
