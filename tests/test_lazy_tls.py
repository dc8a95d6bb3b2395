"""pyOpenSSL is loaded when the gateway first uses TLS, not at start-up
(twisted_gw._lazytls): a plain-HTTP gateway serves without it, and the same
process then calls an https upstream, loading it there and then.

Black-box, on the real process: what is loaded is read from the process's
memory map (cryptography's native module, which pyOpenSSL needs), after
requests went through it.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SESSION_LOGS, Gateway, secret
from tests.support.gateway import (
    GatewayProcess,
    free_port,
    http,
    make_self_signed_cert,
    write_config,
)

ANSWER = {
    "id": "chatcmpl-lazy",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class _Upstream(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(context: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _tls_loaded(pid: int) -> bool:
    """Whether cryptography's native module (under pyOpenSSL) is mapped in ``pid``."""
    return "/cryptography/" in Path(f"/proc/{pid}/maps").read_text()


def _chat(gw: Gateway, key: str, model: str) -> tuple[int, bytes]:
    doc = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    status, _, body = http(
        "POST", gw.proxy + "/v1/chat/completions", headers=headers, body=json.dumps(doc).encode()
    )
    return status, body


@pytest.mark.parametrize("mode", ["console", "twistd"])
def test_plain_gateway_runs_without_pyopenssl_then_loads_it_for_an_https_upstream(tmp_path, mode):
    cert, key_file = make_self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key_file)
    plain, secure = _serve(), _serve(context)
    proxy_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, proxy_port, admin_port)
    # the system trust store, as the gateway reads it, is our self-signed cert
    process = GatewayProcess(config, mode=mode, env={"SSL_CERT_FILE": str(cert)}).start()
    SESSION_LOGS.append(process)
    try:
        process.wait_ready([proxy_port, admin_port])
        gw = Gateway(process, proxy_port, admin_port, config)
        for name, port, scheme in (("plain", plain, "http"), ("secure", secure, "https")):
            doc = {
                "name": name,
                "model": "openai/m",
                "provider_config": {
                    "api_key": "sk-up",
                    "api_base": f"{scheme}://127.0.0.1:{port.server_address[1]}/v1",
                },
            }
            assert gw.admin_call("POST", "/aisix/admin/models", doc)[0] == 201
        key = secret()
        doc = {"key": key, "allowed_models": ["plain", "secure"]}
        assert gw.admin_call("POST", "/aisix/admin/apikeys", doc)[0] == 201

        assert _chat(gw, key, "plain")[0] == 200
        assert not _tls_loaded(process.pid), "pyOpenSSL loaded with no TLS in use"

        status, body = _chat(gw, key, "secure")
        assert status == 200, body
        assert json.loads(body)["choices"][0]["message"]["content"] == "hi"
        assert _tls_loaded(process.pid)
    finally:
        process.stop()
        plain.shutdown()
        secure.shutdown()


_RESTORE = """
import sys
from twisted_gw.reactor import install
install()
from twisted.web import client
from twisted.internet import endpoints, posixbase
assert "OpenSSL" not in sys.modules and client.SSL is None, "loaded at start-up"
try:
    client.BrowserLikePolicyForHTTPS().creatorForNetloc(b"example.com", 443)
except NotImplementedError:
    pass
else:
    raise AssertionError("Twisted's https policy worked without pyOpenSSL")
from twisted_gw.hooks.loader import load_hooks
load_hooks(["tests.support.finalize_counter.FinalizeCounter"])
client.BrowserLikePolicyForHTTPS().creatorForNetloc(b"example.com", 443)
from twisted.internet import reactor
endpoints.wrapClientTLS(
    endpoints.optionsForClientTLS("example.com"),
    endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", 1),
)
assert posixbase.tls is not None and posixbase.ssl is not None
print("restored")
"""


def test_loading_a_hook_gives_twisteds_https_helpers_back():
    """A hook is someone else's code, which may call out with treq over https:
    once one is loaded, Twisted's own https helpers work in the process (a
    gateway without hooks goes without them and never needs them)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _RESTORE],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "restored"
