"""``server.workers: N`` / ``--workers N``, black-box: a real supervisor, real
worker processes, real sockets.

Which worker served a request is read from the access log: every line
carries ``rid=`` (the ``x-request-id`` the client got) and ``worker=<n>``.
Keep-alive connections stay with the worker that accepted them, so a test
pins one connection to each worker (:func:`pinned`) and then talks to the
worker it wants. Nothing sleeps to wait for something: every wait polls a
condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SESSION_LOGS, Gateway, secret
from tests.support.gateway import (
    GatewayProcess,
    free_port,
    http,
    is_listening,
    write_config,
)

CHAT = "/v1/chat/completions"
SERVING = re.compile(r"worker (\d+) \(pid (\d+)\) serving")


# -- helpers ---------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy (another
    process's state cannot notify us), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def serving(gw: Gateway) -> dict[int, int]:
    """worker id -> pid, of the latest "serving" line of each worker."""
    return {int(w): int(p) for w, p in SERVING.findall(gw.process.stdout)}


def start(
    directory: Path,
    workers: int = 2,
    mode: str = "console",
    by_flag: bool = True,
    extra: dict | None = None,
) -> Gateway:
    """A gateway of ``workers`` workers (``--workers`` or ``server.workers``)
    with the demo model and key, once every worker serves."""
    proxy_port, admin_port = free_port(), free_port()
    merged: dict[str, Any] = {"deployment": {"store": {"seed_demo": True}}}
    if not by_flag:
        merged["server"] = {"workers": workers}
    for key, value in (extra or {}).items():
        merged.setdefault(key, {}).update(value)
    config = write_config(directory, proxy_port, admin_port, extra=merged)
    args = ["--workers", str(workers)] if by_flag else []
    process = GatewayProcess(config, mode=mode, extra_args=args).start()  # type: ignore[arg-type]
    SESSION_LOGS.append(process)
    process.wait_ready([proxy_port, admin_port], timeout=20)
    gw = Gateway(process, proxy_port, admin_port, config)
    wait_for(lambda: len(serving(gw)) == workers, 20, f"{workers} workers serving")
    return gw


def chat_on(
    conn: HTTPConnection, key: str, model: str = "demo", path: str = CHAT, doc: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = doc or {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    payload = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


def worker_of(gw: Gateway, rid: str) -> int:
    """The worker that served request ``rid``, from its access-log line."""
    pattern = re.compile(rf"access rid={re.escape(rid)} .* worker=(\d+)")
    found = wait_for(lambda: pattern.search(gw.process.stdout), 5, f"access line of {rid}")
    return int(found.group(1))


def pinned(gw: Gateway, workers: int = 2) -> dict[int, HTTPConnection]:
    """One keep-alive proxy connection per worker: worker id -> connection."""
    conns: dict[int, HTTPConnection] = {}
    deadline = time.monotonic() + 20
    while len(conns) < workers:
        assert time.monotonic() < deadline, f"connections reached only workers {sorted(conns)}"
        conn = HTTPConnection("127.0.0.1", gw.proxy_port, timeout=10)
        status, headers, body = chat_on(conn, "sk-demo-key")
        assert status == 200, body
        worker = worker_of(gw, headers["x-request-id"])
        if worker in conns:
            conn.close()
        else:
            conns[worker] = conn
    return conns


def admin(gw: Gateway, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
    return gw.admin_call(method, path, doc)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def steady_window(margin: float = 3.0) -> None:
    """Step past the last seconds of a minute, so a test's requests share
    one rpm window (a wall-clock edge: there is nothing to await)."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class HeldUpstream:
    """An OpenAI-compatible upstream in a thread that holds each answer
    until :meth:`release` (for requests that must stay in flight)."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.go = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.arrived.release()
                upstream.go.wait(15)
                body = json.dumps(
                    {
                        "id": "chatcmpl-held",
                        "object": "chat.completion",
                        "created": 1,
                        "model": "held",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def release(self) -> None:
        self.go.set()

    def close(self) -> None:
        self.go.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gateway = start(tmp_path_factory.mktemp("workers"))
    yield gateway
    gateway.process.stop()


@pytest.fixture
def conns(gw):
    connections = pinned(gw)
    yield connections
    for conn in connections.values():
        conn.close()


def new_key(gw: Gateway, allowed: list[str], rate_limit: dict | None = None) -> tuple[str, str]:
    key = secret()
    doc: dict[str, Any] = {"key": key, "allowed_models": allowed}
    if rate_limit is not None:
        doc["rate_limit"] = rate_limit
    status, body = admin(gw, "POST", "/aisix/admin/apikeys", doc)
    assert status == 201, body
    return key, body["key"].split("/")[-1]


def seen_by_all(gw: Gateway, conns: dict[int, HTTPConnection], key: str, model: str) -> None:
    """Every worker answers ``key`` with something else than 401."""
    for conn in conns.values():
        wait_for(lambda c=conn: chat_on(c, key, model)[0] != 401, 5, "the key on every worker")


# -- (a) config -------------------------------------------------------------------------


def test_admin_write_is_seen_by_every_worker_within_100ms(gw, conns):
    assert_writes_seen_by_every_worker_within_100ms(gw, conns)


def test_admin_write_through_etcd_is_seen_by_every_worker_within_100ms(etcd, tmp_path):
    # each worker watches etcd itself; the write goes through either worker's admin
    prefix = f"/gw-wk-{uuid.uuid4().hex[:8]}"
    gw = start(tmp_path, extra={"deployment": {"etcd": {"host": [etcd.url], "prefix": prefix}}})
    conns: dict[int, HTTPConnection] = {}
    try:
        status, body = admin(
            gw,
            "POST",
            "/aisix/admin/models",
            {"name": "demo", "model": "mock/echo", "provider_config": {}},
        )
        assert status == 201, body
        status, body = admin(
            gw, "POST", "/aisix/admin/apikeys", {"key": "sk-demo-key", "allowed_models": ["demo"]}
        )
        assert status == 201, body
        assert etcd.range_prefix(prefix + "/apikeys/")  # it is etcd that holds them
        conns = pinned(gw)
        assert_writes_seen_by_every_worker_within_100ms(gw, conns)
    finally:
        for conn in conns.values():
            conn.close()
        gw.process.stop()


def assert_writes_seen_by_every_worker_within_100ms(
    gw: Gateway, conns: dict[int, HTTPConnection]
) -> None:
    for _ in range(4):  # fresh admin connections: the writes land on either worker
        key = secret()
        status, body = admin(
            gw, "POST", "/aisix/admin/apikeys", {"key": key, "allowed_models": ["demo"]}
        )
        written = time.monotonic()
        assert status == 201, body
        seen: dict[int, float] = {}
        while len(seen) < len(conns):
            for worker, conn in conns.items():
                if worker not in seen and chat_on(conn, key)[0] == 200:
                    seen[worker] = time.monotonic() - written
            assert time.monotonic() - written < 2, f"workers saw the key after {seen}"
        assert max(seen.values()) < 0.1, seen


def test_parallel_admin_writes_through_both_workers_lose_nothing(gw):
    keys = [secret() for _ in range(16)]
    results: list[int] = []

    def create(key: str) -> None:
        status, _ = admin(gw, "POST", "/aisix/admin/apikeys", {"key": key, "allowed_models": []})
        results.append(status)

    threads = [threading.Thread(target=create, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == [201] * len(keys)
    store = json.loads((gw.config_path.parent / "twisted-gw-store.json").read_text())
    stored = {e["value"]["key"] for e in store["entries"].values() if "key" in e["value"]}
    assert set(keys) <= stored  # every write made it to the file
    revisions = [e["modified_index"] for e in store["entries"].values()]
    assert len(set(revisions)) == len(revisions)  # one revision per write, none reused

    def listed() -> bool:  # and each worker lists them all, soon (its watch reloaded)
        status, body = admin(gw, "GET", "/aisix/admin/apikeys")
        return status == 200 and set(keys) <= {item["value"]["key"] for item in body["list"]}

    for _ in range(4):
        wait_for(listed, 1, "every key listed")


def test_a_duplicate_key_is_refused_whichever_worker_writes_it(gw):
    key = secret()
    doc = {"key": key, "allowed_models": []}
    statuses = [
        admin(gw, "PUT", f"/aisix/admin/apikeys/dup-{i}-{uuid.uuid4().hex[:6]}", doc)[0]
        for i in range(6)
    ]
    assert statuses[0] == 201 and all(s == 400 for s in statuses[1:]), statuses


# -- (b) rate limits ----------------------------------------------------------------------


def test_rpm_is_exact_across_workers_with_the_memory_limiter(gw, conns):
    steady_window()
    key, _ = new_key(gw, ["demo"], {"rpm": 5})
    # each worker's first answer that is not a 401 (it knows the key) is a 200 spent
    for conn in conns.values():
        wait_for(lambda c=conn: chat_on(c, key)[0] == 200, 5, "the key on every worker")
    results = []
    for i in range(10):  # alternating workers
        worker = sorted(conns)[i % 2]
        status, headers, _ = chat_on(conns[worker], key)
        results.append((worker, status, headers.get("x-ratelimit-remaining-requests")))
    statuses = [s for _, s, _ in results]
    assert statuses == [200] * 3 + [429] * 7, results  # 5 in all, not 5 per worker
    assert [r for _, _, r in results[:3]] == ["2", "1", "0"], results


def test_concurrency_is_exact_across_workers_and_freed_by_the_holder(gw, conns):
    upstream = HeldUpstream()
    try:
        name = f"held-{uuid.uuid4().hex[:8]}"
        status, body = admin(
            gw,
            "POST",
            "/aisix/admin/models",
            {
                "name": name,
                "model": "openai/held",
                "provider_config": {"api_key": secret("sk-up"), "api_base": upstream.base_url},
            },
        )
        assert status == 201, body
        key, _ = new_key(gw, [name], {"concurrency": 1})
        one, two = sorted(conns)
        # both workers know the key and the model (each check holds and frees the slot)
        upstream.release()
        seen_by_all(gw, conns, key, name)
        upstream.go.clear()
        while upstream.arrived.acquire(blocking=False):
            pass
        held: list[int] = []
        holder = threading.Thread(target=lambda: held.append(chat_on(conns[one], key, name)[0]))
        holder.start()
        assert upstream.arrived.acquire(timeout=10)
        status, _, body = chat_on(conns[two], key, name)
        assert status == 429 and b"concurrency_limit_exceeded" in body, body
        upstream.release()
        holder.join(10)
        assert held == [200]
        status, _, body = chat_on(conns[two], key, name)
        assert status == 200, body
    finally:
        upstream.close()


# -- (c) metrics ------------------------------------------------------------------------------


def test_metrics_sum_the_requests_of_every_worker(gw, conns):
    name = f"m-{uuid.uuid4().hex[:8]}"
    status, body = admin(
        gw, "POST", "/aisix/admin/models", {"name": name, "model": "mock/x", "provider_config": {}}
    )
    assert status == 201, body
    key, _ = new_key(gw, [name])
    seen_by_all(gw, conns, key, name)  # one request on each worker
    served = len(conns)
    for i in range(6):
        status, _, body = chat_on(conns[sorted(conns)[i % 2]], key, name)
        assert status == 200
        per_request = json.loads(body)["usage"]["total_tokens"]
        served += 1
    for _ in range(4):  # whichever worker serves the scrape
        status, _, page = http("GET", gw.admin + "/metrics")
        assert status == 200
        text = page.decode()
        total = metric(text, "aisix_token_count_total", model=name, type="total")
        assert total == served * per_request, total
    assert "twisted_gw_requests_in_flight" in text
    wait_for(
        lambda: (
            metric(
                http("GET", gw.admin + "/metrics")[2].decode(), "twisted_gw_concurrency_slots_held"
            )
            == 0
        ),
        5,
        "no slot held",
    )


# -- the Responses history -------------------------------------------------------------------------


def test_a_response_continues_on_the_other_worker(gw, conns):
    one, two = sorted(conns)
    status, _, body = chat_on(
        conns[one], "sk-demo-key", path="/v1/responses", doc={"model": "demo", "input": "hello"}
    )
    assert status == 200, body
    first = json.loads(body)["id"]
    status, _, body = chat_on(
        conns[two],
        "sk-demo-key",
        path="/v1/responses",
        doc={"model": "demo", "input": "and then?", "previous_response_id": first},
    )
    assert status == 200, body
    assert json.loads(body)["previous_response_id"] == first


# -- (d) a worker that dies --------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_gateway_keeps_serving(tmp_path):
    gw = start(tmp_path)
    try:
        pids = serving(gw)
        victim, pid = min(pids.items())
        os.kill(pid, signal.SIGKILL)
        for _ in range(10):  # fresh connections: the other worker answers
            status, _, body = http(
                "POST",
                gw.proxy + CHAT,
                headers={"Authorization": "Bearer sk-demo-key"},
                json_body={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert status == 200, body
        line = wait_for(
            lambda: re.search(
                rf"worker {victim} \(pid {pid}\) killed by signal 9 \(SIGKILL\); restarting it",
                gw.process.stdout,
            ),
            10,
            "the restart line",
        )
        assert line
        wait_for(lambda: serving(gw).get(victim, pid) != pid, 20, "the replacement serving")
        assert len(pinned(gw)) == 2  # both serve again
    finally:
        assert gw.process.stop() == 0


def test_a_killed_worker_gives_back_its_concurrency_slots(tmp_path):
    gw = start(tmp_path)
    upstream = HeldUpstream()
    try:
        conns = pinned(gw)
        name = f"held-{uuid.uuid4().hex[:8]}"
        status, body = admin(
            gw,
            "POST",
            "/aisix/admin/models",
            {
                "name": name,
                "model": "openai/held",
                "provider_config": {"api_key": secret("sk-up"), "api_base": upstream.base_url},
            },
        )
        assert status == 201, body
        key, _ = new_key(gw, [name], {"concurrency": 1})
        upstream.release()
        seen_by_all(gw, conns, key, name)
        upstream.go.clear()
        while upstream.arrived.acquire(blocking=False):
            pass
        one, two = sorted(conns)
        conns[one].sock.settimeout(10)
        holder = threading.Thread(target=lambda: _ignore(lambda: chat_on(conns[one], key, name)))
        holder.start()
        assert upstream.arrived.acquire(timeout=10)
        assert chat_on(conns[two], key, name)[0] == 429
        os.kill(serving(gw)[one], signal.SIGKILL)
        holder.join(10)
        upstream.release()
        wait_for(lambda: chat_on(conns[two], key, name)[0] == 200, 5, "the slot given back")
    finally:
        upstream.close()
        gw.process.stop()


def _ignore(call: Callable[[], Any]) -> None:
    try:
        call()
    except OSError:
        pass


# -- (e) stopping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["console", "twistd"])
def test_sigterm_stops_every_worker_then_the_supervisor_as_one_process(tmp_path, mode):
    # twistd reads server.workers (its plugin file is installed from main);
    # the console script takes --workers
    gw = start(tmp_path, mode=mode, by_flag=mode == "console")
    pids = list(serving(gw).values())
    assert len(pids) == 2 and all(alive(p) for p in pids)
    assert gw.process.stop(timeout=40) == 0  # under twistd too, as one process
    assert not any(alive(p) for p in pids)
    assert not is_listening(gw.proxy_port) and not is_listening(gw.admin_port)
    out = gw.process.stdout
    assert out.count("exited with code 0") == 2, out


# -- start-up ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["--workers", "0"], {}, "--workers must be an integer from 1 to 256, got 0"),
        (["--workers", "two"], {}, "--workers must be an integer from 1 to 256, got a string"),
        ([], {"workers": 257}, "server.workers must be an integer from 1 to 256, got 257"),
        ([], {"workers": "2"}, "server.workers must be an integer from 1 to 256, got a string"),
    ],
)
def test_a_bad_worker_count_fails_start_up(tmp_path, args, extra, message):
    config = write_config(tmp_path, free_port(), free_port(), extra={"server": extra})
    code, out, _, _ = GatewayProcess(config, mode="console", extra_args=args).run_to_exit()
    assert code == 1 and f"twisted-gw: error: {message}" in out, out


def test_a_taken_port_fails_start_up_with_workers_as_without(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin_port = free_port()
        config = write_config(tmp_path, port, admin_port)
        process = GatewayProcess(config, mode="console", extra_args=["--workers", "2"])
        code, out, _, elapsed = process.run_to_exit()
    assert code == 1 and elapsed < 5
    assert "Address already in use" in out and "worker 1" not in out, out
    assert not is_listening(admin_port)


# -- with Redis ------------------------------------------------------------------------------------


def test_rpm_is_exact_across_workers_with_redis(tmp_path):
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from tests.support.redis_server import RedisServer

    redis = RedisServer().start()
    gw = None
    try:
        prefix = f"wk-{uuid.uuid4().hex[:8]}"
        gw = start(tmp_path, extra={"deployment": {"redis": {"url": redis.url, "prefix": prefix}}})
        conns = pinned(gw)
        steady_window()
        key, _ = new_key(gw, ["demo"], {"rpm": 5, "concurrency": 3})
        for conn in conns.values():
            wait_for(lambda c=conn: chat_on(c, key)[0] == 200, 5, "the key on every worker")
        statuses = [chat_on(conns[sorted(conns)[i % 2]], key)[0] for i in range(8)]
        assert statuses == [200] * 3 + [429] * 5, statuses
        # Redis holds the slots: no in-memory gauge for them
        text = http("GET", gw.admin + "/metrics")[2].decode()
        assert "twisted_gw_concurrency_slots_held" not in text
    finally:
        if gw is not None:
            gw.process.stop()
        redis.stop()


# -- logs under twistd ---------------------------------------------------------------------------


def test_under_twistd_logfile_the_workers_lines_go_to_the_log(tmp_path):
    proxy_port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path,
        proxy_port,
        admin_port,
        extra={"deployment": {"store": {"seed_demo": True}}, "server": {"workers": 2}},
    )
    logfile = tmp_path / "gw.log"

    class Logged(GatewayProcess):
        @property
        def argv(self) -> list[str]:
            twistd = "from twisted.scripts.twistd import run; run()"
            return [
                *(sys.executable, "-c", twistd, "-n", "--pidfile=", f"--logfile={logfile}"),
                *("twisted-gw", "--config", str(config)),
            ]

    process = Logged(config).start()
    SESSION_LOGS.append(process)
    try:
        process.wait_ready([proxy_port, admin_port], timeout=20)
        log = lambda: logfile.read_text() if logfile.exists() else ""
        wait_for(lambda: len(SERVING.findall(log())) == 2, 20, "2 workers serving, in the log")
        status, headers, _ = http(
            "POST",
            f"http://127.0.0.1:{proxy_port}{CHAT}",
            headers={"Authorization": "Bearer sk-demo-key"},
            json_body={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 200
        rid = headers["x-request-id"]
        wait_for(lambda: re.search(rf"access rid={rid} .* worker=[12]", log()), 5, "the line")
        assert "access rid=" not in process.stdout  # twistd logs to its file only
    finally:
        process.stop()


def test_workers_that_cannot_start_fail_start_up_as_one_process(tmp_path):
    # etcd never answers: each worker gives up after its start-up retries; the
    # gateway exits 1 with the store's reason as its last line, as one process does
    config = write_config(
        tmp_path,
        free_port(),
        free_port(),
        extra={
            "deployment": {
                "etcd": {"host": [f"http://127.0.0.1:{free_port()}"], "startup_retries": 0}
            },
            "server": {"workers": 2},
        },
    )
    code, out, _, _ = GatewayProcess(config, mode="console").run_to_exit(timeout=20)
    assert code == 1, out
    assert out.rstrip().splitlines()[-1] == (
        "twisted-gw: error: failed to connect to etcd and retry exhausted"
    ), out


def test_tls_listeners_are_served_by_every_worker(tmp_path):
    from tests.support.gateway import make_self_signed_cert

    cert, key = make_self_signed_cert(tmp_path)
    tls = {"tls": {"enabled": True, "cert_file": str(cert), "key_file": str(key)}}
    gw = start(tmp_path, extra={"server": {"proxy": tls, "admin": tls}})
    try:
        workers = set()
        deadline = time.monotonic() + 20
        while len(workers) < 2:  # fresh TLS connections until both workers answered
            assert time.monotonic() < deadline, workers
            status, headers, body = http(
                "POST",
                f"https://127.0.0.1:{gw.proxy_port}{CHAT}",
                headers={"Authorization": "Bearer sk-demo-key"},
                json_body={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                cafile=cert,
            )
            assert status == 200, body
            workers.add(worker_of(gw, headers["x-request-id"]))
        status, _, _ = http("GET", f"https://127.0.0.1:{gw.admin_port}/metrics", cafile=cert)
        assert status == 200
    finally:
        gw.process.stop()


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path):
    gw = start(tmp_path)
    pids = list(serving(gw).values())
    environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    (socket_path,) = [
        v.split(b"=", 1)[1] for v in environ if v.startswith(b"TWISTED_GW_WORKER_SHARED=")
    ]
    os.kill(gw.process.pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in pids), 20, "the workers gone")
    assert not is_listening(gw.proxy_port)
    # the supervisor's temporary directory (its socket, the metrics) does not outlive them
    assert not os.path.exists(os.path.dirname(socket_path))
    gw.process.stop()


def test_sigterm_lets_a_request_in_flight_on_a_worker_finish(tmp_path):
    gw = start(tmp_path)
    upstream = HeldUpstream()
    try:
        name = f"held-{uuid.uuid4().hex[:8]}"
        model = {
            "name": name,
            "model": "openai/held",
            "provider_config": {"api_key": secret("sk-up"), "api_base": upstream.base_url},
        }
        assert admin(gw, "POST", "/aisix/admin/models", model)[0] == 201
        key, _ = new_key(gw, [name])
        conn = HTTPConnection("127.0.0.1", gw.proxy_port, timeout=20)
        upstream.release()
        wait_for(lambda: chat_on(conn, key, name)[0] == 200, 5, "the model and key served")
        upstream.go.clear()
        while upstream.arrived.acquire(blocking=False):
            pass
        answer: list[int] = []
        holder = threading.Thread(target=lambda: answer.append(chat_on(conn, key, name)[0]))
        holder.start()
        assert upstream.arrived.acquire(timeout=10)
        gw.process._require_started().send_signal(signal.SIGTERM)
        wait_for(lambda: not is_listening(gw.proxy_port), 10, "the listeners closed")
        upstream.release()
        holder.join(10)
        assert answer == [200]  # finished within the grace, on its worker
        assert gw.process.stop(timeout=30) == 0
    finally:
        upstream.close()
        gw.process.stop()


def test_connections_opened_at_once_are_spread_over_the_workers(gw):
    # each worker has its own socket (SO_REUSEPORT): 16 connections opened
    # together all land on one worker of two with probability 2**-15
    conns = [HTTPConnection("127.0.0.1", gw.proxy_port, timeout=10) for _ in range(16)]
    try:
        for conn in conns:
            conn.connect()
        workers = []
        for conn in conns:
            status, headers, _ = chat_on(conn, "sk-demo-key")
            assert status == 200
            workers.append(worker_of(gw, headers["x-request-id"]))
        assert set(workers) == {1, 2}, workers
    finally:
        for conn in conns:
            conn.close()
