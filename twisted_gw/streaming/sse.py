"""Incremental Server-Sent Events parser (the WHATWG event-stream format).

Fed whatever TCP delivers: an event split across reads, many events in one
read, CRLF / LF / CR line ends (a CR at the end of one read and the LF at the
start of the next are one line end), comment and keep-alive lines, multi-line
``data`` (joined with ``\\n``), ``field:value`` with or without the one
optional space. Pure and byte-based: no decoding of what is only relayed.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. ``data`` is the raw bytes of its data lines."""

    data: bytes
    event: bytes = b""
    id: bytes | None = None


class SSEParser:
    """Turns a byte stream into SSEEvents; keep one per stream."""

    __slots__ = ("_bom", "_buffer", "_data", "_event", "_has_data", "_id", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._has_data = False
        self._event = b""
        self._id: bytes | None = None
        self._skip_lf = False  # the last read ended with CR: a leading LF is its pair
        self._bom = True  # a UTF-8 BOM may open the stream; the spec drops it

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completed (maybe none)."""
        if not chunk:
            return []
        if self._bom:
            head = self._buffer + chunk
            if len(head) < 3 and _BOM.startswith(head):
                self._buffer = head  # too short to tell yet
                return []
            self._bom = False
            self._buffer = b""
            chunk = head[3:] if head.startswith(_BOM) else head
            if not chunk:
                return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SSEEvent] = []
        start = 0
        end = len(buffer)
        lf = -1
        while start < end:
            if lf < start:  # searched again only once passed: CR-only streams stay linear
                lf = buffer.find(b"\n", start)
                if lf < 0:
                    lf = end  # none in this buffer
            cr = buffer.find(b"\r", start, lf)
            if lf == end and cr < 0:
                break  # no complete line yet
            if cr >= 0:
                line_end, next_start = cr, cr + 1
                if next_start < end:
                    if buffer[next_start] == 10:  # "\r\n"
                        next_start += 1
                else:
                    self._skip_lf = True  # maybe "\r" + "\n" split across reads
            else:
                line_end, next_start = lf, lf + 1
            self._line(buffer[start:line_end], events)
            start = next_start
        self._buffer = buffer[start:]
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:  # blank line: dispatch
            if self._has_data:
                events.append(SSEEvent(b"\n".join(self._data), self._event, self._id))
            self._data = []
            self._has_data = False
            self._event = b""
            return
        if line[0] == 58:  # ":" comment / keep-alive
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
            self._has_data = True
        elif field == b"event":
            self._event = value
        elif field == b"id" and b"\x00" not in value:
            self._id = value
        # "retry" and unknown fields are ignored, as the spec says

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished line or event are buffered."""
        return bool(self._buffer) or self._has_data
