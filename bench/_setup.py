"""What a run stands on: the upstreams and TCP forwarders (``bench/upstream.py``),
the gateway's config, its start and its provisioning through the Admin API,
and the cold starts. ``Bench`` holds them all, and is what the runs are handed."""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from _common import (
    CHAT_PATH,
    CLIENT_KEY,
    GAP_MODEL_NAME,
    HOST,
    MODEL_NAME,
    REQUEST_BODY,
    STREAM_EVENTS,
    STREAM_REQUEST_BODY,
    BenchError,
    accepts,
    free_port,
    http_call,
    log_tail,
)
from _procs import Processes
from _sampler import Sampler
from _streams import check_stream

HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN_KEY = "bench-admin-key"
#: --rate-limits: every kind configured on the key and the model, never reached,
#: so the run measures what checking and accounting cost per request
#: --budget: the model's prices (USD per million tokens)
BENCH_PRICING = {"input_per_mtok": 2.5, "output_per_mtok": 10.0}
BENCH_LIMITS = {"rpm": 10**9, "rpd": 10**9, "tpm": 10**12, "tpd": 10**12, "concurrency": 10**6}
UPSTREAM_MODEL = "bench-model"


@dataclass
class Gateway:
    """One gateway process and where its output goes."""

    proc: subprocess.Popen
    started: float  # perf_counter just before Popen
    log_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Bench:
    """The processes and ports of one run, and the notes for its report."""

    args: argparse.Namespace
    procs: Processes
    tmp: str
    upstream_port: int = 0
    upstream_pid: int = 0
    gap_upstream_port: int = 0  # paced streams (--chunk-gap-ms), for the gap run
    gap_upstream_pid: int = 0
    fwd_port: int = 0  # plain TCP forwarders on the gateway core: to the upstream,
    gap_fwd_port: int = 0  # and to the paced upstream (the baseline proxy hop)
    fwd_pids: tuple[int, ...] = ()
    proxy_port: int = 0
    admin_port: int = 0
    config_path: str = ""
    gateway: Gateway | None = None
    notes: list[str] = field(default_factory=list)

    # upstream

    def _spawn_upstream(self, *extra: str, cpu: int | None = None) -> tuple[int, int]:
        """Start one ``bench/upstream.py``; (port, pid)."""
        argv = [
            sys.executable,
            os.path.join(HERE, "upstream.py"),
            "--host",
            HOST,
            "--port",
            "0",
            "--max-seconds",
            str(self.args.max_seconds),
            *extra,
        ]
        cpu = self.args.load_cpu if cpu is None else cpu
        proc = self.procs.spawn(argv, cpu, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("LISTENING "):
            raise BenchError(f"upstream did not start (said {line!r})")
        return int(line.split()[1]), proc.pid

    def start_upstream(self) -> None:
        """The upstream; for streams also the paced one and a forwarder to each."""
        self.upstream_port, self.upstream_pid = self._spawn_upstream()
        status, body = http_call(self.upstream_port, "POST", CHAT_PATH, REQUEST_BODY)
        if status != 200 or b"chat.completion" not in body:
            raise BenchError(f"upstream answered {status} {body[:200]!r}")
        if self.args.stream:
            check_stream(self.upstream_port, STREAM_REQUEST_BODY, STREAM_EVENTS, "the upstream")
            gap = self.args.chunk_gap_ms
            extra = ("--chunk-gap-ms", f"{gap:g}", "--stream-chunks", str(self.args.gap_chunks))
            self.gap_upstream_port, self.gap_upstream_pid = self._spawn_upstream(*extra)
            gw_cpu = self.args.gateway_cpu  # where the gateway's hop is, idle under wrk
            fwd = ("--forward-to", str(self.upstream_port))
            self.fwd_port, pid1 = self._spawn_upstream(*fwd, cpu=gw_cpu)
            fwd = ("--forward-to", str(self.gap_upstream_port))
            self.gap_fwd_port, pid2 = self._spawn_upstream(*fwd, cpu=gw_cpu)
            self.fwd_pids = (pid1, pid2)
            check_stream(self.fwd_port, STREAM_REQUEST_BODY, STREAM_EVENTS, "the TCP forwarder")

    # gateway

    def write_config(self) -> None:
        """The gateway's config file: embedded store in the temp dir, free ports."""
        self.proxy_port, self.admin_port = free_port(), free_port()
        config = {
            "deployment": {
                "store": {"path": os.path.join(self.tmp, "store.json")},
                "admin": {"admin_key": [{"key": ADMIN_KEY}]},
            },
            "server": {
                "proxy": {"listen": f"{HOST}:{self.proxy_port}"},
                "admin": {"listen": f"{HOST}:{self.admin_port}"},
            },
        }
        if self.args.workers > 1:  # in the file: the twistd launcher reads it too
            config["server"]["workers"] = self.args.workers
        if self.args.no_ledger:  # (a gateway older than the ledger warns of the key)
            config["deployment"]["ledger"] = {"enabled": False}
        # JSON is YAML too; the .yaml name is what users write.
        self.config_path = os.path.join(self.tmp, "config.yaml")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

    def gateway_argv(self, python_flags: tuple[str, ...] = ()) -> list[str]:
        """How ``--launcher`` starts the gateway (``python_flags``: under python)."""
        cfg = ["--config", self.config_path]
        bindir = os.path.dirname(sys.executable)
        if self.args.launcher == "twistd":
            twistd = os.path.join(bindir, "twistd")
            twistd = twistd if os.access(twistd, os.X_OK) else shutil.which("twistd") or "twistd"
            return [sys.executable, *python_flags, twistd, "-n", "--pidfile=", "twisted-gw", *cfg]
        if python_flags:
            return [sys.executable, *python_flags, "-m", "twisted_gw", *cfg]
        # The real console script, not a pyenv shim (a shim adds ~60 ms to every start).
        script = os.path.join(bindir, "twisted-gw")
        if os.access(script, os.X_OK):
            return [script, *cfg]
        return [sys.executable, "-m", "twisted_gw", *cfg]

    def start_gateway(self, python_flags: tuple[str, ...] = (), tag: str = "") -> Gateway:
        """Start a gateway on the gateway core, its output to ``gateway{tag}.log``."""
        for port in (self.proxy_port, self.admin_port):
            if accepts(port):  # a gateway still up would answer in the new one's place
                raise BenchError(f"port {port} is still taken before starting a gateway")
        log_path = os.path.join(self.tmp, f"gateway{tag}.log")
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            started = time.perf_counter()
            proc = self.procs.spawn(
                self.gateway_argv(python_flags),
                self.args.gateway_cpus or self.args.gateway_cpu,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        finally:
            log.close()
        return Gateway(proc, started, log_path)

    def _check_alive(self, gw: Gateway, what: str) -> None:
        if gw.proc.poll() is not None:
            raise BenchError(
                f"gateway exited with {gw.proc.returncode} while {what}:\n{log_tail(gw.log_path)}"
            )

    def wait_accepting(self, gw: Gateway, port: int, timeout: float = 15.0) -> float:
        """Seconds from the gateway's start until ``port`` accepts."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self._check_alive(gw, f"waiting for port {port}")
            if accepts(port):
                return time.perf_counter() - gw.started
            time.sleep(0.002)
        raise BenchError(f"gateway port {port} not accepting after {timeout} s")

    def wait_first_200(self, gw: Gateway, timeout: float = 15.0) -> tuple[float, float]:
        """(s to proxy port accepting, s to first 200 on a chat completion)."""
        accepted = self.wait_accepting(gw, self.proxy_port, timeout)
        deadline = time.perf_counter() + timeout
        last = "no answer"
        while time.perf_counter() < deadline:
            self._check_alive(gw, "waiting for the first 200")
            try:
                status, body = http_call(
                    self.proxy_port, "POST", CHAT_PATH, REQUEST_BODY, CLIENT_KEY, timeout=5
                )
            except OSError as e:
                last = repr(e)
                time.sleep(0.002)
                continue
            if status == 200:
                done = time.perf_counter() - gw.started
                if b'"usage"' not in body:
                    raise BenchError(f"gateway 200 without usage: {body[:300]!r}")
                return accepted, done
            last = f"{status} {body[:200]!r}"
            time.sleep(0.002)
        raise BenchError(f"no 200 from the gateway within {timeout} s (last: {last})")

    def provision(self) -> None:
        """First start: create the model and the key through the Admin API."""
        gw = self.start_gateway(tag="-provision")
        self.wait_accepting(gw, self.admin_port)
        entities = []
        models = [(MODEL_NAME, self.upstream_port)]
        if self.gap_upstream_port:
            models.append((GAP_MODEL_NAME, self.gap_upstream_port))
        for name, port in models:
            model = {
                "name": name,
                "model": f"openai/{UPSTREAM_MODEL}",
                "provider_config": {
                    "api_key": "sk-upstream",
                    "api_base": f"http://{HOST}:{port}/v1",
                },
            }
            if self.args.rate_limits:
                model["rate_limit"] = dict(BENCH_LIMITS)
            if self.args.budget:
                model["pricing"] = dict(BENCH_PRICING)
            entities.append(("/aisix/admin/models", model))
        apikey = {"key": CLIENT_KEY, "allowed_models": [name for name, _ in models]}
        if self.args.rate_limits:
            apikey["rate_limit"] = dict(BENCH_LIMITS)
        if self.args.budget:
            apikey["budget"] = {"max_usd": 10**9, "period": "month"}  # never reached
        entities.append(("/aisix/admin/apikeys", apikey))
        for path, entity in entities:
            status, body = http_call(self.admin_port, "POST", path, entity, ADMIN_KEY)
            if status != 201:
                raise BenchError(f"POST {path} -> {status} {body[:300]!r}")
        self.wait_first_200(gw, timeout=10)  # the running gateway picked them up
        self.procs.stop(gw.proc)

    def cold_starts(self) -> tuple[list[float], list[float], list[float]]:
        """Restart on the populated store; the last gateway stays up."""
        firsts, accepts_, stops = [], [], []
        for i in range(self.args.cold_runs):
            gw = self.start_gateway()
            accepted, first = self.wait_first_200(gw)
            accepts_.append(accepted * 1000)
            firsts.append(first * 1000)
            if i < self.args.cold_runs - 1:
                stops.append(self.procs.stop(gw.proc) * 1000)
            else:
                self.gateway = gw
        return firsts, accepts_, stops

    def stop_gateway(self) -> None:
        """Stop the running gateway, if any (it holds the ports)."""
        if self.gateway is not None:
            self.procs.stop(self.gateway.proc)
            self.gateway = None

    def sampler(self, also_on_gw_core: tuple[int, ...] = ()) -> Sampler:
        """A sampler of the running gateway and the upstream on the two cores."""
        return Sampler(
            self.gateway.pid,
            self.upstream_pid,
            self.args.load_cpu,
            self.args.gateway_cpu,
            also_on_gw_core,
        )
