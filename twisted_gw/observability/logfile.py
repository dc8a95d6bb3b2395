"""The console script's log observer: twisted's text format, one write a turn.

``twisted-gw`` logs to stdout. twisted.logger's ``textFileLogObserver``
formats each event's time from scratch (a time zone lookup, a ``datetime``,
``strftime``) and writes and flushes each line on its own: under load, the
access log alone was ~40 us of CPU per request (a formatted time and a
``write`` system call per line; bench/, issue 15). This observer writes the
same bytes, but

- formats a time once per second (the format has no sub-second field), and
- collects the lines of one reactor turn and writes them with one ``write``
  and ``flush`` at the turn's end (``callLater(0)``), so ``tail -f`` still
  sees a line within the turn that logged it.

Before the reactor runs and after it stops (start-up and shutdown lines, a
start-up failure) each line is written at once, and what is pending when the
reactor shuts down is written then, so nothing is lost or reordered.
twistd keeps its own observers (``--logfile``, ``--syslog``).
"""

from __future__ import annotations

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
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def _time(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = formatTime(second, self._time_format)
        return self._stamp

    def __call__(self, event: LogEvent) -> None:
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
