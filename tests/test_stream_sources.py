"""In-process unit tests of the stream sources (twisted_gw.providers.sources).

No network and no mocks of our own code: the upstream body is driven through
``SSEBodyProtocol`` exactly as twisted.web.client would drive it (a response
whose ``deliverBody`` connects the protocol to a transport, then
``dataReceived`` / ``connectionLost``), with Twisted's own test doubles for the
transport (``TransportProxyProducer`` around a ``StringTransport``, the shape
an Agent response body gets) and ``task.Clock`` as the reactor.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web._newclient import TransportProxyProducer
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss

from tests.support.twisted_fakes import RecordingTCP
from twisted_gw.providers.sources import HTTPSSESource, ListSource

# -- fakes of Twisted's objects and a recording sink ----------------------------


class FakeResponse:
    """The part of twisted.web.iweb.IResponse a source uses: ``deliverBody``."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class RecordingSink:
    """Records everything a source hands it, in order; optional hooks."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.on_chunk: Any = None
        self.flushes = 0

    def chunk(self, data: bytes) -> None:
        self.log.append(("chunk", data))
        if self.on_chunk is not None:
            self.on_chunk(data)

    def flush(self) -> None:
        self.flushes += 1

    def upstream_ended(self, clean: bool, detail: str) -> None:
        assert isinstance(detail, str) and detail
        self.log.append(("end", clean))

    @property
    def chunks(self) -> list[bytes]:
        return [entry[1] for entry in self.log if entry[0] == "chunk"]

    @property
    def ends(self) -> list[bool]:
        return [entry[1] for entry in self.log if entry[0] == "end"]


class Upstream:
    """An HTTPSSESource started on a fake response, with handles on everything."""

    def __init__(self, *, proxied: bool = True) -> None:
        self.tcp = RecordingTCP()
        self.transport = TransportProxyProducer(self.tcp) if proxied else self.tcp
        self.response = FakeResponse(self.transport)
        self.source = HTTPSSESource(self.response)
        self.sink = RecordingSink()
        self.source.start(self.sink)
        self.protocol = self.response.protocol

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.protocol.dataReceived(piece)

    def end(self, exc: BaseException) -> None:
        self.protocol.connectionLost(Failure(exc))


CHUNK1 = b'{"id":"c1","choices":[{"delta":{"content":"Hel"}}]}'
CHUNK2 = b'{"id":"c1","choices":[{"delta":{"content":"lo \\u00e9"}}],  "x" : 1 }'


def sse(*payloads: bytes) -> bytes:
    return b"".join(b"data: " + p + b"\n\n" for p in payloads)


# -- HTTPSSESource --------------------------------------------------------------


def test_deliver_body_connects_protocol_to_transport() -> None:
    up = Upstream()
    assert up.protocol is not None
    assert up.protocol.transport is up.transport
    assert up.sink.log == []


def test_chunks_are_delivered_raw() -> None:
    up = Upstream()
    up.send(sse(CHUNK1, CHUNK2))
    assert up.sink.log == [("chunk", CHUNK1), ("chunk", CHUNK2)]
    assert all(type(c) is bytes for c in up.sink.chunks)


def test_chunks_split_across_reads_with_keepalives_and_crlf() -> None:
    up = Upstream()
    stream = b": keep-alive\r\n\r\ndata: " + CHUNK1 + b"\r\n\r\n\n: ping\n" + sse(CHUNK2)
    up.send(*(stream[i : i + 7] for i in range(0, len(stream), 7)))
    assert up.sink.chunks == [CHUNK1, CHUNK2]


def test_nothing_delivered_before_the_event_is_complete() -> None:
    up = Upstream()
    up.send(b"data: " + CHUNK1 + b"\n")
    assert up.sink.log == []
    up.send(b"\n")
    assert up.sink.chunks == [CHUNK1]


def test_done_is_not_delivered_and_sets_saw_done() -> None:
    up = Upstream()
    up.send(sse(CHUNK1))
    assert not up.source.saw_done
    up.send(sse(b"[DONE]"))
    assert up.source.saw_done
    assert up.sink.chunks == [CHUNK1]


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([sse(CHUNK1, b"[DONE]", CHUNK2)], id="same-read"),
        pytest.param([sse(CHUNK1, b"[DONE]"), sse(CHUNK2)], id="later-read"),
        pytest.param([sse(CHUNK1, b"[DONE]"), sse(b"[DONE]", CHUNK2)], id="after-second-done"),
    ],
)
def test_nothing_after_done_is_delivered(pieces: list[bytes]) -> None:
    up = Upstream()
    up.send(*pieces)
    up.end(ResponseDone())
    assert up.sink.log == [("chunk", CHUNK1), ("end", True)]


def test_only_an_exact_done_payload_is_the_marker() -> None:
    """Only data exactly ``[DONE]`` ends the stream; other payloads are chunks."""
    up = Upstream()
    up.send(sse(b"[DONE] ", b"[done]"))
    assert up.sink.chunks == [b"[DONE] ", b"[done]"]
    assert not up.source.saw_done


def test_response_done_is_a_clean_end() -> None:
    up = Upstream()
    up.send(sse(CHUNK1, b"[DONE]"))
    up.end(ResponseDone())
    assert up.sink.log == [("chunk", CHUNK1), ("end", True)]
    assert up.source.closed


def test_response_done_without_done_marker_is_still_clean() -> None:
    """The HTTP framing said the body is complete: the source reports it whole."""
    up = Upstream()
    up.send(sse(CHUNK1))
    up.end(ResponseDone())
    assert up.sink.log == [("chunk", CHUNK1), ("end", True)]


def test_connection_lost_with_none_reason_is_clean() -> None:
    up = Upstream()
    up.protocol.connectionLost(None)
    assert up.sink.log == [("end", True)]


@pytest.mark.parametrize(
    ("pieces", "clean"),
    [
        pytest.param([sse(CHUNK1, b"[DONE]")], True, id="after-done"),
        pytest.param([sse(CHUNK1)], False, id="without-done"),
        pytest.param([], False, id="empty-body"),
        pytest.param([sse(CHUNK1) + b"data: [DO"], False, id="partial-done"),
    ],
)
def test_potential_data_loss_is_clean_only_after_done(pieces: list[bytes], clean: bool) -> None:
    up = Upstream()
    up.send(*pieces)
    up.end(PotentialDataLoss())
    assert up.sink.ends == [clean]


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(ResponseFailed([Failure(ConnectionLost("reset"))]), id="ResponseFailed"),
        pytest.param(ConnectionLost("reset"), id="ConnectionLost"),
        pytest.param(ConnectionDone(), id="ConnectionDone"),
    ],
)
def test_lost_connection_is_not_clean(exc: BaseException) -> None:
    up = Upstream()
    up.send(sse(CHUNK1))
    up.end(exc)
    assert up.sink.log == [("chunk", CHUNK1), ("end", False)]


def test_upstream_ended_is_reported_once() -> None:
    up = Upstream()
    up.end(ResponseDone())
    up.end(ResponseFailed([Failure(ConnectionLost())]))
    up.protocol.connectionLost(None)
    assert up.sink.ends == [True]


def test_data_after_end_is_not_delivered() -> None:
    up = Upstream()
    up.end(ResponseDone())
    up.send(sse(CHUNK1))
    assert up.sink.log == [("end", True)]


def test_unterminated_last_event_is_dropped_at_end() -> None:
    """Per the event-stream spec, an event without its blank line is discarded."""
    up = Upstream()
    up.send(sse(CHUNK1) + b"data: " + CHUNK2 + b"\n")
    up.end(ResponseDone())
    assert up.sink.log == [("chunk", CHUNK1), ("end", True)]


def test_cancel_aborts_through_the_tcp_producer() -> None:
    up = Upstream()
    up.send(sse(CHUNK1))
    up.source.cancel()
    assert up.tcp.calls == ["abort"]
    assert up.tcp.disconnected
    assert up.source.closed


def test_nothing_reaches_the_sink_after_cancel() -> None:
    up = Upstream()
    up.send(sse(CHUNK1))
    up.source.cancel()
    up.send(sse(CHUNK2, b"[DONE]"))
    up.end(ResponseFailed([Failure(ConnectionLost("aborted"))]))
    up.end(ResponseDone())
    assert up.sink.log == [("chunk", CHUNK1)]
    assert not up.source.saw_done


def test_cancel_twice_aborts_once() -> None:
    up = Upstream()
    up.source.cancel()
    up.source.cancel()
    assert up.tcp.calls == ["abort"]


def test_cancel_from_the_sink_stops_the_rest_of_the_same_read() -> None:
    up = Upstream()
    up.sink.on_chunk = lambda data: up.source.cancel()
    up.send(sse(CHUNK1, CHUNK2, b"[DONE]"))
    up.end(ResponseDone())
    assert up.sink.log == [("chunk", CHUNK1)]
    assert up.tcp.calls == ["abort"]


def test_cancel_after_end_does_not_abort() -> None:
    up = Upstream()
    up.end(ResponseDone())
    up.source.cancel()
    assert up.tcp.calls == []


def test_cancel_without_tcp_producer_stops_producing() -> None:
    """A transport without ``_producer`` (not an Agent body) is stopped instead."""
    up = Upstream(proxied=False)
    up.source.cancel()
    assert up.tcp.calls == ["stop"]
    assert up.tcp.producerState == "stopped"
    up.send(sse(CHUNK1))
    up.end(ResponseDone())
    assert up.sink.log == []


def test_cancel_after_proxy_stopped_does_not_fail() -> None:
    """After the body is done Twisted unhooks the proxy (``_producer`` is None)."""
    up = Upstream()
    up.transport.stopProxying()
    up.source.cancel()
    assert up.tcp.calls == []
    assert up.source.closed


def test_cancel_before_start_takes_the_body_and_ignores_it() -> None:
    """Never started: the body is still taken (not left buffering in Twisted)."""
    tcp = RecordingTCP()
    response = FakeResponse(TransportProxyProducer(tcp))
    source = HTTPSSESource(response)
    source.cancel()
    assert source.closed
    assert response.protocol is not None
    response.protocol.dataReceived(sse(CHUNK1, b"[DONE]"))
    response.protocol.connectionLost(Failure(ResponseDone()))
    assert not source.saw_done
    source.pause()
    source.resume()
    source.cancel()
    assert "pause" not in tcp.calls
    assert "resume" not in tcp.calls


def test_cancel_before_start_drops_the_connection() -> None:
    tcp = RecordingTCP()
    source = HTTPSSESource(FakeResponse(TransportProxyProducer(tcp)))
    source.cancel()
    assert tcp.calls == ["abort"]
    assert tcp.disconnected


def test_pause_and_resume_reach_the_transport() -> None:
    up = Upstream()
    up.source.pause()
    assert up.tcp.producerState == "paused"
    up.source.resume()
    assert up.tcp.producerState == "producing"
    up.source.pause()
    assert up.tcp.calls == ["pause", "resume", "pause"]


def test_pause_from_the_sink_reaches_the_transport() -> None:
    up = Upstream()
    up.sink.on_chunk = lambda data: up.source.pause()
    up.send(sse(CHUNK1))
    assert up.tcp.producerState == "paused"


def test_pause_and_resume_after_cancel_do_not_reach_the_transport() -> None:
    """An aborted StringTransport raises on pause/resume, like a closed one would."""
    up = Upstream()
    up.source.cancel()
    up.source.pause()
    up.source.resume()
    assert up.tcp.calls == ["abort"]


def test_pause_and_resume_after_end_do_not_reach_the_transport() -> None:
    up = Upstream()
    up.end(ResponseDone())
    up.source.pause()
    up.source.resume()
    assert up.tcp.calls == []


def test_pause_before_start_is_harmless() -> None:
    source = HTTPSSESource(FakeResponse(TransportProxyProducer(RecordingTCP())))
    source.pause()
    source.resume()
    assert not source.closed


# -- ListSource -----------------------------------------------------------------

CHUNKS = [b"one", b"two", b"three", b"four"]


def start_list(chunks: list[bytes]) -> tuple[ListSource, RecordingSink, Clock]:
    clock = Clock()
    source = ListSource(list(chunks), clock)
    sink = RecordingSink()
    return source, sink, clock


def test_list_delivers_all_chunks_then_a_clean_end() -> None:
    source, sink, clock = start_list(CHUNKS)
    source.start(sink)
    assert sink.log == [*(("chunk", c) for c in CHUNKS), ("end", True)]
    assert source.closed
    assert clock.getDelayedCalls() == []


def test_list_empty_ends_clean_at_once() -> None:
    source, sink, _ = start_list([])
    source.start(sink)
    assert sink.log == [("end", True)]


def test_list_pause_inside_chunk_stops_until_resume() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.pause() if data == b"two" else None
    source.start(sink)
    assert sink.log == [("chunk", b"one"), ("chunk", b"two")]

    clock.advance(10)  # time alone does not resume it
    assert sink.chunks == [b"one", b"two"]
    assert sink.ends == []

    source.resume()
    assert sink.chunks == [b"one", b"two"]  # resumes on the next reactor turn, not inside
    clock.advance(0)
    assert sink.log == [*(("chunk", c) for c in CHUNKS), ("end", True)]
    assert clock.getDelayedCalls() == []


def test_list_pause_on_every_chunk() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.pause()
    source.start(sink)
    for expected in range(1, len(CHUNKS) + 1):
        assert sink.chunks == CHUNKS[:expected]
        assert sink.ends == []
        source.resume()
        clock.advance(0)
    assert sink.log == [*(("chunk", c) for c in CHUNKS), ("end", True)]


def test_list_pause_in_last_chunk_holds_the_end() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.pause() if data == CHUNKS[-1] else None
    source.start(sink)
    assert sink.chunks == CHUNKS
    assert sink.ends == []
    source.resume()
    clock.advance(0)
    assert sink.ends == [True]


def test_list_resume_without_pause_schedules_nothing() -> None:
    source, sink, clock = start_list(CHUNKS)
    source.start(sink)
    source.resume()
    assert clock.getDelayedCalls() == []
    assert sink.ends == [True]


def test_list_repeated_pause_resume_delivers_each_chunk_once() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.pause() if data == b"one" else None
    source.start(sink)
    source.resume()
    source.pause()
    source.resume()  # two pumps are now scheduled
    clock.advance(0)
    assert sink.log == [*(("chunk", c) for c in CHUNKS), ("end", True)]


def test_list_pause_again_before_the_scheduled_resume_runs() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.pause() if data == b"one" else None
    source.start(sink)
    source.resume()
    source.pause()
    clock.advance(0)
    assert sink.chunks == [b"one"]
    assert sink.ends == []
    source.resume()
    clock.advance(0)
    assert sink.log == [*(("chunk", c) for c in CHUNKS), ("end", True)]


def test_list_cancel_inside_chunk_stops_everything_without_end() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.cancel() if data == b"two" else None
    source.start(sink)
    source.resume()
    clock.advance(1)
    assert sink.log == [("chunk", b"one"), ("chunk", b"two")]
    assert clock.getDelayedCalls() == []


def test_list_cancel_while_paused_then_resume_delivers_nothing() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.pause()
    source.start(sink)
    source.cancel()
    source.resume()
    clock.advance(1)
    assert sink.log == [("chunk", b"one")]
    assert clock.getDelayedCalls() == []


def test_list_cancel_after_resume_before_it_runs() -> None:
    source, sink, clock = start_list(CHUNKS)
    sink.on_chunk = lambda data: source.pause()
    source.start(sink)
    source.resume()
    source.cancel()
    clock.advance(0)
    assert sink.log == [("chunk", b"one")]


def test_list_cancel_before_start_delivers_nothing() -> None:
    source, sink, _ = start_list(CHUNKS)
    source.cancel()
    source.start(sink)
    assert sink.log == []


def test_the_sink_is_flushed_once_per_read_after_its_events() -> None:
    up = Upstream()
    up.send(sse(CHUNK1) + sse(CHUNK1) + sse(CHUNK1))
    assert up.sink.chunks == [CHUNK1] * 3 and up.sink.flushes == 1
    up.send(b"data: {")  # no complete event: nothing to flush... but still a read
    assert up.sink.flushes == 2 and len(up.sink.chunks) == 3


def test_done_ends_the_stream_at_once_and_a_body_left_open_is_aborted_after_the_drain() -> None:
    from twisted.internet.task import Clock

    up = Upstream()
    clock = Clock()
    up.source.reactor = clock  # as the openai provider builds it
    up.send(sse(CHUNK1) + b"data: [DONE]\n\n")
    assert up.sink.chunks == [CHUNK1] and up.sink.ends == [True]  # no wait for the body's end
    clock.advance(4.9)
    assert up.tcp.calls == []  # still draining: the connection may go back to the pool
    clock.advance(0.2)
    assert up.tcp.calls == ["abort"]  # the upstream kept its body open: drop it
    up.end(ResponseDone())
    assert up.sink.ends == [True]  # reported once


def test_a_body_that_ends_after_done_is_not_aborted() -> None:
    from twisted.internet.task import Clock

    up = Upstream()
    clock = Clock()
    up.source.reactor = clock
    up.send(sse(CHUNK1) + b"data: [DONE]\n\n")
    up.end(ResponseDone())
    clock.advance(10)
    assert up.tcp.calls == [] and up.sink.ends == [True] and not clock.getDelayedCalls()
