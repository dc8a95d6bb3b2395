"""The load: ``wrk`` pinned to the load core, with a Lua script that sets the
POST body and headers and prints throughput, percentiles and errors as JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import zlib
from typing import Any

from _common import CHAT_PATH, CLIENT_KEY, HOST, REQUEST_BODY, STREAM_REQUEST_BODY, BenchError
from _sampler import Sampler
from _setup import Bench

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


def find_wrk(no_install: bool) -> str:
    """The wrk binary; as root with apt-get, installed first unless ``no_install``."""
    path = shutil.which("wrk")
    if not path and not no_install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found; installing it: apt-get install -y wrk", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            timeout=300,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        path = shutil.which("wrk")
    if not path:
        raise BenchError("wrk is needed: apt-get install -y wrk (Debian) and run again")
    return path


def wrk(
    bench: Bench, port: int, connections: int, duration: int, body: str = REQUEST_BODY
) -> dict[str, Any]:
    """One wrk run; its throughput, latency percentiles (us) and error counts."""
    return _result(bench, _spawn(bench, port, connections, duration, body), duration)


def wrk_sampled(
    bench: Bench,
    port: int,
    connections: int,
    duration: int,
    body: str = REQUEST_BODY,
    sampler: Sampler | None = None,
    key: str = CLIENT_KEY,
) -> dict[str, Any]:
    """wrk through the gateway (or ``sampler``'s process: a peer) while
    sampling its CPU and RSS (``result["usage"]``)."""
    sampler = sampler if sampler is not None else bench.sampler()
    proc = _spawn(bench, port, connections, duration, body, key)
    sampler.start()
    return _result(bench, proc, duration, sampler)


def us_per_request(result: dict[str, Any]) -> float | None:
    """Gateway CPU time per request (us) of a sampled run; None without requests."""
    return 1e6 * result["usage"].cpu_s / result["requests"] if result["requests"] else None


def _spawn(
    bench: Bench, port: int, connections: int, duration: int, body: str, key: str = CLIENT_KEY
) -> subprocess.Popen:
    args = bench.args
    if body == STREAM_REQUEST_BODY and key == CLIENT_KEY:
        name = "chat-stream.lua"
    elif body == REQUEST_BODY and key == CLIENT_KEY:
        name = "chat.lua"
    else:  # a peer's: its model name and key
        name = f"chat-{zlib.crc32((body + key).encode()):08x}.lua"
    script = os.path.join(bench.tmp, name)
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WRK_LUA % {"body": body, "key": key})
    threads = max(1, min(args.wrk_threads, connections))
    argv = [
        args.wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        script,
        f"http://{HOST}:{port}{CHAT_PATH}",
    ]
    return bench.procs.spawn(argv, args.load_cpu, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _result(
    bench: Bench, proc: subprocess.Popen, duration: int, sampler: Sampler | None = None
) -> dict[str, Any]:
    deadline = time.perf_counter() + duration + 20
    while proc.poll() is None and time.perf_counter() < deadline:
        if sampler is not None:
            sampler.sample()
        time.sleep(0.1)
    usage = sampler.stop() if sampler is not None else None
    bench.procs.stop(proc)  # no-op when it finished; bounded when it hung
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
