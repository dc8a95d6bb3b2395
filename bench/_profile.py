"""A profile of the gateway, read and printed: py-spy's collapsed stacks or a
cProfile pstats file in, the top functions, hot spots, self time by subsystem
and (py-spy only) a stream's per-event path out. No processes, no I/O but the
file read and the printing."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass

from _common import STREAM_EVENTS
from _hotspots import CATEGORIES, HOTSPOTS, PER_EVENT_EXCLUDE, PER_EVENT_ROOTS, STREAM_HOTSPOTS


def short_path(path: str) -> str:
    """A source path from its package on (site-packages, stdlib or this repo)."""
    for marker in ("site-packages/", "/lib/python3.11/", "/main/"):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + len(marker) :]
    return path


def bare(func: str) -> str:
    """'Class.method' or 'f.<locals>.g' -> the last name."""
    return func.rsplit(".", 1)[-1]


def categorize(path: str, func: str) -> str:
    """The subsystem (a CATEGORIES label) a function's self time counts to."""
    name = bare(func)
    for label, fragment, funcs in CATEGORIES:
        if fragment in path and (funcs is None or name in funcs):
            return label
    return "other (stdlib, C builtins, unattributed)"


@dataclass
class ProfileRow:
    """One function: self and inclusive time in the profile's unit."""

    func: str
    path: str
    self_value: float
    cum_value: float
    calls: int | None = None


@dataclass
class Profile:
    """A whole profile; ``stacks`` (py-spy) allow hot spots counted per sample."""

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
    """A pstats file -> per-function self/cumulative seconds and call counts."""
    import pstats

    stats = pstats.Stats(path)
    rows = []
    total = 0.0
    for (file, _line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(ProfileRow(func, short_path(file), tt, ct, nc))
        total += tt
    return Profile(rows, total, "s")


def print_profile(prof: Profile, top: int, us_per_req: float | None, stream: bool = False) -> None:
    """Top functions by self and cumulative time, hot spots, self time by subsystem;
    with ``stream`` the hot spots of a stream and us per stream."""
    rows, total, unit = prof.rows, prof.total, prof.unit
    hotspots, per = (STREAM_HOTSPOTS, "stream") if stream else (HOTSPOTS, "request")

    def pct(v: float) -> str:
        return f"{100.0 * v / total:5.1f}%" if total else "    -"

    def us(v: float) -> str:
        return f"{us_per_req * v / total:6.0f}" if total and us_per_req else "     -"

    calls = unit == "s"
    short = "st" if stream else "req"
    per_req = f" us/{short}" if us_per_req else ""
    head = f"  {'self':>6} {'cum':>6}{per_req}" + (f" {'calls':>8} {'us/call':>8}" if calls else "")
    for title, key in (("self time (tottime)", "self_value"), ("cumulative time", "cum_value")):
        print(f"\nTop {top} functions by {title}, % of {total:.0f} {unit}:")
        print(head + "  function")
        for r in sorted(rows, key=lambda r: getattr(r, key), reverse=True)[:top]:
            extra = f" {us(getattr(r, key))}" if us_per_req else ""
            if calls:
                per_call = 1e6 * r.self_value / r.calls if r.calls else 0.0
                extra += f" {r.calls or 0:>8} {per_call:>8.1f}"
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
