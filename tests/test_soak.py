"""Fault-injection soak, black-box (CONTRACT 4.1, 4.3, 4.4, 4.5, 4.6): thousands of
plain, streamed and embeddings requests through the real gateway process, with
limits configured, while clients and the upstream misbehave at random; then
nothing may be left behind.

Clients (raw sockets, some closed with SO_LINGER 0 so the gateway sees a
reset) go away before the headers, while a stream opens (the upstream has
answered its headers, no chunk yet) or mid-stream. The upstream
(tests/support/fault_upstream.py) resets or closes before answering, cuts
mid-body or mid-stream, stalls past the model's 300 ms timeout (before its
headers, after its headers, after a first chunk), sends malformed events or a
~2 MiB line without a newline (above the 1 MiB event bound), answers a stream
with ``200 application/json``, answers 5xx, or answers normally.

Every client that stayed must get what the contract says for that fault
(checked per request). Afterwards: the concurrency-limited model and key admit
exactly ``limit`` simultaneous requests again (and refuse one more), the
in-flight and slots-held gauges read 0 when the gateway exports them, no
upstream exchange is still in progress, the gateway's file descriptors are
back at the warm-up baseline, every request has exactly one access-log line
and exactly one finalize, and the log holds no traceback.

``TWISTED_GW_SOAK=N`` sends N requests (CI default 1000);
``TWISTED_GW_SOAK_SEED`` picks another random plan. The test prints its
figures (``pytest -s``) and puts them in every assertion message.
"""

from __future__ import annotations

import gc
import json
import os
import random
import re
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.python.failure import Failure

from tests.conftest import Gateway, secret
from tests.streamcheck import counted_gateway
from tests.support.fault_upstream import OVERSIZED_LINE_BYTES, FaultUpstream, marker
from tests.support.gateway import treq_json

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"

REQUESTS = int(os.environ.get("TWISTED_GW_SOAK") or 1000)
SEED = int(os.environ.get("TWISTED_GW_SOAK_SEED") or 20261201)
WORKERS = 16  # clients at once
MODEL_LIMIT = 12  # concurrency of the limited model: below WORKERS, so it is hit
KEY_LIMIT = 16  # concurrency of the key
TIMEOUT_MS = 300  # the models' timeout: stalls cost this much
REQUEST_DEADLINE = 15.0  # seconds: a single exchange slower than this is a hang
#: the whole soak phase stops launching requests after this many seconds
SOAK_BUDGET = float(os.environ.get("TWISTED_GW_SOAK_SECONDS") or 30 + REQUESTS * 0.012)
FD_MARGIN = 5

# What may go wrong, by endpoint: (client behaviour weights, upstream kind weights).
STAY, AT_ONCE, BEFORE_HEADERS = "stay", "at_once", "before_headers"
WHILE_OPENING, MID_STREAM = "while_opening", "mid"
#: the models of the AT_ONCE requests, left with a FIN and with a reset: the
#: access log tells them apart by it (see "A request whose client reset" below)
GONE_MODEL, GONE_RST_MODEL = "soak-gone", "soak-gone-rst"
#: at most this share of the reset AT_ONCE requests may go unread by the gateway
RST_UNREAD_SHARE = 0.1
MIX: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "stream": (
        {STAY: 65, AT_ONCE: 7, BEFORE_HEADERS: 10, WHILE_OPENING: 9, MID_STREAM: 9},
        {
            "ok": 26,
            "slow_stream": 4,
            "reset": 5,
            "close": 5,
            "stall": 5,
            "hold_headers": 5,
            "stall_mid": 5,
            "cut_mid": 8,
            "malformed_first": 4,
            "malformed_mid": 5,
            "oversized_first": 3,
            "oversized_mid": 3,
            "json200": 6,
            "status_5xx": 8,
        },
    ),
    "chat": (
        {STAY: 80, AT_ONCE: 7, BEFORE_HEADERS: 13},
        {"ok": 40, "reset": 10, "close": 10, "stall": 8, "cut_mid": 10, "malformed_first": 7}
        | {"status_5xx": 15},
    ),
    "embeddings": (
        {STAY: 85, AT_ONCE: 5, BEFORE_HEADERS: 10},
        {"ok": 50, "reset": 10, "close": 5, "stall": 10, "cut_mid": 10, "status_5xx": 15},
    ),
}
ENDPOINT_WEIGHTS = {"stream": 50, "chat": 35, "embeddings": 15}

ACCESS = re.compile(r"\baccess rid=(\S+)")
ACCESS_LINE = re.compile(r"\baccess rid=(\S+) .*?status=(\S+) model=(\S+) .*?end=(\S+)")
FINALIZE = re.compile(r"finalize-count rid=(\S+) n=(\d+) end=(\S+) status=(\S+)")


# -- the plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One request of the soak: what it asks, how the upstream and the client behave."""

    token: int
    endpoint: str  # stream | chat | embeddings
    model: str
    kind: str  # the upstream's behaviour (tests/support/fault_upstream.KINDS)
    client: str  # STAY | AT_ONCE | BEFORE_HEADERS | WHILE_OPENING | MID_STREAM
    reset: bool  # the client leaves with a TCP reset (SO_LINGER 0) rather than a FIN
    jitter: float  # seconds between the trigger and the client's leaving


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def make_plan(n: int, seed: int, models: tuple[str, str], first_token: int) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for i in range(n):
        endpoint = _pick(rng, ENDPOINT_WEIGHTS)
        clients, kinds = MIX[endpoint]
        client = _pick(rng, clients)
        # a client that leaves early meets an upstream that keeps it waiting there;
        # one that leaves at once (right after its request, before the gateway can
        # have reached the upstream) has a model of its own, to be told apart in the log
        kind = {AT_ONCE: "stall", BEFORE_HEADERS: "stall", WHILE_OPENING: "hold_headers"}
        kind[MID_STREAM] = "slow_stream"
        model = models[0] if rng.random() < 0.7 else models[1]
        upstream_kind = kind.get(client) or _pick(rng, kinds)
        reset = rng.random() < 0.5
        if client == AT_ONCE:
            model = GONE_RST_MODEL if reset else GONE_MODEL
        plans.append(
            Plan(
                token=first_token + i,
                endpoint=endpoint,
                model=model,
                kind=upstream_kind,
                client=client,
                reset=reset,
                jitter=rng.uniform(0, 0.04),
            )
        )
    return plans


def request_bytes(gw: Gateway, key: str, plan: Plan) -> bytes:
    text = marker(plan.kind, plan.token)
    if plan.endpoint == "embeddings":
        path, doc = EMBEDDINGS, {"model": plan.model, "input": text}
    else:
        doc = {"model": plan.model, "messages": [{"role": "user", "content": text}]}
        doc["stream"] = plan.endpoint == "stream"
        path = CHAT
    body = json.dumps(doc).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.proxy_port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


# -- the raw client ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What one client saw."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # de-chunked
    complete: bool = False  # the body ended as its framing says
    left: str | None = None  # how the client left early, if it did: "fin" | "rst"
    hung: bool = False
    raw_bytes: int = 0

    @property
    def data(self) -> list[bytes]:
        """The SSE ``data:`` payloads, in order."""
        events = self.body.replace(b"\r\n", b"\n").split(b"\n\n")
        return [
            line[5:].strip()
            for event in events
            for line in event.split(b"\n")
            if line.startswith(b"data:")
        ]

    def error_code(self) -> str | None:
        try:
            return json.loads(self.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return (
            f"status={self.status} rid={self.headers.get('x-request-id')}"
            f" ct={self.headers.get('content-type')} complete={self.complete}"
            f" left={self.left} hung={self.hung} bytes={self.raw_bytes} body={self.body[:160]!r}"
        )


def parse_response(raw: bytes) -> Outcome:
    outcome = Outcome(raw_bytes=len(raw))
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return outcome
    lines = head.decode("latin-1").split("\r\n")
    outcome.status = int(lines[0].split(" ")[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        outcome.headers[name.strip().lower()] = value.strip()
    if outcome.headers.get("transfer-encoding", "").lower() == "chunked":
        body, at = bytearray(), 0
        while True:
            end = rest.find(b"\r\n", at)
            if end < 0:
                break
            size = int(rest[at:end].split(b";")[0] or b"0", 16)
            if size == 0:
                outcome.complete = True
                break
            if len(rest) < end + 2 + size:
                body += rest[end + 2 :]
                break
            body += rest[end + 2 : end + 2 + size]
            at = end + 2 + size + 2
        outcome.body = bytes(body)
    elif "content-length" in outcome.headers:
        length = int(outcome.headers["content-length"])
        outcome.body = rest[:length]
        outcome.complete = len(rest) >= length
    else:
        outcome.body, outcome.complete = rest, True
    return outcome


class RawClient(protocol.Protocol):
    """Writes one request, reads until the connection ends; can leave early.

    ``wake`` (set by the driver) fires at the first response byte or at the
    connection's end; ``first_event`` at the first ``data:`` of the body.
    """

    def __init__(self, request: bytes, reset: bool, at_once: bool = False) -> None:
        self.request = request
        self.reset = reset
        self.at_once = at_once
        self.received = bytearray()
        self.lost = False
        self.left: str | None = None
        self.wake: defer.Deferred[None] | None = None
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.reset:  # close() will send a RST instead of a FIN
            linger = struct.pack("ii", 1, 0)
            self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        if self.at_once:
            # straight to the socket: a reset would drop what Twisted still buffers
            sent = self.transport.getHandle().send(self.request)
            assert sent == len(self.request), "a small request fits the socket buffer"
            self.leave()
        else:
            self.transport.write(self.request)

    def _wake(self) -> None:
        if self.wake is not None and not self.wake.called:
            self.wake.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._wake()

    def has_event(self) -> bool:
        _, _, body = bytes(self.received).partition(b"\r\n\r\n")
        return b"data:" in body

    def leave(self) -> None:
        self.left = "rst" if self.reset else "fin"
        if self.reset:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        self._wake()
        self.done.callback(bytes(self.received))


async def _until(client: RawClient, also: defer.Deferred[Any] | None = None) -> None:
    """Until the client got bytes or lost its connection, or ``also`` fired."""
    if client.received or client.lost:
        return
    client.wake = defer.Deferred()
    if also is not None:
        also.addCallback(lambda _: client._wake())
    await client.wake


async def run_one(gw: Gateway, key: str, fault: FaultUpstream, plan: Plan) -> Outcome:
    """Send one planned request and play the client's part of the plan."""
    client = RawClient(request_bytes(gw, key, plan), plan.reset, plan.client == AT_ONCE)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", gw.proxy_port, timeout=5)
    await connectProtocol(endpoint, client)
    hung = False

    def expire() -> None:
        nonlocal hung
        hung = True
        client.transport.abortConnection()

    timer = reactor.callLater(REQUEST_DEADLINE, expire)
    try:
        if plan.client in (BEFORE_HEADERS, WHILE_OPENING):
            # leave once the upstream has the request (and, for WHILE_OPENING, has
            # answered its headers): the gateway is then waiting on the upstream
            seen = fault.wait_seen(plan.token)
            await _until(client, seen)
            if not seen.called:
                seen.cancel()
                seen.addErrback(lambda f: f.trap(defer.CancelledError))
            if not client.received and not client.lost:
                await task.deferLater(reactor, plan.jitter, lambda: None)  # where in the window
                if not client.received and not client.lost:
                    client.leave()
        elif plan.client == MID_STREAM:
            while not client.lost and not client.has_event():
                client.wake = defer.Deferred()
                await client.wake
            if not client.lost:
                await task.deferLater(reactor, plan.jitter, lambda: None)
                if not client.lost:
                    client.leave()
        raw = await client.done
    finally:
        if timer.active():
            timer.cancel()
    outcome = parse_response(raw)
    outcome.left, outcome.hung = client.left, hung
    return outcome


# -- what a client that stayed must see ----------------------------------------------------


def _error_shape(outcome: Outcome) -> str | None:
    try:
        error = json.loads(outcome.body)["error"]
    except (ValueError, KeyError, TypeError):
        return "an error that is not the contract's JSON"
    if set(error) != {"message", "type", "param", "code"} or error["param"] is not None:
        return "an error that is not the contract's JSON shape"
    return None


def contract_problem(plan: Plan, outcome: Outcome) -> str | None:
    """What is wrong with the answer a client that stayed got, or None (4.1, 4.3, 4.4)."""
    status, code = outcome.status, outcome.error_code()
    if status is None:
        return "no response at all"
    if status >= 400 and (problem := _error_shape(outcome)):
        return problem
    if status == 429:  # the limits are configured to be hit now and then
        if code in ("concurrency_limit_exceeded", "rate_limit_exceeded"):
            return None
        return f"a 429 with code {code}"
    stream = plan.endpoint == "stream"
    sse = outcome.headers.get("content-type", "").startswith("text/event-stream")
    data = outcome.data
    kind = plan.kind

    def want_error(want_status: int, want_code: str) -> str | None:
        if (status, code) == (want_status, want_code):
            return None
        return f"expected {want_status} {want_code}"

    def want_cut_stream() -> str | None:
        if status != 200 or not sse:
            return "expected a 200 stream that ends without [DONE]"
        if not data:
            return "expected the first chunk to be relayed"
        if b"[DONE]" in data:
            return "a stream cut upstream ended with [DONE]"
        if len(outcome.body) > OVERSIZED_LINE_BYTES // 2:
            return "the oversized upstream line reached the client"
        return None

    if kind in ("ok", "slow_stream") or (kind == "json200" and not stream):
        if status != 200:
            return "expected 200"
        if stream:
            if not sse or not data or data[-1] != b"[DONE]" or not outcome.complete:
                return "expected a whole stream ending with [DONE]"
            return None
        want = "data" if plan.endpoint == "embeddings" else "choices"
        try:
            return None if want in json.loads(outcome.body) else f"a 200 without {want}"
        except ValueError:
            return "a 200 that is not JSON"
    if kind in ("reset", "close", "status_5xx", "malformed_first", "oversized_first"):
        return want_error(502, "provider_error")
    if kind == "cut_mid":
        return want_cut_stream() if stream else want_error(502, "provider_error")
    if kind in ("stall", "hold_headers"):
        return want_error(504, "request_timeout")
    if kind in ("stall_mid", "malformed_mid", "oversized_mid"):
        return want_cut_stream()
    if kind == "json200":
        # a whole completion where a stream was asked: relayed as chunks, or refused;
        # never an empty 200 stream, which a client reads as "the model said nothing"
        if status >= 400:
            return None
        if status == 200 and sse and data:
            return None
        return "a 200 application/json answer to a stream became an empty stream"
    return f"no expectation for kind {kind}"


# -- reading the process ------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def gauge(metrics: str, name: str) -> float | None:
    """The sum of a metric's samples, or None when the gateway does not export it."""
    total = None
    for line in metrics.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


async def held_gauges(gw: Gateway) -> dict[str, float | None]:
    status, _, body = await treq_json("GET", gw.admin + "/metrics", timeout=5)
    assert status == 200, body
    text = body.decode()
    names = ("twisted_gw_concurrency_slots_held", "twisted_gw_requests_in_flight")
    return {name: gauge(text, name) for name in names}


async def poll(check, within: float, every: float = 0.05):
    """Call ``check()`` (maybe async) until it returns a true value or ``within`` passes;
    its last value. For state of another process, which nothing here can await."""
    deadline = reactor.seconds() + within
    while True:
        value = check()
        if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
            value = await value
        if value or reactor.seconds() > deadline:
            return value
        await task.deferLater(reactor, every, lambda: None)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault():
    upstream = FaultUpstream()
    upstream.start()
    yield upstream
    pytest_twisted.blockon(upstream.stop())


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    # at teardown, after the process exits, its log must hold no unhandled error
    # either (an unhandled error in a Deferred is logged when it is collected)
    yield from counted_gateway(tmp_path_factory, "soak")


# -- the soak -----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the soak did and what it left, printed and put in assertion messages."""

    planned: int = 0
    sent: int = 0
    seconds: float = 0.0
    upstream_kinds: Counter[str] = field(default_factory=Counter)
    client_left: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int | None] = field(default_factory=Counter)
    hung: int = 0
    upstream_seen: Counter[str] = field(default_factory=Counter)
    upstream_cancelled: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    wrong_by_kind: Counter[str] = field(default_factory=Counter)
    after: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            (
                f"soak: {self.sent} of {self.planned} requests sent in {self.seconds:.1f} s "
                f"(seed {SEED}, {WORKERS} clients, model concurrency {MODEL_LIMIT}, "
                f"key concurrency {KEY_LIMIT}, timeout {TIMEOUT_MS} ms)"
            ),
            f"  upstream faults planned: {dict(sorted(self.upstream_kinds.items()))}",
            f"  upstream saw (warm-up included): {dict(sorted(self.upstream_seen.items()))}",
            (
                "  upstream exchanges the gateway walked away from: "
                f"{dict(sorted(self.upstream_cancelled.items()))}"
            ),
            f"  clients that left early: {dict(sorted(self.client_left.items()))}",
            f"  statuses: {dict(sorted(self.statuses.items(), key=lambda kv: str(kv[0])))}",
            f"  hung clients: {self.hung}",
            f"  wrong answers by kind: {dict(sorted(self.wrong_by_kind.items()))}",
        ]
        lines += [f"    {w}" for w in self.wrong[:12]]
        lines += [f"  {k}: {v}" for k, v in self.after.items()]
        return "\n".join(lines)


async def admits(
    gw: Gateway, key: str, fault: FaultUpstream, model: str, limit: int, token: int
) -> str | None:
    """Whether ``limit`` requests at once are admitted and one more refused; a
    problem, or None. The held requests stall upstream until the 300 ms timeout."""
    plans = [Plan(token + i, "chat", model, "stall", STAY, False, 0.0) for i in range(limit)]
    held = [defer.ensureDeferred(run_one(gw, key, fault, p)) for p in plans]
    seen = defer.gatherResults([fault.wait_seen(p.token) for p in plans], consumeErrors=True)
    seen.addTimeout(3, reactor)
    problem = None
    try:
        await seen
    except defer.TimeoutError:
        problem = f"only {sum(fault.has_seen(p.token) for p in plans)} of {limit} admitted"
    if problem is None:
        extra = Plan(token + limit, "chat", model, "ok", STAY, False, 0.0)
        over = await run_one(gw, key, fault, extra)
        if (over.status, over.error_code()) != (429, "concurrency_limit_exceeded"):
            problem = f"request {limit + 1} was not refused: {over.describe()}"
    outcomes = await defer.gatherResults(held)
    statuses = Counter(o.status for o in outcomes)
    if problem is None and statuses != Counter({504: limit}):
        problem = f"the held requests ended {dict(statuses)}, expected {limit} x 504"
    return problem


@pytest.fixture
def quiet_collector():
    """This test process runs the fault upstream and the clients, on timings
    the gateway judges (a slow stream's 30 ms gaps against a 300 ms timeout).
    Late in a full run its heap holds every earlier test's leftovers, and a
    full collection of it can stall the upstream past the timeout, so the
    gateway rightly cuts a stream the test expected whole. Frozen, the
    collector only looks at what the soak makes."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest_twisted.ensureDeferred
async def test_soak_with_faults_leaves_no_permit_connection_fd_or_log_line_behind(
    gw, fault, quiet_collector
):
    provider = {"api_key": secret("sk-provider"), "api_base": fault.base_url}
    await gw.add_model(
        "soak-limited",
        "openai/gpt-soak",
        provider,
        timeout=TIMEOUT_MS,
        rate_limit={"concurrency": MODEL_LIMIT},
    )
    await gw.add_model("soak-free", "openai/gpt-soak", provider, timeout=TIMEOUT_MS)
    for gone_model in (GONE_MODEL, GONE_RST_MODEL):
        await gw.add_model(gone_model, "openai/gpt-soak", provider, timeout=TIMEOUT_MS)
    key, _ = await gw.add_key_with_id(
        ["soak-limited", "soak-free", GONE_MODEL, GONE_RST_MODEL],
        {"rpm": 10**9, "concurrency": KEY_LIMIT},
    )
    models = ("soak-limited", "soak-free")
    pid = gw.process.pid
    assert pid is not None
    figures = Figures(planned=REQUESTS)

    def fail(what: str) -> str:
        return f"{what}\n{figures.text()}"

    async def drive(plans: list[Plan], results: list[tuple[Plan, Outcome]], budget: float):
        pending = iter(plans)
        stop_at = reactor.seconds() + budget

        async def worker() -> None:
            for plan in pending:
                if reactor.seconds() > stop_at:
                    return
                results.append((plan, await run_one(gw, key, fault, plan)))

        await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(WORKERS)])

    # warm-up: normal answers at full concurrency, so the gateway's upstream pool
    # and its other lazily made state are as large as the soak will need
    warm = [
        Plan(i, endpoint, models[1], "ok", STAY, False, 0.0)
        for i, endpoint in enumerate(["chat", "stream", "embeddings"] * WORKERS)
    ]
    warm_results: list[tuple[Plan, Outcome]] = []
    await drive(warm, warm_results, 30)
    assert all(o.status == 200 for _, o in warm_results), [
        o.describe() for _, o in warm_results if o.status != 200
    ]
    await fault.wait_idle(5)
    base_fds, base_upstream = fd_count(pid), fault.open_connections
    base_rss = rss_kib(pid)
    log_start = len(gw.process.stdout)

    # the soak
    plans = make_plan(REQUESTS, SEED, models, first_token=1_000_000)
    results: list[tuple[Plan, Outcome]] = []
    started = time.monotonic()
    await drive(plans, results, SOAK_BUDGET)
    figures.seconds = time.monotonic() - started
    figures.sent = len(results)
    for plan, outcome in results:
        figures.upstream_kinds[f"{plan.endpoint}:{plan.kind}"] += 1
        figures.statuses[outcome.status] += 1
        figures.hung += outcome.hung
        if outcome.left:
            figures.client_left[f"{plan.client}/{outcome.left}"] += 1
        elif not outcome.hung and (problem := contract_problem(plan, outcome)):
            figures.wrong_by_kind[f"{plan.endpoint}:{plan.kind}"] += 1
            seen = "seen" if fault.has_seen(plan.token) else "never seen"
            figures.wrong.append(
                f"{plan.endpoint}:{plan.kind} ({seen} upstream) -> {problem}: {outcome.describe()}"
            )
    figures.upstream_seen = Counter(fault.seen)
    figures.upstream_cancelled = Counter(fault.client_gone)

    # what is left: upstream exchanges. The gateway keeps idle keep-alive
    # connections pooled for 120 s, so an open connection is no leak; an
    # exchange still in progress (a request whose answer was neither finished
    # nor cut, the gateway still listening) is: every one of them must end
    # within a moment, by the client's leaving or the 300 ms timeout.
    try:
        await fault.wait_idle(5)
    except defer.TimeoutError:
        pass
    figures.after["upstream exchanges in progress"] = fault.in_progress
    figures.after["upstream exchanges in progress by kind"] = dict(fault.in_progress_kinds())
    figures.after["upstream connections the gateway ended while idle"] = dict(fault.idle_closes)
    figures.after["upstream connections open (idle, pooled)"] = (
        f"{fault.open_connections} (after warm-up: {base_upstream})"
    )

    # access-log lines of the soak: polled, the gateway writes them a moment after
    def soak_log() -> str:
        return gw.process.stdout[log_start:]

    await poll(lambda: len(ACCESS.findall(soak_log())) >= figures.sent, 10, every=0.2)
    soak_rids = ACCESS.findall(soak_log())

    gauges = await poll(lambda: defer.ensureDeferred(_zero_gauges(gw)), 5) or await held_gauges(gw)
    figures.after["gauges"] = gauges

    # permits: the limited model and the key admit `limit` at once again, and not one more
    model_problem = await admits(gw, key, fault, "soak-limited", MODEL_LIMIT, 2_000_000)
    key_problem = await admits(gw, key, fault, "soak-free", KEY_LIMIT, 3_000_000)
    figures.after["model concurrency"] = model_problem or f"{MODEL_LIMIT} admitted, 1 refused"
    figures.after["key concurrency"] = key_problem or f"{KEY_LIMIT} admitted, 1 refused"

    # file descriptors: net of the upstream connections the pool keeps
    await fault.wait_idle(5)

    def leaked_fds() -> int:
        return (fd_count(pid) - fault.open_connections) - (base_fds - base_upstream)

    await poll(lambda: leaked_fds() <= FD_MARGIN, 5)
    figures.after["fds"] = (
        f"{fd_count(pid)} (after warm-up {base_fds}; net of pooled upstream connections "
        f"{leaked_fds():+d})"
    )
    rss = rss_kib(pid)
    figures.after["RSS KiB"] = f"{base_rss} -> {rss} ({(rss - base_rss) / 1024:+.1f} MiB)"

    # the log: one access line and one finalize per request, no traceback
    log = gw.process.stdout
    access = Counter(ACCESS.findall(log))
    finals: dict[str, list[int]] = {}
    for rid, n, _end, _status in FINALIZE.findall(log):
        finals.setdefault(rid, []).append(int(n))
    lines = {rid: (status, model, end) for rid, status, model, end in ACCESS_LINE.findall(log)}
    soak_lines = [lines[rid] for rid in soak_rids if rid in lines]
    # clients that waited, then left: the gateway must have seen each one go
    gone_models = (GONE_MODEL, GONE_RST_MODEL)
    gone = Counter(s for s, m, e in soak_lines if m not in gone_models and e == "client_gone")
    left = sum(n for k, n in figures.client_left.items() if not k.startswith(AT_ONCE))
    # clients that left at once: gone too, unless refused before it could notice
    at_once = Counter(f"{e}/{s}" for s, m, e in soak_lines if m == GONE_MODEL)
    at_once_sent = sum(1 for plan, _ in results if plan.client == AT_ONCE and not plan.reset)
    # A request whose client reset right after sending it may never be read by
    # the gateway, through no fault of its own. The bytes reach the gateway's
    # socket (the kernel acknowledges them; Linux keeps them readable after the
    # RST, ahead of the ECONNRESET), but the socket is in error from then on, so
    # any write the reactor attempts before its first read reports the
    # connection lost and the bytes are discarded unread. Twisted's epoll
    # reactor does attempt one: when, in one epoll_wait batch, a handler closes
    # a socket (here an upstream connect the gateway cancels for another client
    # that left) and the listener then accepts a connection that gets the same
    # descriptor number, the closed socket's pending EPOLLOUT from that batch is
    # dispatched by number to the new connection: doWrite, send(b"") ->
    # ECONNRESET/EPIPE, connectionLost, no dataReceived (cf. twisted/twisted
    # #11625, #6373). With a FIN the same stray write succeeds and the read
    # follows, so those requests stay exact; a reset one is counted at most once,
    # and only a few may go unread.
    at_once_rst = Counter(f"{e}/{s}" for s, m, e in soak_lines if m == GONE_RST_MODEL)
    at_once_rst_sent = sum(1 for plan, _ in results if plan.client == AT_ONCE and plan.reset)
    rst_unread = at_once_rst_sent - sum(at_once_rst.values())
    # (a client that left before any answer is no provider error: never logged as a 5xx)
    at_once_bad = {
        k: n
        for k, n in (at_once + at_once_rst).items()
        if not k.startswith("client_gone/") or "/5" in k
    }
    at_once_bad.pop("rejected/429", None)
    gone_5xx = {s: n for s, n in gone.items() if s.startswith("5")}
    twice = sorted(rid for rid, ns in finals.items() if ns != [1])
    not_once = sorted(rid for rid in soak_rids if access[rid] != 1)
    no_final = sorted(rid for rid in soak_rids if rid not in finals)
    seen_rids = {o.headers.get("x-request-id") for _, o in results} - {None}
    unlogged = sorted(seen_rids - set(soak_rids))
    bad_lines = [
        line
        for line in log.splitlines()
        if "Traceback" in line or "Unhandled error" in line or "Unhandled Error" in line
    ]
    figures.after["waited, then left: finalized client_gone (by logged status)"] = (
        f"{sum(gone.values())} {dict(gone)} (clients that left: {left})"
    )
    figures.after["left at once with a FIN: logged end/status"] = (
        f"{dict(at_once)} (clients: {at_once_sent})"
    )
    figures.after["left at once with a reset: logged end/status"] = (
        f"{dict(at_once_rst)} (clients: {at_once_rst_sent}; unread: {rst_unread})"
    )
    figures.after["access lines of the soak"] = len(soak_rids)
    figures.after["finalized more than once"] = len(twice)
    figures.after["traceback/unhandled lines"] = len(bad_lines)
    print("\n" + figures.text())

    assert gw.process.running, fail("the gateway died")
    assert figures.sent == figures.planned, fail(f"the soak did not finish in {SOAK_BUDGET} s")
    assert figures.hung == 0, fail("clients waited past the deadline for an answer")
    assert not figures.wrong, fail("clients that stayed got answers the contract forbids")
    assert fault.in_progress == 0, fail("upstream exchanges still in progress")
    for name, value in gauges.items():
        assert value in (None, 0), fail(f"{name} is {value} after the soak")
    assert model_problem is None, fail(f"model concurrency after the soak: {model_problem}")
    assert key_problem is None, fail(f"key concurrency after the soak: {key_problem}")
    assert leaked_fds() <= FD_MARGIN, fail("the gateway kept file descriptors")
    assert 0 <= rst_unread <= RST_UNREAD_SHARE * at_once_rst_sent, fail(
        "reset at-once clients: more access lines than clients, or too many never read"
    )
    assert len(soak_rids) == figures.sent - rst_unread, fail("not one access-log line per request")
    assert not not_once, fail(f"requests logged other than once: {not_once[:5]}")
    assert not unlogged, fail(f"answered requests with no access line: {unlogged[:5]}")
    assert not no_final, fail(f"requests never finalized: {no_final[:5]}")
    assert not twice, fail(f"requests finalized more than once: {twice[:5]}")
    # every client that left was waiting on a stalled or trickling upstream, so
    # the gateway must have seen each one go (and no client that stayed)
    assert sum(gone.values()) == left, fail("requests finalized as client_gone != clients gone")
    assert not gone_5xx, fail(f"clients that left were logged as 5xx: {gone_5xx}")
    assert sum(at_once.values()) == at_once_sent, fail("not one access line per FIN at-once client")
    assert not at_once_bad, fail(f"clients that left at once were logged as {at_once_bad}")
    assert not bad_lines, fail("the gateway logged:\n" + "\n".join(bad_lines[:10]))


async def _zero_gauges(gw: Gateway) -> dict[str, float | None] | None:
    """The held/in-flight gauges when all read 0 (or are absent), else None (poll again)."""
    gauges = await held_gauges(gw)
    return gauges if all(v in (None, 0) for v in gauges.values()) else None
