"""Every subprocess of a run: started pinned to a core, stopped on every way out.

A child is pinned with ``taskset`` (which execs, so the pid stays the child's),
gets its own session, and is SIGKILLed by the kernel when this script dies
without cleaning up (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from typing import Any

from _common import BenchError


def die_with_parent() -> None:
    """preexec_fn: SIGKILL the child if this script dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Processes:
    """Every subprocess this script starts, so that all of them get stopped."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], cpu: int | None, **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` (pinned to ``cpu`` unless None); kwargs go to Popen."""
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]  # taskset execs: same pid
        proc = subprocess.Popen(
            argv,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - this script starts no threads
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
        """Stop every child still known, the last started first."""
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=3.0)


def raise_interrupt(signum: int, frame: Any) -> None:
    """Signal handler (SIGTERM): unwind like Ctrl-C, so that ``finally`` stops the children."""
    raise KeyboardInterrupt(f"signal {signum}")


def check_pinning(gateway_cpu: int, load_cpu: int) -> None:
    """Both cores usable by this process, and ``taskset`` there to pin to them."""
    cpus = os.sched_getaffinity(0)
    if gateway_cpu not in cpus or load_cpu not in cpus:
        raise BenchError(f"--gateway-cpu/--load-cpu must be among the usable CPUs {sorted(cpus)}")
    if not shutil.which("taskset"):
        raise BenchError("taskset (util-linux) is needed to pin the processes")
