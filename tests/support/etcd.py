"""A private etcd for tests, and etcd's own HTTP API to check what is stored.

:class:`EtcdServer` runs the real ``etcd`` binary (Debian's ``etcd-server``,
which the README's test command installs when it is missing) on free ports of
127.0.0.1 with a temporary data dir, waits until it serves, and can be killed
(SIGKILL), restarted on the same data (optionally on another client port, so a
gateway configured with the old port cannot see it), or stopped.

The helpers (:meth:`EtcdServer.put`, :meth:`EtcdServer.get`, ...) talk to
etcd's v3 JSON gateway directly with ``http.client``, independently of the
gateway's own client (``twisted_gw.config.etcd_client``): tests check what
the gateway wrote, and write as "another writer" would, through them. They
block, which is fine in plain tests and brief enough in reactor tests (etcd
answers in about a millisecond); :meth:`EtcdServer.aput` is the reactor
version for the propagation measurement.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path
from typing import Any, Self

from tests.support.gateway import free_port, treq_json

__all__ = ["EtcdServer", "b64", "etcd_binary", "prefix_end"]


def etcd_binary() -> str:
    """The etcd executable, or a clear failure telling how to get one."""
    path = shutil.which("etcd")
    if path is None:
        raise RuntimeError(
            "etcd is not installed: the etcd tests need a real etcd "
            "(apt-get install -y etcd-server; the README's test command does it)"
        )
    return path


def b64(value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: str) -> str:
    """range_end for a prefix of ASCII keys (the last character + 1)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class EtcdServer:
    """One etcd process on 127.0.0.1 with its own data dir (see module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str = "gw-test",
        *,
        tls: tuple[Path, Path] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.directory / "data"
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.tls = tls  # (cert, key): serve clients over https
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # -- lifecycle --

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        """The client URL, as a gateway's ``deployment.etcd.host`` entry."""
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, client_port: int | None = None, timeout: float = 15.0) -> Self:
        """Start (or restart on the same data) and wait until it serves.

        ``client_port`` moves it to another client port for this run."""
        if self.running:
            raise RuntimeError("etcd already running")
        if client_port is not None:
            self.client_port = client_port
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{self.name}={peer}",
            "--initial-cluster-state",
            "new",
            # a single member: elect it fast, so (re)starts take ~0.3 s
            "--heartbeat-interval",
            "20",
            "--election-timeout",
            "200",
        ]
        if self.tls:
            argv += ["--cert-file", str(self.tls[0]), "--key-file", str(self.tls[1])]
        argv += self.extra_args
        self._log = open(self.directory / "etcd.log", "ab")  # noqa: SIM115 - closed in stop/kill
        self._process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Poll /health (another process: nothing to await) until it says true."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"etcd exited at start; see {self.directory / 'etcd.log'}")
            try:
                status, body = self._http("GET", "/health", None, timeout=1.0)
                if status == 200 and json.loads(body).get("health") == "true":
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy within {timeout} s")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (the kernel closes its sockets)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
        self._close_log()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- etcd's own HTTP API (blocking) --

    def _http(
        self, method: str, path: str, body: Any, timeout: float = 5.0, token: str | None = None
    ) -> tuple[int, bytes]:
        if self.tls:
            import ssl

            context = ssl.create_default_context(cafile=str(self.tls[0]))
            connection: HTTPConnection = HTTPSConnection(
                "127.0.0.1", self.client_port, timeout=timeout, context=context
            )
        else:
            connection = HTTPConnection("127.0.0.1", self.client_port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def call(self, path: str, body: dict, token: str | None = None) -> dict:
        """POST to a /v3 endpoint; the JSON answer (asserts 200)."""
        status, payload = self._http("POST", path, body, token=token)
        assert status == 200, (path, status, payload)
        return json.loads(payload)

    def put(self, key: str, value: Any, token: str | None = None) -> int:
        """Store ``value`` (JSON-encoded unless bytes/str) at ``key``; the new revision."""
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        answer = self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)}, token)
        return int(answer["header"]["revision"])

    def get(self, key: str) -> dict | None:
        """``{"value": parsed JSON, "create_revision", "mod_revision"}`` or None."""
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs") or []
        return _decode(kvs[0]) if kvs else None

    def range_prefix(self, prefix: str) -> list[tuple[str, dict]]:
        """Every key under ``prefix`` in key order, as (key, decoded) pairs."""
        body = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
        kvs = self.call("/v3/kv/range", body).get("kvs") or []
        return [(base64.b64decode(kv["key"]).decode(), _decode(kv)) for kv in kvs]

    def delete(self, key: str) -> int:
        answer = self.call("/v3/kv/deleterange", {"key": b64(key)})
        return int(answer["header"]["revision"])

    def revision(self) -> int:
        answer = self.call("/v3/kv/range", {"key": b64("/"), "count_only": True})
        return int(answer["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact history up to ``revision`` (default: the current one)."""
        revision = revision or self.revision()
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def enable_auth(self, password: str) -> None:
        """Create ``root`` with ``password`` and turn auth on."""
        self.call("/v3/auth/user/add", {"name": "root", "password": password})
        self.call("/v3/auth/role/add", {"name": "root"})
        self.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.call("/v3/auth/enable", {})

    def token(self, password: str) -> str:
        return self.call("/v3/auth/authenticate", {"name": "root", "password": password})["token"]

    # -- the same, in the reactor --

    async def aput(self, key: str, value: Any) -> int:
        """:meth:`put` without blocking the reactor (for timing measurements)."""
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        status, _, payload = await treq_json(
            "POST", self.url + "/v3/kv/put", json_body={"key": b64(key), "value": b64(value)}
        )
        assert status == 200, payload
        return int(json.loads(payload)["header"]["revision"])

    async def adelete(self, key: str) -> int:
        status, _, payload = await treq_json(
            "POST", self.url + "/v3/kv/deleterange", json_body={"key": b64(key)}
        )
        assert status == 200, payload
        return int(json.loads(payload)["header"]["revision"])


def _decode(kv: dict) -> dict:
    raw = base64.b64decode(kv.get("value", "")).decode("utf-8")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return {
        "value": value,
        "create_revision": int(kv["create_revision"]),
        "mod_revision": int(kv["mod_revision"]),
    }
