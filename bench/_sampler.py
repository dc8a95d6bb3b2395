"""What the processes used during a run, read from /proc: CPU% of the gateway
and the upstream, the gateway's peak RSS, and how busy the two cores were."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a gateway with workers is a process tree)."""
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        i += 1
    return pids


def tree_ticks(pid: int) -> int:
    """cpu_ticks of ``pid`` and its descendants (those alive now)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_ticks(p)
    return total


def tree_rss_mb(pid: int) -> float:
    """rss_mb summed over ``pid`` and its descendants."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += rss_mb(p)
    return total


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 when /proc does not say)."""
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
    """What one run used; CPU% of one core, so 100 = that core saturated."""

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
        """Take the starting counters; the run begins now."""
        self.t0 = time.perf_counter()
        self.ticks0 = {k: self._ticks(k, p) for k, p in self.pids.items() if p}
        self.core0 = {k: core_times(c) for k, c in self.cpus.items()}
        self.sample()

    @staticmethod
    def _ticks(name: str, pid: int) -> int:
        """The gateway counts with its workers (``--workers``), the others alone."""
        return tree_ticks(pid) if name == "gw" else cpu_ticks(pid)

    def sample(self) -> None:
        """Update the gateway's peak RSS (call it often during the run)."""
        if self.pids["gw"]:
            with contextlib.suppress(OSError):
                self.rss_peak = max(self.rss_peak, tree_rss_mb(self.pids["gw"]))

    def stop(self) -> Usage:
        """The usage since ``start``."""
        self.sample()
        wall = max(time.perf_counter() - self.t0, 1e-6)
        pct = {
            k: 100.0 * (self._ticks(k, p) - self.ticks0[k]) / CLK_TCK / wall
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
