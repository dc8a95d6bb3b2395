"""The Anthropic stream translator (pure) and the translated SSE source.

The translator is fed recorded Anthropic event streams through the real SSE
parser, split at every byte boundary, and must give the same OpenAI chunks
whatever the split. The source is driven the way twisted.web.client drives a
response body, with the fakes of tests/test_stream_sources.py.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web._newclient import TransportProxyProducer
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss

from tests.support.anthropic_events import (
    MODEL,
    PING,
    error_event,
    frame,
    frames,
    message_end,
    message_start,
    text_block,
    text_stream,
    tool_block,
    tool_stream,
)
from tests.support.twisted_fakes import RecordingTCP
from tests.test_stream_sources import FakeResponse, RecordingSink
from twisted_gw.providers.anthropic_stream import AnthropicStreamTranslator
from twisted_gw.providers.translated import TranslatedSSESource, UpstreamStreamError
from twisted_gw.sse import SSEEvent, SSEParser

CREATED = 1_700_000_123


def run(raw_pieces, translator=None):
    """OpenAI chunks for a byte stream fed in the given pieces."""
    translator = translator or AnthropicStreamTranslator(CREATED, "claude-configured")
    parser = SSEParser()
    out = []
    for piece in raw_pieces:
        for event in parser.feed(piece):
            out += translator.feed(event)
    return out, translator


def chunk(delta, finish=None, msg_id="msg_01stream"):
    return {
        "id": msg_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(prompt, completion, cached=0):
    return {
        "id": "msg_01stream",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


TOOL_STREAM_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_01B",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}]}),
    chunk({}, "tool_calls"),
    usage_chunk(123, 42, cached=100),
]


def test_tool_stream_golden():
    chunks, translator = run([b"".join(frames(tool_stream()))])
    assert chunks == TOOL_STREAM_CHUNKS
    assert translator.complete


def test_text_stream_golden():
    chunks, _ = run(frames(text_stream("Hel", "lo ✓")))
    assert chunks == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo ✓"}),
        chunk({}, "stop"),
        usage_chunk(12, 5),
    ]


@pytest.mark.parametrize(
    "stream", [tool_stream(), text_stream("a", "b", "c")], ids=["tools", "text"]
)
def test_every_byte_split_gives_identical_chunks(stream):
    raw = b"".join(frames(stream))
    expected, _ = run([raw])
    for i in range(len(raw) + 1):
        got, translator = run([raw[:i], raw[i:]])
        assert got == expected, f"split at byte {i}"
        assert translator.complete
    got, _ = run([raw[i : i + 1] for i in range(len(raw))])  # one byte at a time
    assert got == expected


def test_crlf_framing_and_no_space_after_colon_are_the_same_stream():
    raw = b"".join(frames(text_stream("x")))
    crlf = raw.replace(b"\n", b"\r\n").replace(b"data: ", b"data:")
    assert run([crlf])[0] == run([raw])[0]


def test_usage_counts_are_cumulative_and_input_may_be_updated_by_message_delta():
    events = [
        message_start(usage={"input_tokens": 10, "output_tokens": 1}),
        *text_block(0, "x"),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"input_tokens": 11, "cache_read_input_tokens": 4, "output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    chunks, _ = run(frames(events))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 9,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_message_stop_without_message_delta_still_finishes_and_counts():
    chunks, translator = run(
        frames([message_start(), *text_block(0, "x"), {"type": "message_stop"}])
    )
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "stop"]
    assert chunks[-1]["usage"]["prompt_tokens"] == 12 and translator.complete


def test_role_chunk_comes_first_even_without_message_start():
    chunks, _ = run(frames(text_block(0, "hi")))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "hi"}


def test_pings_unknown_events_and_unknown_deltas_emit_nothing():
    translator = AnthropicStreamTranslator(CREATED)
    for event in [
        PING,
        {"type": "future_event", "x": 1},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta"}},
        {"type": "content_block_stop", "index": 0},
    ]:
        assert translator.feed(SSEEvent(json.dumps(event).encode(), event["type"].encode())) == []


def test_thinking_deltas_become_reasoning_content():
    events = [
        message_start(),
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
        *text_block(1, "42"),
        *message_end(),
    ]
    chunks, _ = run(frames(events))
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "hmm"}
    assert chunks[2]["choices"][0]["delta"] == {"content": "42"}


def test_tool_indexes_follow_tool_calls_not_anthropic_block_indexes():
    events = [
        message_start(),
        *tool_block(0, "t0", "a", "{}"),
        *text_block(1, "between"),
        *tool_block(2, "t1", "b", '{"x":1}'),
        *message_end("tool_use"),
    ]
    chunks, _ = run(frames(events))
    calls = [
        call
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [(c["index"], c.get("id")) for c in calls] == [
        (0, "t0"),
        (0, None),
        (1, "t1"),
        (1, None),
    ]


def test_error_event_raises_with_a_redacted_message():
    translator = AnthropicStreamTranslator(CREATED, secrets=["sk-ant-secret-1"])
    run(frames([message_start()]), translator)
    with pytest.raises(UpstreamStreamError) as info:
        run(frames([error_event("overloaded_error", "Overloaded for sk-ant-secret-1")]), translator)
    assert str(info.value) == "upstream error event (overloaded_error): Overloaded for [redacted]"
    assert not translator.complete


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"[DONE]"])
def test_malformed_event_raises(data):
    with pytest.raises(UpstreamStreamError, match="malformed"):
        AnthropicStreamTranslator(CREATED).feed(SSEEvent(data, b"message_start"))


def test_nothing_after_message_stop_counts():
    raw = frames(text_stream("x")) + frames([*text_block(1, "late")]) + [frame(error_event())]
    chunks, translator = run(raw)
    assert chunks == run(frames(text_stream("x")))[0] and translator.complete


# -- the translated source ------------------------------------------------------------------


class Upstream:
    def __init__(self, reactor=None) -> None:
        self.tcp = RecordingTCP()
        self.response = FakeResponse(TransportProxyProducer(self.tcp))  # as Agent wraps it
        self.source = TranslatedSSESource(
            self.response, AnthropicStreamTranslator(CREATED), reactor=reactor
        )
        self.sink = RecordingSink()
        self.source.start(self.sink)
        self.protocol = self.response.protocol

    def send(self, events):
        for piece in frames(events):
            self.protocol.dataReceived(piece)

    def end(self, exc):
        self.protocol.connectionLost(Failure(exc))

    @property
    def chunks(self):
        return [json.loads(c) for c in self.sink.chunks]


def test_source_ends_clean_at_message_stop_then_the_body_drains():
    up = Upstream()
    up.send(text_stream("hi"))
    assert len(up.chunks) == 4 and up.sink.ends == [True]  # at once, as at [DONE]
    up.end(ResponseDone())
    assert up.sink.ends == [True] and "abort" not in up.tcp.calls


def test_source_ends_at_message_stop_even_if_the_body_stays_open():
    """One end-of-stream rule for every dialect (issue 12): a translated stream
    used to wait for the body to end after message_stop, so an upstream that
    kept it open had the stream cut by the idle timeout without [DONE]."""
    clock = Clock()
    up = Upstream(clock)
    up.send(text_stream("hi"))
    assert up.sink.ends == [True]
    clock.advance(up.source.drain_timeout)
    clock.advance(0)  # the close comes one turn later (BodyCloser)
    assert "abort" in up.tcp.calls  # the open body is dropped after the drain


@pytest.mark.parametrize("exc", [PotentialDataLoss(), ConnectionLost(), ConnectionDone()])
def test_source_is_clean_however_the_connection_ends_after_message_stop(exc):
    up = Upstream()
    up.send(text_stream("hi"))
    up.end(exc)
    assert up.sink.ends == [True]


def test_source_body_end_before_message_stop_is_a_cut():
    up = Upstream()
    up.send([message_start(), *text_block(0, "partial")])
    up.end(ResponseDone())
    assert up.sink.ends == [False] and len(up.chunks) == 2


@pytest.mark.parametrize("exc", [ConnectionLost(), ResponseFailed([Failure(ConnectionLost())])])
def test_source_connection_lost_mid_stream_is_a_cut(exc):
    up = Upstream()
    up.send([message_start()])
    up.end(exc)
    assert up.sink.ends == [False]


def test_source_empty_body_is_a_clean_empty_stream():
    up = Upstream()
    up.send([PING])
    up.end(ResponseDone())
    assert up.sink.ends == [True] and up.chunks == []


def test_source_error_event_aborts_upstream_and_ends_unclean_once():
    up = Upstream()
    up.send([message_start(), *text_block(0, "a"), error_event(), *message_end()])
    assert up.sink.ends == [False] and "abort" in up.tcp.calls
    assert len(up.chunks) == 2  # nothing after the error
    up.end(ConnectionLost())
    assert up.sink.ends == [False]  # reported once


def test_source_malformed_event_aborts_upstream():
    up = Upstream()
    up.protocol.dataReceived(b"event: message_start\ndata: {broken\n\n")
    assert up.sink.ends == [False] and "abort" in up.tcp.calls and up.chunks == []


def test_source_pause_resume_cancel_reach_the_transport():
    up = Upstream()
    up.source.pause()
    up.source.resume()
    up.source.cancel()
    assert up.tcp.calls == ["pause", "resume", "abort"]
    up.send(text_stream("late"))
    up.end(ConnectionLost())
    assert up.sink.log == []  # a cancelled source reports nothing


def test_source_stops_feeding_when_the_sink_cancels_it_mid_read():
    up = Upstream()
    up.sink.on_chunk = lambda data: up.source.cancel()
    up.protocol.dataReceived(b"".join(frames(text_stream("a", "b"))))
    assert len(up.sink.chunks) == 1 and "abort" in up.tcp.calls
