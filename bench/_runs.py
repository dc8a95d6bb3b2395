"""The measured runs: wrk at every concurrency (direct, then through the gateway),
and for streams the time-to-first-byte and paced-stream runs on three paths."""

from __future__ import annotations

import os
import time
from typing import Any

from _common import GAP_REQUEST_BODY, STREAM_EVENTS, STREAM_REQUEST_BODY, log_tail
from _setup import Bench
from _streams import StreamTiming, checked, rotating_streams, stream_clients
from _wrk import wrk, wrk_sampled


def run_levels(bench: Bench, body: str, what: str) -> tuple[list[tuple[int, dict, dict]], float]:
    """wrk at every concurrency, direct then through the gateway; (levels, log bytes/req)."""
    args = bench.args
    levels = []
    log_bytes = 0
    log_reqs = 0
    for c in args.concurrency:
        if args.warmup:
            wrk(bench, bench.upstream_port, c, args.warmup, body)
        direct = wrk(bench, bench.upstream_port, c, args.duration, body)
        if args.warmup:
            wrk(bench, bench.proxy_port, c, args.warmup, body)
        size0 = os.path.getsize(bench.gateway.log_path)
        gw = wrk_sampled(bench, bench.proxy_port, c, args.duration, body)
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


def ttfb_run(bench: Bench) -> dict[str, Any]:
    """Sequential streams at 1 connection on each path (direct, TCP forwarder,
    gateway): ``--ttfb-streams`` back to back, in 4 blocks per path taken in
    turns, each after 3 unmeasured ones; then half as many with
    ``--ttfb-idle-ms`` of idle before each request."""
    args = bench.args
    ports = {"direct": bench.upstream_port, "fwd": bench.fwd_port, "gw": bench.proxy_port}
    hot: dict[str, list[StreamTiming]] = {k: [] for k in ports}
    idle: dict[str, list[StreamTiming]] = {k: [] for k in ports}
    body = STREAM_REQUEST_BODY
    sampler = bench.sampler(bench.fwd_pids)
    with stream_clients(ports, 10.0) as clients:
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
    with stream_clients(ports, timeout) as clients:
        rotating_streams(clients, GAP_REQUEST_BODY, 1, args.gap_chunks)  # warm-up
        return rotating_streams(clients, GAP_REQUEST_BODY, args.gap_streams, args.gap_chunks)
