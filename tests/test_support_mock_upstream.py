"""The mock upstream behaves like an HTTP server, over real sockets.

Black-box tests of the gateway trust MockUpstream to record what the gateway
sent and to notice when the gateway hangs up; these tests pin that down with
treq as the client, so a gateway test failure is about the gateway.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived

from tests.support.gateway import (
    GatewayExited,
    GatewayProcess,
    free_port,
    http,
    is_listening,
    make_self_signed_cert,
    treq_json,
    treq_stream,
    write_config,
)
from tests.support.mock_upstream import (
    DEFAULT_CONTENT,
    DEFAULT_USAGE,
    MockUpstream,
    chat_chunk,
    sse_event,
)

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


@pytest_twisted.async_yield_fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    mock = MockUpstream()
    mock.start()
    yield mock
    await mock.stop()


def _client() -> treq.client.HTTPClient:
    """A client whose connections close after each request, so counts are exact."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    return treq.client.HTTPClient(Agent(reactor, pool=pool))


async def _sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


# -- recording -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_records_method_path_headers_and_body(upstream: MockUpstream) -> None:
    payload = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    response = await _client().post(
        upstream.base_url + "/chat/completions?ignored=1",
        json=payload,
        headers={"Authorization": "Bearer sk-provider", "X-Extra": "yes"},
    )
    await response.content()

    [recorded] = upstream.requests
    assert recorded.method == "POST"
    assert recorded.path == CHAT
    assert recorded.headers["authorization"] == "Bearer sk-provider"
    assert recorded.headers["x-extra"] == "yes"
    assert recorded.headers["content-type"].startswith("application/json")
    assert json.loads(recorded.body) == payload
    assert recorded.json == payload
    assert recorded.completed and not recorded.client_gone


@pytest_twisted.ensureDeferred
async def test_records_undecodable_body_with_json_none(upstream: MockUpstream) -> None:
    response = await _client().post(upstream.base_url + "/embeddings", data=b"\xffnot json")
    await response.content()
    assert upstream.requests[0].body == b"\xffnot json"
    assert upstream.requests[0].json is None


@pytest_twisted.ensureDeferred
async def test_wait_for_requests_fires_with_the_requests(upstream: MockUpstream) -> None:
    waiting = upstream.wait_for_requests(2, timeout=5)
    client = _client()
    for n in range(2):
        response = await client.post(upstream.base_url + "/embeddings", json={"input": str(n)})
        await response.content()
    requests = await waiting
    assert [r.json["input"] for r in requests] == ["0", "1"]
    # Already satisfied: fires at once.
    assert len(await upstream.wait_for_requests(1)) == 1


# -- programmed answers ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_set_json_answers_with_status_and_headers(upstream: MockUpstream) -> None:
    upstream.set_json(CHAT, {"ok": True}, status=201, headers={"X-Upstream": "1"})
    status, headers, body = await treq_json(
        "POST", upstream.base_url + "/chat/completions", json_body={}
    )
    assert status == 201
    assert headers["x-upstream"] == "1"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"ok": True}


@pytest_twisted.ensureDeferred
async def test_set_json_error_status(upstream: MockUpstream) -> None:
    error = {
        "error": {
            "message": "bad model",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }
    upstream.set_json(CHAT, error, status=404)
    status, _, body = await treq_json("POST", upstream.base_url + "/chat/completions", json_body={})
    assert status == 404
    assert json.loads(body) == error


@pytest_twisted.ensureDeferred
async def test_set_raw_sends_exact_bytes(upstream: MockUpstream) -> None:
    upstream.set_raw(CHAT, b"\x00\xffgarbage", status=500, content_type="text/plain")
    status, headers, body = await treq_json(
        "POST", upstream.base_url + "/chat/completions", json_body={}
    )
    assert (status, headers["content-type"], body) == (500, "text/plain", b"\x00\xffgarbage")


@pytest_twisted.ensureDeferred
async def test_set_drop_closes_without_answer(upstream: MockUpstream) -> None:
    upstream.set_drop(CHAT)
    with pytest.raises(ResponseNeverReceived):
        await _client().post(upstream.base_url + "/chat/completions", json={})
    await upstream.wait_for_idle(timeout=1)
    assert not upstream.requests[0].client_gone
    assert not upstream.requests[0].completed


@pytest_twisted.ensureDeferred
async def test_clear_and_reset_restore_defaults(upstream: MockUpstream) -> None:
    upstream.set_json(CHAT, {"programmed": True})
    upstream.clear(CHAT)
    _, _, body = await treq_json("POST", upstream.base_url + "/chat/completions", json_body={})
    assert json.loads(body)["object"] == "chat.completion"
    upstream.set_json(CHAT, {"programmed": True})
    upstream.reset()
    assert upstream.requests == []
    _, _, body = await treq_json("POST", upstream.base_url + "/chat/completions", json_body={})
    assert json.loads(body)["object"] == "chat.completion"


# -- delays and cancellation -----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delayed_answer_arrives_after_the_delay(upstream: MockUpstream) -> None:
    upstream.set_delay(CHAT, 0.3)
    start = reactor.seconds()
    status, _, body = await treq_json("POST", upstream.base_url + "/chat/completions", json_body={})
    elapsed = reactor.seconds() - start
    assert status == 200
    assert json.loads(body)["object"] == "chat.completion"
    assert 0.25 <= elapsed < 2


@pytest_twisted.ensureDeferred
async def test_client_cancel_during_delay_marks_client_gone_and_closes(
    upstream: MockUpstream,
) -> None:
    upstream.set_delay(CHAT, 0.5)
    request = _client().post(upstream.base_url + "/chat/completions", json={})
    [recorded] = await upstream.wait_for_requests(1, timeout=2)
    assert upstream.open_connections == 1

    gone = upstream.wait_for_disconnect(timeout=0.1)
    request.cancel()
    closed = await gone

    assert closed == 1
    assert upstream.open_connections == 0
    assert recorded.client_gone
    assert recorded.ended_at is not None
    # The pending answer was cancelled: nothing is written once the delay is over.
    await _sleep(0.6)
    assert not recorded.completed
    with pytest.raises(ResponseNeverReceived):
        await request


@pytest_twisted.ensureDeferred
async def test_treq_json_timeout_drops_the_request(upstream: MockUpstream) -> None:
    upstream.set_delay(CHAT, 1.0)
    gone = upstream.wait_for_disconnect(timeout=1)
    with pytest.raises(defer.TimeoutError):
        await treq_json("POST", upstream.base_url + "/chat/completions", json_body={}, timeout=0.1)
    await gone
    assert upstream.requests[0].client_gone


@pytest_twisted.ensureDeferred
async def test_when_connections_closed_counts_from_start(upstream: MockUpstream) -> None:
    for _ in range(2):
        await treq_json("POST", upstream.base_url + "/embeddings", json_body={"input": "x"})
    assert await upstream.when_connections_closed(2, timeout=1) == 2
    assert upstream.total_connections == 2
    with pytest.raises(defer.TimeoutError):
        await upstream.when_connections_closed(3, timeout=0.05)


@pytest_twisted.ensureDeferred
async def test_stop_drops_open_connections(upstream: MockUpstream) -> None:
    from twisted.web.client import ResponseFailed

    upstream.set_sse(CHAT, [sse_event(chat_chunk("a"))], end="hang")
    response = await _client().post(
        upstream.base_url + "/chat/completions", json={}, unbuffered=True
    )
    assert response.code == 200 and upstream.open_connections == 1
    await upstream.stop()
    assert upstream.open_connections == 0
    with pytest.raises(ResponseFailed):
        await treq.collect(response, lambda data: None)
    assert not upstream.requests[0].client_gone  # the mock hung up, not the client


# -- streaming -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sse_with_gap_arrives_in_two_reads(upstream: MockUpstream) -> None:
    first, second = sse_event(chat_chunk("Hel")), sse_event(chat_chunk("lo"))
    upstream.set_sse(CHAT, [first, second], gap=0.3)
    result = await treq_stream("POST", upstream.base_url + "/chat/completions", json_body={})

    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.ended == "done"
    assert result.chunks == [first, second]
    assert result.arrivals[1] - result.arrivals[0] >= 0.25
    assert [c["choices"][0]["delta"]["content"] for c in result.json_chunks] == ["Hel", "lo"]


@pytest_twisted.ensureDeferred
async def test_sse_cut_ends_without_terminator_after_the_events(upstream: MockUpstream) -> None:
    upstream.set_sse(CHAT, [sse_event(chat_chunk("a"))], end="cut")
    result = await treq_stream("POST", upstream.base_url + "/chat/completions", json_body={})
    assert result.status == 200
    assert result.ended == "cut"
    assert result.data == [json.dumps(chat_chunk("a"), separators=(",", ":"))]
    assert not upstream.requests[0].client_gone


@pytest_twisted.ensureDeferred
async def test_sse_cut_with_no_events_sends_headers_then_dies(upstream: MockUpstream) -> None:
    upstream.set_sse(CHAT, [], end="cut")
    result = await treq_stream("POST", upstream.base_url + "/chat/completions", json_body={})
    assert (result.status, result.body, result.ended) == (200, b"", "cut")


@pytest_twisted.ensureDeferred
async def test_sse_hang_until_client_walks_away(upstream: MockUpstream) -> None:
    upstream.set_sse(CHAT, [sse_event(chat_chunk("a"))], end="hang")
    gone = upstream.wait_for_disconnect(timeout=1)
    result = await treq_stream(
        "POST",
        upstream.base_url + "/chat/completions",
        json_body={},
        stop_when=lambda body: b"\n\n" in body,
    )
    await gone
    assert result.ended == "stopped"
    assert upstream.requests[0].client_gone


# -- default answers -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_default_chat_completion_echoes_model(upstream: MockUpstream) -> None:
    status, _, body = await treq_json(
        "POST",
        upstream.base_url + "/chat/completions",
        json_body={"model": "org/model-1", "messages": [{"role": "user", "content": "hi"}]},
    )
    answer = json.loads(body)
    assert status == 200
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "org/model-1"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": DEFAULT_CONTENT,
        "refusal": None,
    }
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest_twisted.ensureDeferred
async def test_default_chat_stream_has_usage_only_when_asked(upstream: MockUpstream) -> None:
    request: dict[str, Any] = {"model": "m", "messages": [], "stream": True}
    plain = await treq_stream("POST", upstream.base_url + "/chat/completions", json_body=request)
    request["stream_options"] = {"include_usage": True}
    counted = await treq_stream("POST", upstream.base_url + "/chat/completions", json_body=request)

    for result in (plain, counted):
        assert result.headers["content-type"] == "text/event-stream"
        assert result.data[-1] == "[DONE]"
        text = "".join(
            c["choices"][0]["delta"].get("content", "") for c in result.json_chunks if c["choices"]
        )
        assert text == DEFAULT_CONTENT
    assert all("usage" not in c for c in plain.json_chunks)
    assert counted.json_chunks[-1]["usage"] == DEFAULT_USAGE


@pytest_twisted.ensureDeferred
async def test_default_embeddings(upstream: MockUpstream) -> None:
    status, _, body = await treq_json(
        "POST", upstream.base_url + "/embeddings", json_body={"model": "emb", "input": ["a", "b"]}
    )
    answer = json.loads(body)
    assert status == 200
    assert answer["object"] == "list"
    assert answer["model"] == "emb"
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and d["embedding"] for d in answer["data"])
    _, _, body = await treq_json(
        "POST",
        upstream.base_url + "/embeddings",
        json_body={"model": "emb", "input": "a", "encoding_format": "base64"},
    )
    assert isinstance(json.loads(body)["data"][0]["embedding"], str)


@pytest_twisted.ensureDeferred
async def test_default_anthropic_messages(upstream: MockUpstream) -> None:
    status, _, body = await treq_json(
        "POST", upstream.base_url + "/messages", json_body={"model": "claude-x", "messages": []}
    )
    answer = json.loads(body)
    assert status == 200
    assert answer["type"] == "message"
    assert answer["content"] == [{"type": "text", "text": DEFAULT_CONTENT}]
    result = await treq_stream(
        "POST",
        upstream.base_url + "/messages",
        json_body={"model": "claude-x", "messages": [], "stream": True},
    )
    types = [c["type"] for c in result.json_chunks]
    assert types[0] == "message_start" and types[-1] == "message_stop"


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404_json(upstream: MockUpstream) -> None:
    status, _, body = await treq_json("GET", upstream.base_url + "/nothing")
    assert status == 404
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


# -- the gateway helpers ---------------------------------------------------


def test_write_config_deep_merges_extra(tmp_path: Any) -> None:
    import yaml

    path = write_config(
        tmp_path,
        3000,
        3001,
        extra={
            "server": {"proxy": {"tls": {"enabled": True}}},
            "deployment": {"store": {"path": "s"}},
        },
    )
    config = yaml.safe_load(path.read_text())
    assert config["server"]["proxy"] == {"listen": "127.0.0.1:3000", "tls": {"enabled": True}}
    assert config["server"]["admin"] == {"listen": "127.0.0.1:3001"}
    assert config["deployment"]["admin"]["admin_key"] == [{"key": "admin-secret"}]
    assert config["deployment"]["store"] == {"path": "s"}
    as_json = write_config(tmp_path, 1, 2, admin_keys=[], fmt="json")
    assert as_json.name == "config.json"
    assert json.loads(as_json.read_text())["deployment"]["admin"]["admin_key"] == []


class _FakeGateway(GatewayProcess):
    """Stands in for the gateway to test the process plumbing on its own."""

    def __init__(self, script: str, tmp_path: Any) -> None:
        super().__init__(None, cwd=tmp_path)
        self._script = script

    @property
    def argv(self) -> list[str]:
        import sys

        return [sys.executable, "-c", self._script]


def test_gateway_process_ready_stop_and_output(tmp_path: Any) -> None:
    port = free_port()
    script = (
        "import signal, socket, sys\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('bye'), sys.exit(0)))\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print('listening'); sys.stderr.write('on stderr\\n')\n"
        "signal.pause()\n"
    )
    with _FakeGateway(script, tmp_path) as gateway:
        gateway.wait_ready([port], timeout=10)
        assert is_listening(port)
        assert gateway.stop() == 0
    assert "listening" in gateway.stdout and "bye" in gateway.stdout
    assert "on stderr" in gateway.output
    assert not is_listening(port)


def test_gateway_process_run_to_exit_and_early_exit(tmp_path: Any) -> None:
    failing = _FakeGateway("import sys; print('Address already in use'); sys.exit(1)", tmp_path)
    code, stdout, _, elapsed = failing.run_to_exit(timeout=10)
    assert code == 1 and "Address already in use" in stdout and elapsed < 10
    exiting = _FakeGateway("print('boom')", tmp_path).start()
    with pytest.raises(GatewayExited, match="boom"):
        exiting.wait_ready([free_port()], timeout=10)


@pytest_twisted.ensureDeferred
async def test_async_wait_ready_keeps_the_reactor_serving(
    upstream: MockUpstream, tmp_path: Any
) -> None:
    port = free_port()
    # The fake calls the mock upstream before it listens: if waiting blocked
    # the reactor, that call would hang and the port would never open.
    script = (
        "import socket, signal, sys, urllib.request\n"
        f"urllib.request.urlopen('{upstream.base_url}/embeddings', b'{{}}', timeout=5).read()\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "signal.pause()\n"
    )
    with _FakeGateway(script, tmp_path) as gateway:
        await gateway.async_wait_ready([port], timeout=10)
        assert [r.path for r in upstream.requests] == [EMBEDDINGS]


@pytest_twisted.ensureDeferred
async def test_self_signed_cert_serves_tls_to_both_clients(tmp_path: Any) -> None:
    from twisted.internet import ssl
    from twisted.internet.threads import deferToThread
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    cert_path, key_path = make_self_signed_cert(tmp_path)
    options = ssl.DefaultOpenSSLContextFactory(str(key_path), str(cert_path))

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            return b"hello"

    port = reactor.listenSSL(0, Site(Hello()), options, interface="127.0.0.1")
    try:
        url = f"https://127.0.0.1:{port.getHost().port}/"
        assert (await treq_json("GET", url))[2] == b"hello"
        assert (await treq_json("GET", url, cafile=cert_path))[2] == b"hello"
        # The blocking client must run off the reactor thread, which serves it.
        status, _, body = await deferToThread(http, "GET", url, cafile=cert_path)
        assert (status, body) == (200, b"hello")
    finally:
        await port.stopListening()
