"""``--peer``: the same load through another gateway, beside twisted-gw's figures.

Anyone can compare: the peer is any command line that starts a gateway in
the foreground, listening on ``{port}`` and sending ``{model}`` (the model
name the bench asks for, ``--peer-model``) to ``{upstream}`` (the bench's
upstream, an OpenAI base URL ending in ``/v1``, serving the upstream model
``{upstream_model}``). For example LiteLLM::

    --peer 'litellm --port {port} --model openai/{upstream_model} --api_base {upstream}' \\
    --peer-model openai/bench-model --peer-name litellm

``{upstream_port}`` is the upstream's port alone: ``--peer 'python
bench/upstream.py --port {port} --forward-to {upstream_port}'`` compares with a
do-nothing TCP forwarder, the floor of any proxy on this host.

The peer runs pinned to the gateway's core, after twisted-gw's runs, with
the same requests (its model name and key substituted), wrk on the load
core, and its CPU and RSS sampled like the gateway's (summed over its
process tree when the sampler does so).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from _common import CHAT_PATH, HOST, MODEL_NAME, BenchError, free_port, http_call, log_tail
from _sampler import Sampler
from _setup import UPSTREAM_MODEL, Bench

#: the options overhead.py adds for the peer (flag, default, help)
PEER_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    (
        "--peer",
        "",
        (
            "command line of another gateway to run the same load through (placeholders "
            "{port}, {upstream}, {upstream_port}, {upstream_model}); see bench/_peer.py"
        ),
    ),
    ("--peer-name", "peer", "the peer's name in the report"),
    ("--peer-model", MODEL_NAME, "the model name the peer serves (sent in the requests)"),
    ("--peer-key", "sk-bench", "the bearer key sent to the peer"),
    ("--peer-timeout", 120.0, "seconds the peer may take to give its first 200"),
)


@dataclass
class Peer:
    """The peer's process and port."""

    proc: subprocess.Popen
    port: int
    log_path: str


def peer_body(body: str, model: str) -> str:
    """``body`` (one of the bench's request bodies) asking the peer's model."""
    return body.replace(f'"model":"{MODEL_NAME}"', f'"model":"{model}"', 1)


def start_peer(bench: Bench, body: str) -> Peer:
    """Start the peer on the gateway core; wait for its first 200 to ``body``."""
    args = bench.args
    port = free_port()
    command = args.peer.format(
        port=port,
        upstream=f"http://{HOST}:{bench.upstream_port}/v1",
        upstream_model=UPSTREAM_MODEL,
        upstream_port=bench.upstream_port,
        host=HOST,
    )
    log_path = os.path.join(bench.tmp, "peer.log")
    with open(log_path, "ab") as log:
        proc = bench.procs.spawn(
            ["/bin/sh", "-c", "exec " + command],
            args.gateway_cpu,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=bench.tmp,
        )
    peer = Peer(proc, port, log_path)
    deadline = time.perf_counter() + args.peer_timeout
    last = "no answer"
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"peer exited with {proc.returncode}:\n{log_tail(log_path)}")
        try:
            status, answer = http_call(
                port, "POST", CHAT_PATH, peer_body(body, args.peer_model), args.peer_key, timeout=5
            )
        except OSError as e:
            last = str(e)
        else:
            if status == 200:
                return peer
            last = f"{status} {answer[:200]!r}"
        time.sleep(0.2)
    raise BenchError(f"peer gave no 200 in {args.peer_timeout:g} s ({last}):\n{log_tail(log_path)}")


def peer_sampler(bench: Bench, peer: Peer) -> Sampler:
    """A sampler of the peer (in the gateway's place) and the upstream."""
    return Sampler(peer.proc.pid, bench.upstream_pid, bench.args.load_cpu, bench.args.gateway_cpu)


def print_peer(name: str, rows: list[tuple[int, dict, dict, dict]], what: str) -> None:
    """One table: per concurrency, direct, twisted-gw and the peer side by side."""
    print(f"\n== {what}: twisted-gw beside {name} (same run, same upstream, same core) ==")
    print(
        f" conc | direct {what}/s | twisted-gw {what}/s  p50 ms  us/{what[:3]} |"
        f" {name:>10} {what}/s  p50 ms  us/{what[:3]}  RSS MB | errors"
    )
    for conc, direct, ours, theirs in rows:
        print(
            f" {conc:>4} | {direct['rps']:>13.0f} | {ours['rps']:>16.0f} {ours['p50'] / 1000:>7.2f}"
            f" {_us(ours):>8} | {theirs['rps']:>15.0f} {theirs['p50'] / 1000:>7.2f}"
            f" {_us(theirs):>8} {theirs['usage'].rss_peak_mb:>7.1f} | {theirs['errors']}"
        )


def _us(result: dict) -> str:
    usage = result.get("usage")
    if usage is None or not result["requests"]:
        return "-"
    return f"{1e6 * usage.cpu_s / result['requests']:.0f}"
