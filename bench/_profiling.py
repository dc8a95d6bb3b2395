"""The profiled runs: one more wrk run at the highest concurrency with py-spy
attached to the gateway (or the gateway restarted under cProfile), and one
start under ``-X importtime`` for what the cold start spends on imports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

from _common import REQUEST_BODY, STREAM_REQUEST_BODY, BenchError
from _profile import parse_cprofile, parse_pyspy_raw, print_per_event, print_profile
from _sampler import Usage
from _setup import Bench
from _wrk import us_per_request, wrk, wrk_sampled


def find_py_spy() -> str | None:
    """py-spy next to this python (a venv's), else on PATH; None when missing."""
    local = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return local if os.access(local, os.X_OK) else shutil.which("py-spy")


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
    result = wrk_sampled(bench, bench.proxy_port, c, d, body)
    try:
        _, err = spy.communicate(timeout=d + 20)
    except subprocess.TimeoutExpired:
        bench.procs.stop(spy, signal.SIGINT)
        err = b""
    bench.procs.stop(spy)
    if not os.path.exists(out):
        raise BenchError(f"py-spy wrote no profile: {err.decode(errors='replace')[-800:]}")
    usage: Usage = result["usage"]
    own = us_per_request(result)
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
    print_profile(prof, args.profile_top, us_per_req, stream)
    if stream:
        print_per_event(prof, args.profile_top, us_per_req)
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
    bench.stop_gateway()
    prof = os.path.join(bench.tmp, "gateway-stream.prof" if stream else "gateway.prof")
    gw = bench.start_gateway(("-m", "cProfile", "-o", prof), tag="-cprofile")
    bench.gateway = gw
    bench.wait_first_200(gw)
    if args.warmup:
        wrk(bench, bench.proxy_port, c, args.warmup, body)
    result = wrk_sampled(bench, bench.proxy_port, c, d, body)
    bench.procs.stop(gw.proc, signal.SIGINT, timeout=15)  # cProfile writes on a clean exit
    bench.gateway = None
    what = "streams" if stream else "req"
    print(f"profiled run: {result['rps']:.0f} {what}/s, p50 {result['p50'] / 1000:.2f} ms")
    if not os.path.exists(prof):
        raise BenchError("cProfile wrote no profile (the gateway did not exit cleanly)")
    print_profile(parse_cprofile(prof), args.profile_top, None, stream)
    if stream:
        print("(the per-event path breakdown needs py-spy's stacks)")
    if args.keep:
        print(f"\n(pstats file: {prof})")


def import_time(bench: Bench, top: int = 12) -> None:
    """Start the gateway once under -X importtime and show the heaviest imports."""
    bench.stop_gateway()  # it holds the ports
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
