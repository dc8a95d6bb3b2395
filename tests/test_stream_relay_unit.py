"""StreamRelay in-process with a fake clock: the timer, backpressure and the
single finalize, driven by hand (the black-box suite covers the wire)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock

from twisted_gw.config.snapshot import Snapshot
from twisted_gw.hooks.context import RequestContext
from twisted_gw.streaming.relay import StreamRelay

CHUNK = b'{"choices":[]}'


class FakeRequest:
    """The part of twisted.web's Request a relay uses."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.finished = False
        self.producer = None
        self.code = None

    def setResponseCode(self, code, *a):
        self.code = code

    def setHeader(self, *a):
        pass

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        assert not self.finished, "write after finish"
        self.out.append(data)

    def finish(self):
        self.finished = True

    def notifyFinish(self):
        return defer.Deferred()


class Hooks:
    def __init__(self) -> None:
        self.ends: list[str] = []

    def finalize(self, ctx, reason):
        self.ends.append(reason)


class Source:
    def __init__(self) -> None:
        self.paused = False
        self.cancelled = False
        self.sink = None

    def start(self, sink):
        self.sink = sink

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False

    def cancel(self):
        self.cancelled = True


def started(timeout=30.0):
    clock, request, hooks, source = Clock(), FakeRequest(), Hooks(), Source()
    ctx = RequestContext(
        "r", 0.0, "POST", "/v1/chat/completions", "/v1/chat/completions", "-", Snapshot()
    )
    relay = StreamRelay(request, ctx, hooks, clock, timeout, lambda *a: None)
    relay.run(defer.succeed(source))
    source.sink.chunk(CHUNK)
    source.sink.flush()
    return clock, request, hooks, source, relay


def test_a_slow_client_is_not_an_idle_upstream():
    clock, request, hooks, source, relay = started()
    relay.pauseProducing()  # the client's socket is full: twisted.web pauses us
    assert source.paused
    clock.advance(120)  # far past the idle timeout, but the upstream was paused by us
    assert hooks.ends == [] and not source.cancelled and not request.finished
    relay.resumeProducing()
    assert not source.paused
    clock.advance(29)
    assert hooks.ends == []  # idle time counts from the resume
    clock.advance(2)
    assert hooks.ends == ["timeout"] and source.cancelled and request.finished


def test_an_idle_upstream_is_cut_once_without_done():
    clock, request, hooks, source, _ = started(timeout=5)
    clock.advance(5)
    assert hooks.ends == ["timeout"] and source.cancelled
    assert b"[DONE]" not in b"".join(request.out)
    source.sink.chunk(CHUNK)  # late chunks after the end change nothing
    source.sink.upstream_ended(True, "end")
    assert hooks.ends == ["timeout"]


def test_frames_of_one_read_are_one_write_and_done_follows_a_clean_end():
    _, request, hooks, source, _ = started()
    writes = len(request.out)
    for _ in range(3):
        source.sink.chunk(CHUNK)
    source.sink.flush()
    assert len(request.out) == writes + 1
    source.sink.upstream_ended(True, "end")
    assert request.out[-1].endswith(b"data: [DONE]\n\n") and hooks.ends == ["done"]


def test_client_gone_releases_the_producer_and_finalizes_once():
    _, request, hooks, source, relay = started()
    assert request.producer is relay
    relay.stopProducing()  # the transport calls this before connectionLost
    relay.finished.cancel()  # then Klein cancels the handler's Deferred
    assert request.producer is None and source.cancelled and hooks.ends == ["client_gone"]
