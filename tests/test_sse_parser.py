"""Unit tests of the incremental SSE parser (twisted_gw.sse).

The expected behaviour is the WHATWG event-stream format ("Server-sent events",
HTML Living Standard, section 9.2.6 "Interpreting an event stream"), byte-based:
lines end with CRLF, LF or a bare CR; a blank line dispatches the event if it
has at least one data line; ``data`` lines are joined with LF; one optional
space after the colon is stripped; comments, ``retry`` and unknown fields are
ignored; the last event ID persists across events; whatever is not terminated
by a blank line when the stream ends is discarded.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twisted_gw.sse import EventTooLarge, SSEEvent, SSEParser


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


# -- a feed that is one whole event (the usual upstream read: one HTTP chunk) ----

_ONE_EVENT_PIECES = st.one_of(
    _TEXT.map(lambda t: b"data: " + t.encode() + b"\n\n"),  # the parser's quick case
    _TEXT.map(lambda t: b"data:" + t.encode() + b"\n\n"),
    _TEXT.map(lambda t: b"data: " + t.encode() + b"\r\n\r\n"),
    _TEXT.map(lambda t: b"data: " + t.encode() + b"\ndata: two\n\n"),
    _NAME.map(lambda n: b"event: " + n.encode() + b"\n"),
    _ID.map(lambda i: b"id: " + i.encode() + b"\n"),
    st.sampled_from(
        [b": ping\r", b"\n", b"\r", b"data: open", b"data: ", b"\xef\xbb\xbf", b"\xef", b"\n\n"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_ONE_EVENT_PIECES, max_size=8))
def test_property_events_fed_one_a_read_parse_like_the_whole(pieces: list[bytes]) -> None:
    """A feed that is exactly ``data: <value>\n\n`` takes a shorter path: it
    must agree with the whole stream whatever came before it (an event name
    or id still to apply, a CR waiting for its LF, a BOM, an open line)."""
    stream = b"".join(pieces)
    assert parse([p for p in pieces if p]) == SSEParser().feed(stream)


def test_an_event_fed_alone_takes_the_name_and_id_fed_before_it() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: delta\nid: 7\n") == []
    assert parser.feed(b"data: one\n\n") == [E(b"one", b"delta", b"7")]
    assert parser.feed(b"data: two\n\n") == [E(b"two", b"", b"7")]  # the id stays, the name not


# -- hostile input: bounded and linear (issue 11) -------------------------------

LIMIT = 64  # max_event_bytes of the bound tests: data of an event <= 64 bytes


def chunks(stream: bytes, size: int) -> list[bytes]:
    """``stream`` cut into pieces of ``size`` bytes (the last maybe shorter)."""
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def parse_until_too_large(
    feeds: Iterable[bytes], parser: SSEParser
) -> tuple[list[SSEEvent], EventTooLarge | None]:
    """All events delivered (returned, or riding on the exception) and the
    exception, if one was raised."""
    events: list[SSEEvent] = []
    for feed in feeds:
        try:
            events.extend(parser.feed(feed))
        except EventTooLarge as exc:
            events.extend(exc.events)
            return events, exc
    return events, None


def test_default_bound_is_one_mib_and_says_so() -> None:
    parser = SSEParser()
    payload = b"x" * (1 << 20)
    assert parser.feed(b"data: " + payload + b"\n\n") == [E(payload)]
    with pytest.raises(EventTooLarge, match="^upstream event exceeds 1048576 bytes$") as info:
        parser.feed(b"data: " + payload + b"x\n\n")
    assert isinstance(info.value, ValueError)
    assert info.value.limit == 1 << 20


def test_max_event_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        SSEParser(max_event_bytes=0)


@pytest.mark.parametrize("size", [1, 7, 64, 10_000], ids=lambda s: f"{s}-byte-feeds")
def test_unfinished_line_of_the_longest_data_line_that_fits_is_kept(size: int) -> None:
    """A line without a line end may hold ``data: `` plus max_event_bytes."""
    parser = SSEParser(max_event_bytes=LIMIT)
    assert parse(chunks(b"data: " + b"x" * LIMIT, size), parser) == []
    assert parser.pending
    assert parser.feed(b"\n\n") == [E(b"x" * LIMIT)]


@pytest.mark.parametrize("size", [1, 7, 64, 10_000], ids=lambda s: f"{s}-byte-feeds")
def test_unfinished_line_one_byte_over_raises(size: int) -> None:
    parser = SSEParser(max_event_bytes=LIMIT)
    events, exc = parse_until_too_large(chunks(b"data: " + b"x" * (LIMIT + 1), size), parser)
    assert exc is not None
    assert str(exc) == "upstream event exceeds 64 bytes"
    assert events == []


def test_comment_line_longer_than_the_line_bound_raises_even_when_ended() -> None:
    """Not only data lines: any line (ended in the same feed or not) is bounded."""
    fits = b":" + b"x" * (LIMIT + 5)  # len("data: ") + LIMIT bytes
    assert SSEParser(max_event_bytes=LIMIT).feed(fits + b"\ndata: a\n\n") == [E(b"a")]
    with pytest.raises(EventTooLarge):
        SSEParser(max_event_bytes=LIMIT).feed(fits + b"x\ndata: a\n\n")


@pytest.mark.parametrize(
    ("values", "too_large"),
    [
        pytest.param([b"x" * 12] * 5, False, id="five-lines-joined-exactly-at-the-limit"),
        pytest.param([b"x" * 12] * 4 + [b"x" * 13], True, id="five-lines-one-byte-over"),
        pytest.param([b""] * 65, False, id="65-empty-lines-are-64-bytes-of-lf"),
        pytest.param([b""] * 66, True, id="66-empty-lines-are-one-byte-over"),
    ],
)
def test_data_of_one_event_is_bounded_joined(values: list[bytes], too_large: bool) -> None:
    """The event's data is measured as dispatched: its lines joined with LF, so
    a flood of empty ``data:`` lines is bounded too."""
    stream = b"".join(b"data: " + value + b"\n" for value in values) + b"\n"
    parser = SSEParser(max_event_bytes=LIMIT)
    if too_large:
        with pytest.raises(EventTooLarge):
            parser.feed(stream)
    else:
        assert parser.feed(stream) == [E(b"\n".join(values))]


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000], ids=lambda s: f"{s}-byte-feeds")
def test_event_split_across_many_feeds_is_bounded_like_one_feed(size: int) -> None:
    head = b"data: first\n\n"
    fits = b"".join(b"data: %s\n" % (b"y" * 12) for _ in range(5)) + b"\n"  # 64 bytes of data
    over = b"data: " + b"z" * 40 + b"\n: ping\ndata: " + b"z" * 24 + b"\n\n"  # 65 bytes
    parser = SSEParser(max_event_bytes=LIMIT)
    events, exc = parse_until_too_large(chunks(head + fits + over + head, size), parser)
    assert exc is not None
    assert events == [E(b"first"), E(b"\n".join([b"y" * 12] * 5))]


def test_events_before_the_oversized_one_ride_on_the_exception() -> None:
    parser = SSEParser(max_event_bytes=LIMIT)
    assert parser.feed(b"data: a\n\ndata: b") == [E(b"a")]
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"\n\ndata: c\n\n: " + b"x" * 100 + b"\ndata: never\n\n")
    assert info.value.events == [E(b"b"), E(b"c")]


def test_parser_is_done_after_raising() -> None:
    parser = SSEParser(max_event_bytes=LIMIT)
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"x" * 200)
    assert not parser.pending  # what it held is dropped
    for later in (b"data: fine\n\n", b""):
        with pytest.raises(EventTooLarge) as info:
            parser.feed(later)
        assert info.value.events == []


def test_cr_and_lf_of_one_line_end_split_by_a_long_feed_cut_internally() -> None:
    """A feed longer than the parser's internal piece is cut where it must: a
    CRLF across that cut is still one line end."""
    for cut in (65535, 65536, 65537, 131072):
        line = b"data: " + b"x" * (cut - 7) + b"\r"  # the CR is the last byte before the cut
        stream = line + b"\ndata: b\r\n\r\n"
        parser = SSEParser(max_event_bytes=1 << 20)
        assert parser.feed(stream) == [E(b"x" * (cut - 7) + b"\nb")], cut


def test_long_line_in_small_feeds_holds_its_bytes_not_an_object_per_feed() -> None:
    """Memory is bounded by the bytes the bound allows, however small the reads."""
    parser = SSEParser()
    feeds = chunks(b"data: " + b"x" * (3 << 20), 256)
    tracemalloc.start()
    try:
        _, exc = parse_until_too_large(feeds, parser)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc is not None
    assert peak < 3 << 20  # 1 MiB of line and its growth slack


def _cpu_seconds_to_parse_one_line(size: int) -> float:
    stream = b"data: " + b"x" * size + b"\n\n"
    feeds = chunks(stream, 4096)
    best = float("inf")
    for _ in range(5):  # the least disturbed of a few runs
        parser = SSEParser(max_event_bytes=size)
        started = time.process_time()
        events = parse(feeds, parser)
        best = min(best, time.process_time() - started)
        assert len(events[0].data) == size
    return best


def test_one_long_line_costs_linear_time_in_its_length() -> None:
    """4x the bytes in 4 KiB reads: about 4x the work (quadratic would be 16x)."""
    small = _cpu_seconds_to_parse_one_line(2 << 20)
    large = _cpu_seconds_to_parse_one_line(8 << 20)
    assert large < 8 * max(small, 1e-4), (small, large)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), generated=event_streams(), limit=st.integers(1, 40))
def test_property_chunking_does_not_change_what_the_bound_refuses(
    data: st.DataObject, generated: tuple[bytes, list[SSEEvent]], limit: int
) -> None:
    """Refused or not, and the events delivered before, whatever the reads."""
    stream, _ = generated
    inner = range(1, len(stream)) if len(stream) > 1 else range(0)
    points = sorted(data.draw(st.sets(st.sampled_from(inner), max_size=8)) if inner else ())

    whole = parse_until_too_large([stream], SSEParser(max_event_bytes=limit))
    split = parse_until_too_large(split_at(stream, points), SSEParser(max_event_bytes=limit))

    assert split[0] == whole[0]
    assert (split[1] is None) == (whole[1] is None)


@pytest.mark.parametrize(
    ("size", "too_large"), [(LIMIT - 1, False), (LIMIT, False), (LIMIT + 1, True)]
)
def test_an_event_fed_alone_is_bounded_like_any_other(size: int, too_large: bool) -> None:
    parser = SSEParser(max_event_bytes=LIMIT)
    feed = b"data: " + b"x" * size + b"\n\n"
    if too_large:
        with pytest.raises(EventTooLarge):
            parser.feed(feed)
    else:
        assert parser.feed(feed) == [E(b"x" * size)]
