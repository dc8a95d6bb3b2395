"""Secrets never reach a log line (CONTRACT 4.1, issue 3 item 6).

Runs last (file name): drives the paths most likely to leak a key through a
gateway of its own, then greps that log and the captured log of every gateway
this test session started for every client, admin and provider key used.
"""

from __future__ import annotations

import json
import re

import pytest_twisted

from tests.conftest import SESSION_LOGS, SESSION_SECRETS, secret, start_gateway
from tests.support.gateway import treq_json


@pytest_twisted.ensureDeferred
async def test_no_key_in_any_log_line_or_error_body(tmp_path, upstream):
    gw = start_gateway(tmp_path)
    try:
        provider_key = secret("sk-provider")
        await gw.add_model(
            "leaky", "openai/m", {"api_key": provider_key, "api_base": upstream.base_url}
        )
        client_key = await gw.add_key(["leaky"])
        bodies = []
        # upstreams that echo the provider key back, in a 4xx and a 5xx
        for status in (400, 500, 401):
            upstream.reset()
            upstream.set_json(
                "/v1/chat/completions",
                {"error": {"message": f"Incorrect API key provided: {provider_key}", "code": "x"}},
                status=status,
            )
            got, _, body = await gw.chat(client_key, {"model": "leaky", "messages": []})
            assert got in (400, 502)
            bodies.append(body)
        # wrong client keys, wrong admin keys, bodies that carry a key
        wrong = secret()
        bodies.append((await gw.chat(wrong, {"model": "leaky", "messages": []}))[2])
        bodies.append((await gw.chat(client_key, None, body=f'{{"model": "{wrong}"'.encode()))[2])
        # CONTRACT 5.4: the log names an unknown model as sent, so a key pasted
        # into "model" (the client's own, another client's, the provider's, or
        # one inside a longer name) must come out [redacted]
        other_key = await gw.add_key(["leaky"])
        for pasted in (client_key, other_key, provider_key, f"gpt-{client_key}"):
            got, _, body = await gw.chat(client_key, {"model": pasted, "messages": []})
            assert got == 400
            bodies.append(body)  # "Model '[redacted]' not found": redacted there too
        wrong_admin = secret("admin")
        status, _, body = await treq_json(
            "GET",
            gw.admin + "/aisix/admin/models",
            headers={"Authorization": f"Bearer {wrong_admin}"},
        )
        assert status == 401
        bodies.append(body)
        status, body = await gw.aadmin(
            "POST", "/aisix/admin/apikeys", {"key": client_key, "allowed_models": []}
        )
        assert status == 400  # duplicate: the message must not quote the key
        bodies.append(json.dumps(body).encode())
    finally:
        gw.process.stop()
    models = re.findall(r" access .*? model=(\S+)", gw.process.output)
    assert models.count("[redacted]") == 3 and "gpt-[redacted]" in models

    leaked_in_bodies = [s for s in SESSION_SECRETS - {wrong} for b in bodies if s.encode() in b]
    assert not leaked_in_bodies
    # the model name we sent was a key-like string: echoing what the client sent
    # back to that client is fine, but it must not be logged
    assert SESSION_LOGS  # this test's gateway at least; the whole run when run with the suite
    for process in SESSION_LOGS:
        output = process.output
        for value in SESSION_SECRETS:
            assert value not in output, f"a secret reached the log of {process.stdout_path}"
