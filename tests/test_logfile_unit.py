"""The console script's log observer writes textFileLogObserver's bytes, once a turn."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, textFileLogObserver
from twisted.python.failure import Failure

from twisted_gw.observability.logfile import TurnBufferedLogObserver


class Reactor(Clock):
    """A Clock that says whether it runs and keeps its shutdown triggers."""

    running = True

    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[tuple[str, str, Any]] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))


class CountingIO(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def flush(self) -> None:
        self.flushes += 1


def events() -> list[dict]:
    try:
        raise ZeroDivisionError("for a traceback")
    except ZeroDivisionError:
        failure = Failure()
    base = {"log_time": 1764640000.25, "log_level": LogLevel.info}
    return [
        {**base, "log_format": "access {line}", "line": "rid=1 status=200", "log_namespace": "a.b"},
        {**base, "log_format": "second {n}", "n": 2, "log_namespace": "a.b"},
        {**base, "log_time": 1764640001.9, "log_format": "next second", "log_system": "sys"},
        {**base, "log_format": "no time", "log_time": None, "log_namespace": "x"},
        {**base, "log_format": "it broke", "log_failure": failure, "log_namespace": "x"},
        {**base, "log_namespace": "x"},  # no format: no line
        # what the observer formats itself must still be twisted.logger's text
        {**base, "log_format": "{a} and {b}: {{not a field}}", "a": 1.5, "b": None},
        {**base, "log_format": "two\nlines {v}", "v": "x\ny", "log_namespace": "n"},
        {**base, "log_format": "{empty}", "empty": ""},  # no text: no line
        {**base, "log_format": "", "log_namespace": "x"},
        {"log_format": "no level, no namespace, no time"},
        {**base, "log_format": "{missing}", "log_namespace": "x"},
        {
            **base,
            "log_format": "{a!r} {b:>4} {c()} {d.real} {e[0]}",
            "a": "q",
            "b": 7,
            "c": lambda: "called",
            "d": 3,
            "e": [9],
        },
        {**base, "log_format": "{}", "log_namespace": "x"},
        {**base, "log_format": "unbalanced {", "log_namespace": "x"},
        {**base, "log_format": b"bytes {n}", "n": 1},
        {**base, "log_format": "{v}", "v": _Unformattable(), "log_namespace": "x"},
        {**base, "log_format": "sys {n}", "n": 1, "log_system": 42},
    ]


class _Unformattable:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("no")


def test_it_writes_the_bytes_of_twisted_s_text_observer():
    reference, ours = io.StringIO(), io.StringIO()
    stock = textFileLogObserver(reference)
    reactor = Reactor()
    observer = TurnBufferedLogObserver(ours, reactor)
    for event in events():
        stock(dict(event))
        observer(dict(event))
    reactor.advance(0)
    assert ours.getvalue() == reference.getvalue()
    assert "access rid=1 status=200" in ours.getvalue()


def test_a_turn_s_lines_go_out_in_one_write_at_the_turn_s_end():
    out = CountingIO()
    reactor = Reactor()
    observer = TurnBufferedLogObserver(out, reactor)
    for event in events()[:3]:
        observer(event)
    assert out.getvalue() == ""  # still in the turn that logged them
    reactor.advance(0)
    assert out.getvalue().count("\n") == 3
    assert (out.writes, out.flushes) == (1, 1)


def test_before_the_reactor_runs_and_at_shutdown_nothing_waits():
    out = CountingIO()
    reactor = Reactor()
    reactor.running = False
    observer = TurnBufferedLogObserver(out, reactor)
    observer(events()[0])
    assert out.getvalue().endswith("rid=1 status=200\n")  # at once
    reactor.running = True
    observer(events()[1])
    assert "second 2" not in out.getvalue()
    [(phase, event, flush)] = reactor.triggers
    assert (phase, event) == ("after", "shutdown")
    flush()  # the reactor stopped before the turn's end
    assert out.getvalue().endswith("second 2\n")
    assert not reactor.getDelayedCalls()  # the pending flush was cancelled
