"""CONTRACT 4.3 backpressure, black-box: a client that stops reading must not
make the gateway buffer the upstream stream. The gateway registers its relay
as the response's push producer, so a full client socket pauses the upstream
transport; here a 50 MB upstream stream meets a client that stalls after the
first event, and the gateway's resident memory must stay flat. When the client
reads again the whole stream arrives, then [DONE], finalized once."""

from __future__ import annotations

import json
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task

from tests.conftest import secret, start_gateway
from tests.streamcheck import no_unhandled_errors, wait_finalized
from tests.support.mock_upstream import chat_chunk, sse_event

EVENTS = 500
CONTENT = "x" * 100_000  # 500 x 100 kB = 50 MB of upstream stream


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class StallingClient(protocol.Protocol):
    """Sends one streaming request, stops reading after the first event,
    reads again on ``resume()``; fires ``done`` with everything it got."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = bytearray()
        self.first_event = defer.Deferred()
        self.done = defer.Deferred()

    def connectionMade(self) -> None:
        # a small receive buffer, so the kernel cannot soak up the stream either
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.first_event.called and b"data: " in self.received:
            self.transport.pauseProducing()  # stop reading: the client stalls
            self.first_event.callback(None)

    def resume(self) -> None:
        self.transport.resumeProducing()

    def connectionLost(self, reason=None) -> None:
        if not self.done.called:
            self.done.callback(bytes(self.received))


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gateway = start_gateway(
        tmp_path_factory.mktemp("backpressure"),
        extra={"hooks": ["tests.support.finalize_counter.FinalizeCounter"]},
    )
    yield gateway
    gateway.process.stop()
    no_unhandled_errors(gateway.process)


@pytest_twisted.ensureDeferred
async def test_stalled_client_does_not_make_the_gateway_buffer_the_stream(gw, fresh_upstream):
    provider_key = secret("sk-provider")
    await gw.add_model(
        "bp", "openai/big", {"api_key": provider_key, "api_base": fresh_upstream.base_url}
    )
    key = await gw.add_key(["bp"])
    events = [sse_event(chat_chunk(role="assistant", content=""))]
    events += [sse_event(chat_chunk(CONTENT)) for _ in range(EVENTS)]
    events += [sse_event(chat_chunk(finish_reason="stop")), sse_event("[DONE]")]
    fresh_upstream.set_sse("/v1/chat/completions", events)

    body = json.dumps(
        {"model": "bp", "stream": True, "messages": [{"role": "user", "content": "big"}]}
    )
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()
    pid = gw.process.pid
    baseline = rss_mb(pid)
    client = StallingClient(request)
    await protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", gw.proxy_port)
    await client.first_event

    # the upstream has all 50 MB to send at once; give it time to try
    peak = baseline
    for _ in range(30):
        await task.deferLater(reactor, 0.1, lambda: None)
        peak = max(peak, rss_mb(pid))
    growth = peak - baseline
    print(
        f"\ngateway RSS with a stalled client and a 50 MB stream: baseline {baseline:.1f} MB, peak {peak:.1f} MB, growth {growth:.1f} MB"
    )
    assert growth < 20, f"the gateway buffered the stream: RSS grew {growth:.1f} MB"
    assert len(client.received) < 10_000_000  # the client really stalled

    client.resume()  # read again: everything arrives, in order, then [DONE]
    received = await client.done
    head, _, stream = received.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert stream.count(CONTENT.encode()) == EVENTS
    assert stream.rstrip(b"\r\n0").endswith(b"data: [DONE]")
    rid = next(
        line.split(b": ")[1]
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-request-id")
    )
    assert (await wait_finalized(gw.process, rid.decode()))[0] == "done"
