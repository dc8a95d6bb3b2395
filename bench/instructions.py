"""Instructions per proxied request, counted by valgrind's callgrind.

Run by hand: ``python bench/instructions.py [--stream] [--rate-limits] [--budget]
[--workers N]``.

Why beside ``overhead.py``: wrk's figures move with whatever else the
machine does, so a 3 % change needs many interleaved runs to be seen.
callgrind counts the instructions the gateway's process executes, which
is the same for the same code and input whatever else runs: the measure
for an A/B of one change (run it on both commits and compare). It is not a
time: a cache miss and an instruction count the same, and the kernel's
share of a request (the socket calls) is not in it.

What it does: the bench upstream (``upstream.py``) and a gateway on an
embedded store, provisioned as ``overhead.py`` does (the model ``bench``
and the key ``sk-bench``, with every limit or a budget when asked); then
the gateway runs under ``valgrind --tool=callgrind --instr-atstart=no``,
gets ``--warmup`` requests on one keep-alive connection, has collection
switched on with ``callgrind_control``, gets ``--requests`` more, and has
it switched off again and dumped. It prints the instructions per request
(and per event for streams) from the dump's totals.

``--workers N`` (``server.workers: N``): the supervisor and its workers all
run under callgrind (``--trace-children=yes``), and the count is of the
whole tree, every process switched on and dumped: the one keep-alive
connection lands on one worker, and what the supervisor does for it (the
shared limiter, budget and history over AMP) is in the count too. Each
process's share is printed as well: an idle worker's is what its timers
cost over the run's time (the gauges' 100 ms refresh, the shared store's
file check, over a run that callgrind makes many times longer),
which the busy worker spent too, so the busy worker's share less an idle
one's is what the requests cost it. Compare with the same run without
``--workers``.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import (
    CHAT_PATH,
    CLIENT_KEY,
    HOST,
    REQUEST_BODY,
    STREAM_EVENTS,
    STREAM_REQUEST_BODY,
    BenchError,
)
from _procs import Processes
from _sampler import tree
from _setup import Bench


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="counted requests")
    p.add_argument("--warmup", type=int, default=500, help="uncounted requests before them")
    p.add_argument("--stream", action="store_true", help="streamed requests (22 events each)")
    p.add_argument("--rate-limits", action="store_true", help="every limit on key and model")
    p.add_argument("--budget", action="store_true", help="a priced model and a budgeted key")
    p.add_argument("--no-ledger", action="store_true", help="the request ledger off")
    p.add_argument(
        "--workers", type=int, default=1, help="server.workers (> 1: the whole process tree)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (the callgrind dump)")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers takes 1 or more")
    # what Bench reads of overhead.py's command line
    args.max_seconds, args.load_cpu, args.gateway_cpu, args.gateway_cpus = 1800, None, None, ""
    args.launcher, args.cold_runs, args.chunk_gap_ms = "console", 1, 0
    return args


def _send(conn: http.client.HTTPConnection, body: str, n: int) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}
    for _ in range(n):
        conn.request("POST", CHAT_PATH, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise BenchError(f"gateway answered {resp.status} {data[:200]!r}")


def _control(pids: list[int], *flags: str) -> None:
    for pid in pids:
        subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True)


def _totals(directory: str) -> dict[int, int]:
    """pid -> the instructions in the dumps callgrind_control -d wrote (the counted part)."""
    totals: dict[int, int] = {}
    for path in glob.glob(os.path.join(directory, "callgrind.out.*")):
        pid = int(os.path.basename(path).split(".")[2])
        with open(path) as f:  # "totals:" closes the file ("summary:" may say 0)
            count = sum(int(line.split()[1]) for line in f if line.startswith("totals:"))
        totals[pid] = totals.get(pid, 0) + count
    return totals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is needed: apt-get install -y valgrind")
    tmp = tempfile.mkdtemp(prefix="twisted-gw-instr-")
    procs = Processes()
    try:
        streamed, args.stream = args.stream, False  # Bench: no paced upstream, no forwarders
        bench = Bench(args, procs, tmp)
        bench.start_upstream()
        bench.write_config()
        bench.provision()
        dumps = os.path.join(tmp, "cg")
        os.mkdir(dumps)
        argv_ = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            *(["--trace-children=yes"] if args.workers > 1 else []),
            f"--callgrind-out-file={dumps}/callgrind.out.%p",
            sys.executable,
            "-m",
            "twisted_gw",
            "--config",
            bench.config_path,
        ]
        bench.gateway_argv = lambda python_flags=(): argv_  # type: ignore[method-assign]
        gw = bench.start_gateway(tag="-callgrind")
        bench.wait_first_200(gw, timeout=120)
        body = STREAM_REQUEST_BODY if streamed else REQUEST_BODY
        conn = http.client.HTTPConnection(HOST, bench.proxy_port, timeout=60)
        _send(conn, body, args.warmup)
        pids = tree(gw.pid)  # the supervisor and its workers, with --workers
        _control(pids, "-i", "on")
        started = time.monotonic()
        _send(conn, body, args.requests)
        _control(pids, "-i", "off")
        _control(pids, "-d")
        took = time.monotonic() - started
        conn.close()
        procs.stop(gw.proc)
        totals = _totals(dumps)
        total = sum(totals.values())
        if not total:
            raise BenchError(f"no callgrind totals in {dumps}")
        per = total / args.requests
        what = "stream" if streamed else "request"
        extra = "".join(
            f" +{flag}"
            for flag, on in (
                ("rate-limits", args.rate_limits),
                ("budget", args.budget),
                ("no-ledger", args.no_ledger),
            )
            if on
        )
        if args.workers > 1:
            extra += f" +workers {args.workers} ({len(pids)} processes)"
        line = f"{per:,.0f} instructions per {what}{extra} ({args.requests} counted"
        if streamed:
            line += f"; {per / STREAM_EVENTS:,.0f} per event"
        print(f"{line}; {took:.1f} s under callgrind)")
        if args.workers > 1:
            # the idle workers' count is what timers cost in the run's time, which
            # the busy one spent too: its count less theirs is what the requests cost
            shares = ", ".join(f"{totals.get(pid, 0) / args.requests:,.0f}" for pid in pids)
            print(f"  per request by process (supervisor first): {shares}")
        return 0
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
