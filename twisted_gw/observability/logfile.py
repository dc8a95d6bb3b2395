"""The console script's log observer: twisted's text format, one write a turn.

``twisted-gw`` logs to stdout. twisted.logger's ``textFileLogObserver``
formats each event's time from scratch (a time zone lookup, a ``datetime``,
``strftime``) and writes and flushes each line on its own: under load, the
access log alone was ~40 us of CPU per request (a formatted time and a
``write`` system call per line; bench/, issue 15). This observer writes the
same bytes, but

- formats a time once per second (the format has no sub-second field),
- formats an event whose format has only plain ``{name}`` fields (the
  access line's ``access {line}``, most of the gateway's own) from its
  format parsed once, instead of through ``string.Formatter`` and
  twisted.logger's call mapping on every event (anything else, a
  traceback, a flattened event, a missing field, goes to twisted.logger's
  own formatting), and
- collects the lines of one reactor turn and writes them with one ``write``
  and ``flush`` at the turn's end (``callLater(0)``), so ``tail -f`` still
  sees a line within the turn that logged it.

Before the reactor runs and after it stops (start-up and shutdown lines, a
start-up failure) each line is written at once, and what is pending when the
reactor shuts down is written then, so nothing is lost or reordered.
twistd keeps its own observers (``--logfile``, ``--syslog``).
"""

from __future__ import annotations

from string import Formatter
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.util import untilConcludes
from zope.interface import implementer

#: at most this many distinct formats are kept parsed (formats are the
#: code's literals: a few dozen; a bound all the same)
_KNOWN_FORMATS = 512

#: a parsed format: (literal text, field name or None) pairs
_Parsed = tuple[tuple[str, str | None], ...]


def _parse(fmt: str) -> _Parsed | None:
    """``fmt`` as pairs of literal text and plain field names, or None when
    a field is anything but a plain name (a spec, a conversion, an index, an
    attribute, twisted.logger's ``name()`` call, an auto-numbered ``{}``)."""
    try:
        parts = list(Formatter().parse(fmt))
    except ValueError:  # unbalanced braces: twisted.logger says it cannot format it
        return None
    for _, name, spec, conversion in parts:
        if name is not None and (not name.isidentifier() or spec or conversion is not None):
            return None
    return tuple((literal, name) for literal, name, _, _ in parts)


@implementer(ILogObserver)
class TurnBufferedLogObserver:
    """``textFileLogObserver(out)``'s output, written once per reactor turn."""

    def __init__(self, out: IO[str], reactor: Any, time_format: str = timeFormatRFC3339) -> None:
        self._out = out
        self._reactor = reactor
        self._time_format = time_format
        self._pending: list[str] = []
        self._flush_call: Any = None
        self._second: int | None = None
        self._stamp = "-"
        self._formats: dict[str, _Parsed | None] = {}
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def _time(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = formatTime(second, self._time_format)
        return self._stamp

    def _text(self, event: LogEvent) -> str | None:
        """formatEventAsClassicLogText(event), from the format parsed once when
        it has only plain fields; None when twisted.logger is to format it."""
        fmt = event.get("log_format")
        if (
            type(fmt) is not str
            or "log_flattened" in event
            or "log_failure" in event
            or "log_system" in event
        ):
            return None
        formats = self._formats
        try:
            parsed = formats[fmt]
        except KeyError:
            if len(formats) >= _KNOWN_FORMATS:
                formats.clear()
            parsed = formats[fmt] = _parse(fmt)
        if parsed is None:
            return None
        pieces = []
        try:
            for literal, name in parsed:
                pieces.append(literal)
                if name is not None:
                    pieces.append(format(event[name], ""))
        except Exception:  # noqa: BLE001 - a missing field, a value that cannot format
            return None  # twisted.logger writes its "Unable to format event" line
        text = "".join(pieces)
        if not text:
            return ""
        level = event.get("log_level")
        system = "{}#{}".format(
            event.get("log_namespace", "-"), "-" if level is None else level.name
        )
        line = f"{self._time(event.get('log_time'))} [{system}] {text}"
        return line.replace("\n", "\n\t") + "\n"

    def __call__(self, event: LogEvent) -> None:
        text = self._text(event)
        if text is None:
            text = formatEventAsClassicLogText(event, formatTime=self._time)
        if not text:
            return
        self._pending.append(text)
        if self._flush_call is None:
            if self._reactor.running:
                self._flush_call = self._reactor.callLater(0, self.flush)
            else:
                self.flush()

    def flush(self) -> None:
        """Write what is pending now."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        untilConcludes(self._out.write, text)
        untilConcludes(self._out.flush)
