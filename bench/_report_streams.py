"""The stream-only tables: time to first byte on the three paths at one
connection, and the delay the gateway adds to each event of a paced stream."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from _common import STREAM_EVENTS
from _report import TARGET_ADDED_TTFB_MS, mark, percentile, print_load, print_notes
from _sampler import Usage
from _setup import Bench
from _streams import PATHS, StreamTiming


def report_stream(
    bench: Bench,
    levels: list[tuple[int, dict, dict]],
    log_bytes_per_stream: float | None,
    ttfb: dict[str, Any],
    gap: dict[str, list[StreamTiming]] | None,
) -> None:
    """The streamed answers' section: the wrk table, then TTFB and paced streams."""
    print_load(bench, levels, log_bytes_per_stream, stream=True)
    report_ttfb(bench.args, ttfb)
    if gap:
        report_gap(bench.args, gap)
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
