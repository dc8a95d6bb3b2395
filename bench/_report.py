"""The report: the targets, the wrk table of each mode with the figures side by
side (direct, through the gateway, the gateway's CPU and RSS, the cores), and
the start-up figures. The stream-only tables are in ``_report_streams``."""

from __future__ import annotations

import math
import statistics

from _common import STREAM_EVENTS
from _sampler import Usage
from _setup import Bench
from _wrk import us_per_request

TARGET_RPS = 1300  # at TARGET_RPS_CONCURRENCY connections, gateway on one core
TARGET_RPS_CONCURRENCY = 64
TARGET_ADDED_P50_MS = 1.0  # at 1 connection
TARGET_COLD_START_MS = 1000.0
TARGET_IDLE_RSS_MB = 60.0
TARGET_STREAMS = 400  # streams/s at TARGET_RPS_CONCURRENCY connections, gateway on one core
TARGET_ADDED_TTFB_MS = 1.0  # at 1 connection

#: (title, what the log bytes are per, what the columns mean) of each mode's wrk table
_PLAIN_TEXT = (
    "\n== twisted-gw overhead ==",
    "proxied request",
    (
        "columns: +p50 = gateway p50 - direct p50 at the same concurrency; CPU%/RSS = gateway "
        "process (100% = its one core saturated, RSS = peak); us/req = gateway CPU time per "
        "request; up CPU% = upstream; load core% = "
        "busy % of the wrk/upstream core (near 100 means the load side limits the figures); "
        "noise% = gateway core busy with other processes (other people's tests, ...)"
    ),
)
_STREAM_TEXT = (
    (
        f"\n== twisted-gw streaming overhead: {STREAM_EVENTS} events + [DONE] per stream, "
        "written at once by the upstream (chunked, keep-alive) =="
    ),
    "stream",
    (
        "columns: as above, per stream: st/s = whole streams per second, p50/p99 = the whole "
        f"stream (request to the last byte), us/st = gateway CPU per stream, us/ev = that / "
        f"{STREAM_EVENTS} events"
    ),
)


def mark(ok: bool) -> str:
    """How a figure fares against its target."""
    return "ok" if ok else "MISS"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))]


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
        us_req = us_per_request(gw) or 0.0
        us_ev = f"{us_req / STREAM_EVENTS:>5.1f} " if stream else ""
        print(
            f"{c:>5} | {direct['rps']:>10.0f} {direct['p50'] / 1000:>7.2f} "
            f"{direct['p99'] / 1000:>7.2f} | {gw['rps']:>8.0f} {gw['p50'] / 1000:>7.2f} "
            f"{gw['p99'] / 1000:>7.2f} {added:>8.2f} {usage.cpu_pct:>5.0f} {us_req:>6.0f} {us_ev}"
            f"{usage.rss_peak_mb:>7.1f} | {usage.upstream_cpu_pct:>7.0f} {load:>10} {noise:>6} "
            f"{errors:>6} | {target}"
        )


def print_pinning(bench: Bench) -> None:
    """Where each process ran, for how long, and how the gateway was started."""
    args = bench.args
    print(
        f"gateway ({args.workers} worker{'s' if args.workers > 1 else ''}) pinned to CPU "
        f"{args.gateway_cpus or args.gateway_cpu}; wrk + upstream pinned to CPU {args.load_cpu}; "
        f"{args.duration} s per run after {args.warmup} s warm-up; launcher: "
        f"{' '.join(bench.gateway_argv())}"
    )


def print_notes(bench: Bench) -> None:
    """What went wrong along the way (wrk errors and the log tail), once."""
    for note in bench.notes:
        print(f"note: {note}")
    bench.notes.clear()


def print_load(
    bench: Bench,
    levels: list[tuple[int, dict, dict]],
    log_bytes: float | None,
    stream: bool,
) -> None:
    """One mode's wrk section: title, pinning, the table, log bytes, the columns."""
    title, per, columns = _STREAM_TEXT if stream else _PLAIN_TEXT
    print(title)
    print_pinning(bench)
    print_levels(levels, stream)
    if log_bytes is not None:
        print(f"gateway stdout/log written per {per}: {log_bytes:.0f} bytes")
    print(columns)


def report(
    bench: Bench,
    levels: list[tuple[int, dict, dict]],
    log_bytes_per_req: float | None,
) -> None:
    """The plain chat completions' section of the report."""
    print_load(bench, levels, log_bytes_per_req, stream=False)
    print_notes(bench)


def report_startup(
    cold: tuple[list[float], list[float], list[float]],
    idle_rss: float,
    idle_rss_after: float | None,
) -> None:
    """Cold start, shutdown and idle RSS, against their targets."""
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
