"""Shared fixtures for the black-box tests: the real gateway as a subprocess,
a real mock upstream on a socket, and helpers to set models and keys up through
the Admin API like an operator would."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.support.gateway import (
    DEFAULT_ADMIN_KEY,
    GatewayProcess,
    free_port,
    http,
    treq_json,
    write_config,
)
from tests.support.mock_upstream import MockUpstream

#: every gateway log of this session, and every secret the tests used, so
#: test_secret_free_logs can grep the whole run for them
SESSION_LOGS: list[GatewayProcess] = []
SESSION_SECRETS: set[str] = {DEFAULT_ADMIN_KEY}


def secret(prefix: str = "sk") -> str:
    """A fresh unguessable key, remembered for the secret-free-log check."""
    value = f"{prefix}-{uuid.uuid4().hex}"
    SESSION_SECRETS.add(value)
    return value


@dataclass
class Gateway:
    """A running gateway and how to reach it."""

    process: GatewayProcess
    proxy_port: int
    admin_port: int
    config_path: Path
    admin_key: str = DEFAULT_ADMIN_KEY
    created: list[str] = field(default_factory=list)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"}

    # blocking helpers: for use in plain tests or in fixtures before the reactor serves
    def admin_call(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        status, _, body = http(
            method,
            self.admin + path,
            headers=self.admin_headers(),
            body=None if doc is None else json.dumps(doc).encode(),
        )
        return status, (json.loads(body) if body else None)

    # reactor helpers: for pytest-twisted tests (the mock upstream lives in this reactor)
    async def aadmin(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        status, _, body = await treq_json(
            method, self.admin + path, headers=self.admin_headers(), json_body=doc
        )
        return status, (json.loads(body) if body else None)

    async def add_model(self, name: str, model: str, provider_config: dict, **extra: Any) -> str:
        doc = {"name": name, "model": model, "provider_config": provider_config, **extra}
        status, body = await self.aadmin("POST", "/aisix/admin/models", doc)
        assert status == 201, body
        return body["key"].split("/")[-1]

    async def add_key(self, allowed: list[str], key: str | None = None) -> str:
        key = key or secret()
        doc = {"key": key, "allowed_models": allowed}
        status, body = await self.aadmin("POST", "/aisix/admin/apikeys", doc)
        assert status == 201, body
        return key

    async def add_key_with_id(
        self, allowed: list[str], rate_limit: dict | None = None
    ) -> tuple[str, str]:
        """A fresh client key through the Admin API: (key value, store id)."""
        key = secret()
        doc: dict[str, Any] = {"key": key, "allowed_models": allowed}
        if rate_limit is not None:
            doc["rate_limit"] = rate_limit
        status, body = await self.aadmin("POST", "/aisix/admin/apikeys", doc)
        assert status == 201, body
        return key, body["key"].split("/")[-1]

    async def chat(self, key: str | None, doc: Any, path: str = "/v1/chat/completions", **kw: Any):
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await treq_json("POST", self.proxy + path, headers=headers, json_body=doc, **kw)


def start_gateway(
    directory: Path, mode: str = "twistd", extra: dict | None = None, fmt: str = "yaml"
) -> Gateway:
    """Start a gateway on free ports and wait until both listeners accept."""
    proxy_port, admin_port = free_port(), free_port()
    config = write_config(directory, proxy_port, admin_port, extra=extra, fmt=fmt)
    process = GatewayProcess(config, mode=mode).start()
    SESSION_LOGS.append(process)
    process.wait_ready([proxy_port, admin_port])
    return Gateway(process, proxy_port, admin_port, config)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    """One gateway per test module (start-up costs ~0.5 s)."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.process.stop()


@pytest.fixture(scope="module")
def upstream():
    """A real OpenAI-compatible mock upstream on 127.0.0.1 in this reactor."""
    mock = MockUpstream()
    mock.start()
    yield mock
    pytest_twisted.blockon(mock.stop())


@pytest.fixture
def fresh_upstream(upstream: MockUpstream) -> MockUpstream:
    """The module's upstream with answers and recorded requests forgotten."""
    upstream.reset()
    return upstream


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory):
    """A private etcd (tests/support/etcd.py) for the session, started by the
    first test that asks for it; tests that kill etcd start their own."""
    from tests.support.etcd import EtcdServer

    server = EtcdServer(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server (tests/support/postgres.py) for the session;
    tests that stop it start it again. Skipped only where PostgreSQL's server
    binaries are missing."""
    from tests.support.postgres import PostgresServer, binaries

    if binaries() is None:
        pytest.skip("needs PostgreSQL's server (initdb, pg_ctl): apt-get install -y postgresql")
    server = PostgresServer().start()
    yield server
    server.destroy()
