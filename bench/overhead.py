"""How much does twisted-gw add on top of its upstream? A benchmark, not a test.

    python bench/overhead.py                      # 5 s per level, concurrency 1,16,64
    python bench/overhead.py --duration 10 --concurrency 1,8,64,128
    python bench/overhead.py --mode stream        # streamed answers only (= --stream)
    python bench/overhead.py --profile            # + where the gateway's time goes
    python bench/overhead.py --workers 2 --gateway-cpus 0,1   # server.workers: 2 on both cores

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

The parts, beside this file: ``_setup`` (the upstreams, the gateway's config,
start, provisioning and cold starts), ``_procs`` (subprocesses), ``_sampler``
(/proc CPU and RSS), ``_wrk`` (the load), ``_streams`` (the timing client),
``_runs`` (the measured runs), ``_report`` and ``_report_streams`` (the
tables), ``_profiling``, ``_profile`` and ``_hotspots`` (``--profile``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from typing import Any

from _common import MODEL_NAME, REQUEST_BODY, STREAM_EVENTS, STREAM_REQUEST_BODY, BenchError
from _peer import PEER_OPTIONS, peer_body, peer_sampler, print_peer, start_peer
from _procs import Processes, check_pinning, raise_interrupt
from _profiling import find_py_spy, import_time, run_profile
from _report import report, report_startup
from _report_streams import report_stream
from _runs import gap_run, run_levels, ttfb_run
from _sampler import tree_rss_mb
from _setup import Bench
from _streams import check_stream
from _wrk import find_wrk, us_per_request, wrk_sampled

#: The command line, in --help order: (flag, default, help[, more argparse keywords]).
#: A number's type is its default's; a False default makes a store_true flag.
OPTIONS: tuple[tuple[Any, ...], ...] = (
    ("--duration", 5, "seconds per measured run (wrk: whole s)"),
    ("--warmup", 1, "seconds of warm-up before each run"),
    ("--concurrency", "1,16,64", "comma-separated connection counts (1,16,64)"),
    ("--cold-runs", 3, "cold starts to measure (median)"),
    ("--gateway-cpu", 0, "core the gateway is pinned to"),
    ("--load-cpu", 1, "core for wrk and the upstream"),
    ("--wrk-threads", 1, "wrk threads (one load core: 1)"),
    (
        "--launcher",
        "script",
        "twisted-gw console script or twistd -n twisted-gw",
        {"choices": ["script", "twistd"]},
    ),
    (
        "--mode",
        "both",
        "plain chat completions, streamed ones (stream: true), or both (default)",
        {"choices": ["stream", "nonstream", "both"]},
    ),
    (
        "--stream",
        None,
        "= --mode stream",
        {"dest": "mode", "action": "store_const", "const": "stream"},
    ),
    (
        "--ttfb-streams",
        200,
        "sequential streams per path for the time-to-first-byte run (1 connection)",
    ),
    ("--chunk-gap-ms", 200.0, "ms between events in the paced-stream run (0 skips that run)"),
    ("--ttfb-idle-ms", 5.0, "idle before each request in the second TTFB run (0 skips it)"),
    ("--gap-chunks", 5, "data events per paced stream"),
    ("--gap-streams", 10, "paced streams per path"),
    ("--profile", False, "profile the highest-concurrency run (of each mode that runs)"),
    ("--profiler", "auto", None, {"choices": ["auto", "py-spy", "cprofile"]}),
    (
        "--profile-rate",
        100,
        "py-spy samples per second (each pauses the gateway; 100 costs ~15%% throughput)",
    ),
    ("--profile-top", 25, "functions to list"),
    ("--profile-duration", 15, "seconds of the profiled run"),
    (
        "--profile-nonblocking",
        False,
        "py-spy --nonblocking: no pauses, but some stacks come out torn",
    ),
    ("--keep", False, "keep the temp dir (logs, profiles)"),
    (
        "--rate-limits",
        False,
        "configure every rate limit (never reached) on the key and model: the hooks' cost",
    ),
    (
        "--budget",
        False,
        "price the model and give the key a budget (never reached): the spend hooks' cost",
    ),
    (
        "--no-ledger",
        False,
        "turn the request ledger off (deployment.ledger.enabled: false): its cost, by difference",
    ),
    ("--workers", 1, "gateway processes (server.workers); 1: one process, as always"),
    (
        "--gateway-cpus",
        "",
        (
            "pin the gateway to these CPUs instead of --gateway-cpu, e.g. 0,1 (with --workers 2: "
            "both cores, which wrk and the upstream then share)"
        ),
    ),
    *PEER_OPTIONS,
    ("--no-install", False, "never apt-get install wrk"),
    ("--max-seconds", 1800, "hard bound: the upstream exits by itself after this long"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (OPTIONS), checked; ``concurrency`` as a sorted list of
    ints, ``stream``/``nonstream`` as the modes to run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, default, help_, *more in OPTIONS:
        kwargs = {"help": help_, **(more[0] if more else {})}
        if default is False:
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = default
            if isinstance(default, int | float):
                kwargs["type"] = type(default)
        p.add_argument(flag, **kwargs)
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
    if not 1 <= args.workers <= 256:
        p.error("--workers takes 1 to 256")
    if args.profile and args.workers > 1:
        p.error("--profile follows one process: run it with --workers 1")
    args.stream = args.mode in ("stream", "both")
    args.nonstream = args.mode in ("nonstream", "both")
    return args


def find_tools(args: argparse.Namespace) -> None:
    """wrk (installed when missing, as root), py-spy if there, and the cores usable."""
    args.wrk = find_wrk(args.no_install)
    args.py_spy = find_py_spy()
    check_pinning(args.gateway_cpu, args.load_cpu)


def run_peer(bench: Bench, plain: Any, stream: Any) -> None:
    """The same levels through ``--peer``, after twisted-gw's (which is stopped
    first, so the peer has the gateway core to itself), and the side-by-side
    tables."""
    args = bench.args
    bench.procs.stop(bench.gateway.proc)
    for runs, body, what in (
        (plain, REQUEST_BODY, "req"),
        (stream, STREAM_REQUEST_BODY, "streams"),
    ):
        if runs is None:
            continue
        print(f"  peer {args.peer_name}: {what} ...", flush=True)
        peer = start_peer(bench, body)
        asked = peer_body(body, args.peer_model) if args.peer_model != MODEL_NAME else body
        rows = []
        for c, direct, ours in runs[0]:
            if args.warmup:
                wrk_sampled(
                    bench,
                    peer.port,
                    c,
                    args.warmup,
                    asked,
                    peer_sampler(bench, peer),
                    args.peer_key,
                )
            theirs = wrk_sampled(
                bench, peer.port, c, args.duration, asked, peer_sampler(bench, peer), args.peer_key
            )
            rows.append((c, direct, ours, theirs))
        bench.procs.stop(peer.proc)
        print_peer(args.peer_name, rows, what)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when it ran, 1 when a step failed, 130 when interrupted."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
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
        idle_rss = tree_rss_mb(bench.gateway.pid)
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
        idle_after = tree_rss_mb(bench.gateway.pid)
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
                run_profile(bench, us_per_request(top_gw), is_stream)
            import_time(bench)
        if args.peer:  # last: it stops the gateway to give the peer its core
            run_peer(bench, plain, stream)
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
