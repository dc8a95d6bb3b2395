"""CONTRACT 1: launching the gateway and failing fast.

Each start-up failure must print its message on stdout, exit 1 within one
second of process start (Python start-up and imports included) and leave
nothing listening. Both launchers are checked: ``twistd -n twisted-gw`` and
the ``twisted-gw`` console script.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import SESSION_LOGS, start_gateway
from tests.support.gateway import (
    GatewayProcess,
    free_port,
    http,
    is_listening,
    make_self_signed_cert,
    write_config,
)

MODES = ["twistd", "console"]


def run_failing(tmp_path, mode, proxy_port=None, admin_port=None, extra=None, fmt="yaml"):
    proxy_port = proxy_port or free_port()
    admin_port = admin_port or free_port()
    config = write_config(tmp_path, proxy_port, admin_port, extra=extra, fmt=fmt)
    process = GatewayProcess(config, mode=mode)
    SESSION_LOGS.append(process)
    code, out, _err, elapsed = process.run_to_exit(timeout=5)
    return code, out, elapsed, (proxy_port, admin_port)


def assert_failed_fast(code, out, elapsed, ports, message):
    assert code == 1, out
    assert message in out, out
    assert "Traceback" not in out
    assert elapsed < 1.0, f"took {elapsed:.3f}s"
    for port in ports:
        assert not is_listening(port), f"port {port} still listening"


@pytest.mark.parametrize("mode", MODES)
def test_bad_listen_address_exits_1_fast(tmp_path, mode):
    code, out, elapsed, ports = run_failing(
        tmp_path, mode, extra={"server": {"proxy": {"listen": "invalid-listen-addr"}}}
    )
    assert_failed_fast(code, out, elapsed, ports[1:], "invalid-listen-addr")


@pytest.mark.parametrize("mode", MODES)
def test_port_in_use_exits_1_and_releases_the_other_port(tmp_path, mode):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        admin_port = taken.getsockname()[1]
        proxy_port = free_port()
        code, out, elapsed, _ = run_failing(tmp_path, mode, proxy_port, admin_port)
        assert_failed_fast(code, out, elapsed, [proxy_port], "Address already in use")
    finally:
        taken.close()


TLS_CASES = [
    ({"enabled": True}, "Proxy TLS cert_file is required when TLS is enabled"),
    ({"enabled": True, "cert_file": "CERT"}, "Proxy TLS key_file is required when TLS is enabled"),
    (
        {"enabled": True, "cert_file": "/nonexistent/c.pem", "key_file": "KEY"},
        "Proxy TLS cert_file '/nonexistent/c.pem' does not exist",
    ),
    (
        {"enabled": True, "cert_file": "CERT", "key_file": "/nonexistent/k.pem"},
        "Proxy TLS key_file '/nonexistent/k.pem' does not exist",
    ),
    ({"enabled": True, "cert_file": "KEY", "key_file": "KEY"}, "Expecting: CERTIFICATE"),
]


@pytest.mark.parametrize("listener", ["proxy", "admin"])
@pytest.mark.parametrize("tls, message", TLS_CASES)
def test_tls_file_errors(tmp_path, tls, message, listener):
    cert, key = make_self_signed_cert(tmp_path)
    tls = {k: str(cert) if v == "CERT" else str(key) if v == "KEY" else v for k, v in tls.items()}
    if listener == "admin":
        message = message.replace("Proxy", "Admin")
    code, out, elapsed, ports = run_failing(
        tmp_path, "twistd", extra={"server": {listener: {"tls": tls}}}
    )
    assert_failed_fast(code, out, elapsed, ports, message)


def test_corrupt_store_file_is_a_clear_error(tmp_path):
    (tmp_path / "twisted-gw-store.json").write_text("{broken")
    code, out, elapsed, ports = run_failing(tmp_path, "console")
    assert_failed_fast(code, out, elapsed, ports, str(tmp_path / "twisted-gw-store.json"))


# -- CONTRACT 5.5: config mistakes are reported ------------------------------

PLAIN_STRING_ADMIN_KEY = "deployment.admin.admin_key must be a list of {key: ...}, got a string"


@pytest.mark.parametrize("mode", MODES)
def test_plain_string_admin_key_fails_startup(tmp_path, mode):
    code, out, elapsed, ports = run_failing(
        tmp_path, mode, extra={"deployment": {"admin": {"admin_key": "my-admin"}}}
    )
    assert_failed_fast(code, out, elapsed, ports, f"twisted-gw: error: {PLAIN_STRING_ADMIN_KEY}")
    assert "my-admin" not in out


def start_with(tmp_path, mode="twistd", admin_keys=(), extra=None):
    proxy_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, proxy_port, admin_port, admin_keys=admin_keys, extra=extra)
    process = GatewayProcess(config, mode=mode).start()
    SESSION_LOGS.append(process)
    process.wait_ready([proxy_port, admin_port])
    return process, f"http://127.0.0.1:{admin_port}"


def admin_status(admin, key):
    status, _, body = http("GET", admin + "/aisix/admin/models", {"Authorization": f"Bearer {key}"})
    return status, body


@pytest.mark.parametrize("mode", MODES)
def test_misspelt_admin_keys_starts_with_one_warning_line(tmp_path, mode):
    process, admin = start_with(
        tmp_path, mode, extra={"deployment": {"admin": {"admin_keys": [{"key": "typo-key"}]}}}
    )
    try:
        warning = "unknown config key 'deployment.admin.admin_keys' (did you mean 'admin_key'?)"
        lines = [line for line in process.stdout.splitlines() if warning in line]
        assert lines == [f"twisted-gw: warning: {warning}"], process.output
        assert "typo-key" not in process.stdout
        # the misspelt key configures nothing: no admin key at all
        assert admin_status(admin, "typo-key") == (401, b'{"error_msg": "Missing API key"}')
    finally:
        # SIGTERM is a clean shutdown, exit 0 under twistd too (CONTRACT 5.2): the
        # gateway handles the signal, so twistd does not re-raise it at its end
        assert process.stop() == 0


def test_admin_key_list_accepts_the_whole_key_only(tmp_path):
    process, admin = start_with(tmp_path, admin_keys=("my-admin",))
    try:
        for prefix in ("m", "my-", "my-admi", "my-admin-"):
            assert admin_status(admin, prefix)[0] == 401, prefix
        assert admin_status(admin, "my-admin")[0] == 200
    finally:
        process.stop()


@pytest.mark.parametrize("listener", ["proxy", "admin"])
def test_tls_listener_serves_https_with_a_self_signed_cert(tmp_path, listener):
    cert, key = make_self_signed_cert(tmp_path)
    tls = {"enabled": True, "cert_file": str(cert), "key_file": str(key)}
    gw = start_gateway(tmp_path, extra={"server": {listener: {"tls": tls}}})
    try:
        port = gw.proxy_port if listener == "proxy" else gw.admin_port
        path = "/v1/models" if listener == "proxy" else "/aisix/admin/models"
        status, _, body = http(
            "GET", f"https://127.0.0.1:{port}{path}", cafile=cert, verify_tls=True
        )
        assert status == 401, body  # TLS handshake done, then the contract's auth answer
        other = gw.admin_port if listener == "proxy" else gw.proxy_port
        status, _, _ = http("GET", f"http://127.0.0.1:{other}/nope")
        assert status in (401, 404)  # the other listener still speaks plain HTTP
    finally:
        gw.process.stop()


def test_json_config_and_console_script_flags(tmp_path):
    gw = start_gateway(tmp_path, mode="console", fmt="json")
    try:
        status, _, _ = http("GET", gw.proxy + "/v1/models", headers={"Authorization": "Bearer x"})
        assert status == 401
    finally:
        assert gw.process.stop() == 0  # SIGTERM is a clean shutdown
    out = subprocess.run(
        [sys.executable, "-m", "twisted_gw", "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0 and out.stdout.startswith("twisted-gw ")


def test_config_yaml_in_working_directory_is_used_without_flag(tmp_path):
    proxy_port, admin_port = free_port(), free_port()
    write_config(tmp_path, proxy_port, admin_port)  # writes tmp_path/config.yaml
    process = GatewayProcess(None, mode="console", cwd=tmp_path).start()
    SESSION_LOGS.append(process)
    try:
        process.wait_ready([proxy_port, admin_port])
    finally:
        process.stop()


def test_twistd_lists_the_plugin():
    out = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "twisted-gw" in out.stdout
