"""Unit tests of the incremental SSE parser (twisted_gw.streaming.sse).

The expected behaviour is the WHATWG event-stream format ("Server-sent events",
HTML Living Standard, section 9.2.6 "Interpreting an event stream"), byte-based:
lines end with CRLF, LF or a bare CR; a blank line dispatches the event if it
has at least one data line; ``data`` lines are joined with LF; one optional
space after the colon is stripped; comments, ``retry`` and unknown fields are
ignored; the last event ID persists across events; whatever is not terminated
by a blank line when the stream ends is discarded.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twisted_gw.streaming.sse import SSEEvent, SSEParser


def parse(feeds: Iterable[bytes], parser: SSEParser | None = None) -> list[SSEEvent]:
    """Feed every chunk of ``feeds`` to one parser; all events, in order."""
    parser = parser if parser is not None else SSEParser()
    events: list[SSEEvent] = []
    for feed in feeds:
        events.extend(parser.feed(feed))
    return events


def split_at(stream: bytes, points: Iterable[int]) -> list[bytes]:
    """``stream`` cut at the (sorted, distinct, inner) ``points``."""
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


E = SSEEvent

# (id, stream, expected events) -- the whole stream fed in one piece
CASES = [
    ("single-event", b"data: hello\n\n", [E(b"hello")]),
    (
        "several-events",
        b"data: one\n\ndata: two\n\ndata: three\n\n",
        [E(b"one"), E(b"two"), E(b"three")],
    ),
    ("crlf", b"data: a\r\n\r\ndata: b\r\n\r\n", [E(b"a"), E(b"b")]),
    ("bare-cr", b"data: a\r\rdata: b\r\r", [E(b"a"), E(b"b")]),
    ("mixed-line-ends", b"data: a\r\ndata: b\rdata: c\n\r\n", [E(b"a\nb\nc")]),
    ("cr-then-crlf-is-two-line-ends", b"data: a\r\r\n", [E(b"a")]),
    ("lf-then-cr-is-two-line-ends", b"data: a\n\r", [E(b"a")]),
    ("comment-only", b": keep-alive\n\n", []),
    (
        "comments-and-blank-lines-between-events",
        b": hi\n\ndata: a\n\n\n\n: keep-alive\n\r\n\rdata: b\n\n",
        [E(b"a"), E(b"b")],
    ),
    ("comment-inside-event", b"data: a\n: ping\ndata: b\n\n", [E(b"a\nb")]),
    ("multi-line-data", b"data: line1\ndata: line2\ndata: line3\n\n", [E(b"line1\nline2\nline3")]),
    ("data-without-space", b"data:hello\n\n", [E(b"hello")]),
    ("data-one-space-stripped-only", b"data:  two spaces\n\n", [E(b" two spaces")]),
    ("data-trailing-space-kept", b"data: x \n\n", [E(b"x ")]),
    ("data-tab-not-stripped", b"data:\tx\n\n", [E(b"\tx")]),
    ("data-colon-in-value", b'data: {"a": "b:c"}\n\n', [E(b'{"a": "b:c"}')]),
    ("data-empty-value", b"data:\n\n", [E(b"")]),
    ("data-space-only-value", b"data: \n\n", [E(b"")]),
    ("data-field-without-colon", b"data\n\n", [E(b"")]),
    ("data-without-colon-joins-empty-line", b"data: a\ndata\ndata: b\n\n", [E(b"a\n\nb")]),
    ("data-empty-lines", b"data\ndata\n\n", [E(b"\n")]),
    ("event-field", b"event: update\ndata: x\n\n", [E(b"x", event=b"update")]),
    ("event-without-space", b"event:update\ndata: x\n\n", [E(b"x", event=b"update")]),
    (
        "event-type-reset-after-dispatch",
        b"event: update\ndata: x\n\ndata: y\n\n",
        [E(b"x", event=b"update"), E(b"y")],
    ),
    (
        "event-type-reset-by-undispatched-event",
        b"event: update\n\ndata: y\n\n",
        [E(b"y")],
    ),
    ("id-field", b"id: 42\ndata: x\n\n", [E(b"x", id=b"42")]),
    (
        "id-persists-across-events",
        b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n",
        [E(b"a", id=b"1"), E(b"b", id=b"1"), E(b"c", id=b"2")],
    ),
    ("id-set-by-undispatched-event", b"id: 7\n\ndata: a\n\n", [E(b"a", id=b"7")]),
    (
        "id-empty-value-resets",
        b"id: 1\ndata: a\n\nid\ndata: b\n\n",
        [E(b"a", id=b"1"), E(b"b", id=b"")],
    ),
    (
        "id-with-nul-ignored",
        b"id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n",
        [E(b"a", id=b"1"), E(b"b", id=b"1")],
    ),
    ("retry-ignored", b"retry: 1000\ndata: x\n\n", [E(b"x")]),
    ("retry-only-not-dispatched", b"retry: 1000\n\n", []),
    ("unknown-field-ignored", b"foo: bar\ndata: x\nDATA: y\nData: z\n\n", [E(b"x")]),
    ("field-names-case-sensitive", b"Data: x\nEvent: e\n\n", []),
    ("field-with-space-before-colon", b"data : x\n\n", []),
    ("no-data-not-dispatched", b"event: ping\nid: 3\n\n", []),
    ("unterminated-event-not-dispatched", b"data: a\n\ndata: b\n", [E(b"a")]),
    ("unterminated-line-not-dispatched", b"data: a\n\ndata: b", [E(b"a")]),
    (
        "done-is-a-normal-event",
        b'data: {"x":1}\n\ndata: [DONE]\n\n',
        [E(b'{"x":1}'), E(b"[DONE]")],
    ),
    ("binary-and-utf8-bytes-untouched", b"data: \xc3\xa9\xff\x00\n\n", [E(b"\xc3\xa9\xff\x00")]),
    ("empty-stream", b"", []),
]

CASE_IDS = [case[0] for case in CASES]


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_whole_feed(stream: bytes, expected: list[SSEEvent]) -> None:
    assert parse([stream]) == expected


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_split_at_every_byte_position(stream: bytes, expected: list[SSEEvent]) -> None:
    for point in range(1, len(stream)):
        feeds = [stream[:point], stream[point:]]
        assert parse(feeds) == expected, f"split at {point}: {feeds!r}"


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_one_byte_per_feed(stream: bytes, expected: list[SSEEvent]) -> None:
    assert parse(stream[i : i + 1] for i in range(len(stream))) == expected


def test_split_at_every_pair_of_positions_with_mixed_line_ends() -> None:
    stream = b"data: a\r\n\r\ndata: b\r\rdata: c\n\r\ndata: d\r\n\n"
    expected = [E(b"a"), E(b"b"), E(b"c"), E(b"d")]
    for first in range(1, len(stream)):
        for second in range(first + 1, len(stream)):
            feeds = split_at(stream, [first, second])
            assert parse(feeds) == expected, f"feeds {feeds!r}"


# -- a CR ending one feed and an LF starting the next are ONE line end ---------


@pytest.mark.parametrize(
    ("feeds", "expected"),
    [
        pytest.param([b"data: a\r", b"\ndata: b\r\n\r\n"], [E(b"a\nb")], id="cr|lf-inside-event"),
        pytest.param([b"data: a\r\n\r", b"\n"], [E(b"a")], id="cr|lf-of-blank-line"),
        pytest.param(
            [b"data: a\r\n\r", b"\ndata: b\r\n\r\n"],
            [E(b"a"), E(b"b")],
            id="cr|lf-of-blank-line-then-event",
        ),
        pytest.param(
            [b"data: a\r", b"\n", b"\r", b"\n"],
            [E(b"a")],
            id="cr|lf|cr|lf-one-byte-feeds",
        ),
        pytest.param(
            [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"],
            [E(b"a\nb")],
            id="cr|lf-several-times",
        ),
        pytest.param([b"data: a\r", b"\r"], [E(b"a")], id="cr|cr-is-two-line-ends"),
        pytest.param(
            [b"data: a\r", b"\r", b"\ndata: b\n\n"],
            [E(b"a"), E(b"b")],
            id="cr|cr|lf-blank-line-is-crlf",
        ),
        pytest.param(
            [b"data: a\n\r", b"\ndata: b\n\n"],
            [E(b"a"), E(b"b")],
            id="blank-cr|lf-no-empty-event",
        ),
    ],
)
def test_cr_and_lf_split_across_feeds(feeds: list[bytes], expected: list[SSEEvent]) -> None:
    assert parse(feeds) == expected


def test_cr_at_end_of_feed_dispatches_at_once() -> None:
    """A CR is a complete line end: the event must not wait for the next read."""
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == [E(b"a")]
    assert not parser.pending
    assert parser.feed(b"\n") == []  # the LF pairs with the last CR: no extra blank line
    assert parser.feed(b"data: b\n\n") == [E(b"b")]


def test_lf_only_pairs_with_cr_of_the_directly_preceding_feed() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"data: b\n") == []  # the CR was a complete line end
    assert parser.feed(b"\n") == [E(b"a\nb")]  # this LF is a blank line, not a CR pair


# -- pending -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feeds", "pending"),
    [
        pytest.param([], False, id="fresh"),
        pytest.param([b"data: a\n\n"], False, id="complete-event"),
        pytest.param([b"data: a\n"], True, id="data-line-without-blank-line"),
        pytest.param([b"data: a"], True, id="partial-line"),
        pytest.param([b"da"], True, id="partial-field-name"),
        pytest.param([b"data: a\r"], True, id="data-line-ended-by-cr"),
        pytest.param([b"data: a\r\r"], False, id="event-ended-by-cr-cr"),
        pytest.param([b": keep-alive\n"], False, id="comment"),
        pytest.param([b"\n\n\r\n"], False, id="blank-lines"),
        pytest.param([b"data: a\n", b"\n"], False, id="event-completed-by-next-feed"),
    ],
)
def test_pending(feeds: list[bytes], pending: bool) -> None:
    parser = SSEParser()
    parse(feeds, parser)
    assert parser.pending is pending


def test_unterminated_event_at_end_is_not_dispatched_and_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\ndata: c") == [E(b"a")]
    assert parser.pending
    # ... and completing it later still works
    assert parser.feed(b"\n\n") == [E(b"b\nc")]
    assert not parser.pending


# -- [DONE] and large payloads ------------------------------------------------


def test_done_is_a_normal_event() -> None:
    events = parse([b'data: {"id":"c1"}\n\n', b"data: [DONE]\n\n"])
    assert events[-1] == SSEEvent(b"[DONE]")
    assert events[-1].data == b"[DONE]"
    assert len(events) == 2


def test_large_payload_in_1k_pieces() -> None:
    payload = bytes(range(32, 127)) * (1024 * 1024 // 95 + 1)
    payload = payload[: 1024 * 1024]
    stream = b"data: " + payload + b"\n\ndata: after\n\n"
    parser = SSEParser()
    events: list[SSEEvent] = []
    for start in range(0, len(stream), 1024):
        events.extend(parser.feed(stream[start : start + 1024]))
    assert len(events) == 2
    assert events[0].data == payload
    assert events[1] == E(b"after")
    assert not parser.pending


def test_many_events_in_one_feed() -> None:
    stream = b"".join(b"data: %d\n\n" % i for i in range(10_000))
    assert parse([stream]) == [E(b"%d" % i) for i in range(10_000)]


# -- known deviations from the spec (bugs): pinned, to be fixed ----------------


@pytest.mark.parametrize(
    ("feeds", "expected"),
    [
        pytest.param(
            [b"data: a\r", b"", b"\ndata: b\n\n"],
            [E(b"a\nb")],
            id="empty-feed-inside-event",
        ),
        pytest.param(
            [f for byte in b"data: a\r\ndata: b\r\n\r\n" for f in (bytes([byte]), b"")],
            [E(b"a\nb")],
            id="empty-feed-after-every-byte",
        ),
    ],
)
def test_empty_feed_between_cr_and_lf(feeds: list[bytes], expected: list[SSEEvent]) -> None:
    assert parse(feeds) == expected


@pytest.mark.parametrize(
    "feeds",
    [
        pytest.param([b"\xef\xbb\xbfdata: a\n\n"], id="one-feed"),
        pytest.param([b"\xef", b"\xbb\xbfdata: a\n\n"], id="bom-split"),
    ],
)
def test_leading_bom_is_stripped(feeds: list[bytes]) -> None:
    assert parse(feeds) == [E(b"a")]


def test_only_the_first_bom_could_be_special() -> None:
    """A BOM anywhere but at the very start of the stream is ordinary data."""
    assert parse([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [E(b"a")]


# -- property: any split parses like the whole, and like what was written -------

_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"),
    max_size=12,
)
_NAME = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\r\n"),
    min_size=1,
    max_size=8,
).filter(lambda s: not s.startswith(" "))
_ID = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"),
    max_size=8,
)
_LINE_ENDS = (b"\n", b"\r\n", b"\r")


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A serialized event stream (random line ends per line) and its events."""
    lines: list[bytes] = []
    expected: list[SSEEvent] = []
    last_id: bytes | None = None

    def maybe_comments() -> None:
        for comment in draw(st.lists(_TEXT, max_size=2)):
            lines.append(b":" + comment.encode())
        lines.extend(b"" for _ in range(draw(st.integers(0, 1))))  # keep-alive blanks

    for _ in range(draw(st.integers(0, 5))):
        maybe_comments()
        name = draw(st.none() | _NAME)
        event_id = draw(st.none() | _ID)
        if name is not None:
            lines.append(b"event: " + name.encode())
        if event_id is not None:
            lines.append(b"id: " + event_id.encode())
            last_id = event_id.encode()
        data_lines = [t.encode() for t in draw(st.lists(_TEXT, min_size=1, max_size=4))]
        for value in data_lines:
            if draw(st.booleans()) and not value.startswith(b" "):
                lines.append(b"data:" + value)
            else:
                lines.append(b"data: " + value)
            if draw(st.integers(0, 4)) == 0:
                lines.append(b": between data lines")
        lines.append(b"")  # dispatch
        expected.append(SSEEvent(b"\n".join(data_lines), name.encode() if name else b"", last_id))
    maybe_comments()

    out: list[bytes] = []
    previous_end = b""
    for line in lines:
        end = draw(st.sampled_from(_LINE_ENDS))
        if previous_end == b"\r" and not line and end == b"\n":
            end = b"\r\n"  # "\r" + "" + "\n" would be one CRLF, not two line ends
        out.append(line + end)
        previous_end = end
    return b"".join(out), expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), generated=event_streams())
def test_property_any_split_parses_like_the_whole(
    data: st.DataObject, generated: tuple[bytes, list[SSEEvent]]
) -> None:
    stream, expected = generated
    inner = range(1, len(stream)) if len(stream) > 1 else range(0)
    points = sorted(data.draw(st.sets(st.sampled_from(inner), max_size=8)) if inner else ())
    feeds = split_at(stream, points)

    whole_parser = SSEParser()
    whole = whole_parser.feed(stream)
    split_parser = SSEParser()
    split = parse(feeds, split_parser)

    assert whole == expected
    assert split == expected, f"feeds {feeds!r}"
    assert not whole_parser.pending
    assert not split_parser.pending
