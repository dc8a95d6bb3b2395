"""Incremental Server-Sent Events parser (the WHATWG event-stream format).

Fed whatever TCP delivers: an event split across reads, many events in one
read, CRLF / LF / CR line ends (a CR at the end of one read and the LF at the
start of the next are one line end), comment and keep-alive lines, multi-line
``data`` (joined with ``\\n``), ``field:value`` with or without the one
optional space. Pure and byte-based: no decoding of what is only relayed.

Hostile input is bounded (issue 11): the work is linear in the bytes fed
whatever the chunking (only the new read is searched for line ends, and a
line that spans reads is joined once, when it ends), and no line nor event
may grow past ``max_event_bytes``.
"""

from __future__ import annotations

from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"

# A longer feed is parsed in pieces of at most this size, so one huge read of
# tiny lines never turns into millions of line objects at once.
_PIECE = 64 * 1024

# A line may be as long as the longest data line whose value fits the bound.
_FIELD = len(b"data: ")

# SSEEvent's own __new__ is Python code around this C call: the parser calls
# it directly, once per event.
_new = tuple.__new__

# A single byte is looked for as an int (``13 in chunk``, a CR): ``b"\r" in
# chunk`` first tries its needle as an int, and the TypeError raised and
# cleared inside costs five times the search itself.


class SSEEvent(NamedTuple):
    """One dispatched event. ``data`` is the raw bytes of its data lines.

    A named tuple: one is made per event of every stream, and a tuple is
    built in C (a frozen dataclass set each field through object.__setattr__;
    the parser skips even the named tuple's Python ``__new__``)."""

    data: bytes
    event: bytes = b""
    id: bytes | None = None


class EventTooLarge(ValueError):
    """An upstream line or event grew past the parser's ``max_event_bytes``.

    ``events`` are the events the failing ``feed`` call completed before it
    met the oversized one: they are whole, in order, and may still be relayed.
    """

    def __init__(self, limit: int, events: list[SSEEvent] | None = None) -> None:
        super().__init__(f"upstream event exceeds {limit} bytes")
        self.limit = limit
        self.events: list[SSEEvent] = events if events is not None else []


class SSEParser:
    """Turns a byte stream into SSEEvents; keep one per stream.

    Bounded by ``max_event_bytes`` (1 MiB by default): ``feed`` raises
    :class:`EventTooLarge` as soon as the data of one not yet dispatched
    event (its data lines joined with ``\\n``, i.e. the size
    ``SSEEvent.data`` would have) is longer than that, or one line (ended or
    not yet ended, its line end not counted) is longer than ``data: `` plus
    that (the longest data line whose value still fits). The outcome does not
    depend on the chunking: a stream is refused or not however it was split
    into reads (only which feed raises does).
    Events completed earlier in the same ``feed`` call are not lost: they
    ride on the exception as ``exc.events``. After raising the parser is
    done: it drops what it buffered and every later ``feed`` raises again
    (with no events).
    """

    __slots__ = (
        "_bom",
        "_data",
        "_event",
        "_failed",
        "_id",
        "_limit",
        "_line_limit",
        "_pending",
        "_room",
        "_skip_lf",
    )

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        if max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be at least 1, got {max_event_bytes}")
        self._limit = max_event_bytes
        self._line_limit = max_event_bytes + _FIELD
        # the unfinished line, without a line end: a bytearray, so a line that
        # comes a byte per read costs its bytes and not an object per read
        self._pending = bytearray()
        self._data: list[bytes] = []  # data lines of the event being read
        self._room = max_event_bytes + 1  # what its data may still grow by, one LF per line
        self._event = b""
        self._id: bytes | None = None
        self._skip_lf = False  # the last read ended with CR: a leading LF is its pair
        self._bom = True  # a UTF-8 BOM may open the stream; the spec drops it
        self._failed = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completed (maybe none).

        Raises :class:`EventTooLarge` (see the class docstring)."""
        if self._failed:
            raise EventTooLarge(self._limit)
        # The usual read of an OpenAI-style upstream, which sends each event
        # as one HTTP chunk: exactly one event of one data line, and nothing
        # buffered before it. Its value is the bytes between "data: " and
        # "\n\n"; what the general path would make of it, without the lines.
        if (
            chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
            and not self._pending
            and not self._data
            and chunk.find(b"\n", 6) == len(chunk) - 2
            and 13 not in chunk  # no CR
            and len(chunk) - 8 <= self._limit
        ):
            self._bom = self._skip_lf = False  # no BOM, no LF to pair: the read opens with "d"
            event = _new(SSEEvent, (chunk[6:-2], self._event, self._id))
            self._event = b""
            return [event]
        events: list[SSEEvent] = []
        try:
            size = len(chunk)
            if size <= _PIECE:
                if size:
                    self._feed(chunk, events)
            else:
                for start in range(0, size, _PIECE):
                    self._feed(chunk[start : start + _PIECE], events)
        except EventTooLarge as exc:
            self._failed = True
            self._pending = bytearray()
            self._data = []
            exc.events = events
            raise
        return events

    def _feed(self, chunk: bytes, events: list[SSEEvent]) -> None:
        if self._bom:
            if self._pending:  # at most two bytes that may open a BOM
                chunk = bytes(self._pending) + chunk
                self._pending.clear()
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._pending += chunk  # too short to tell yet
                return
            self._bom = False
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
                if not chunk:
                    return
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:  # "\n"
                chunk = chunk[1:]
                if not chunk:
                    return
        if 13 in chunk:  # a CR
            # a CR ending this read may pair with an LF opening the next one
            self._skip_lf = chunk[-1] == 13
            # CRLF, then a lone CR, is the same line end as LF: no line holds either
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        tail = lines.pop()  # after the last line end: the start of an unfinished line
        limit = self._line_limit
        if lines:
            pending = self._pending
            if pending:
                first = lines[0]
                if len(pending) + len(first) > limit:
                    raise EventTooLarge(self._limit)
                pending += first
                lines[0] = bytes(pending)
                pending.clear()
            if len(chunk) > limit:  # only then can a line inside this chunk be too long
                for line in lines:
                    if len(line) > limit:
                        raise EventTooLarge(self._limit)
                    self._line(line, events)
            else:
                line_ = self._line
                for line in lines:
                    line_(line, events)
        if tail:
            pending = self._pending
            if len(pending) + len(tail) > limit:
                raise EventTooLarge(self._limit)
            pending += tail

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:  # blank line: dispatch
            if self._data:
                events.append(_new(SSEEvent, (b"\n".join(self._data), self._event, self._id)))
                self._data = []
                self._room = self._limit + 1
            self._event = b""
            return
        if line[0] == 58:  # ":" comment / keep-alive
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            room = self._room - len(value) - 1
            if room < 0:
                raise EventTooLarge(self._limit)
            self._room = room
            self._data.append(value)
        elif field == b"event":
            self._event = value
        elif field == b"id" and b"\x00" not in value:
            self._id = value
        # "retry" and unknown fields are ignored, as the spec says

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished line or event are buffered."""
        return bool(self._pending) or bool(self._data)
