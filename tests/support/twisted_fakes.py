"""Doubles of Twisted's own objects, shared by the in-memory unit tests."""

from __future__ import annotations

from twisted.internet.testing import StringTransport


class RecordingTCP(StringTransport):
    """A TCP transport double that records the producer and abort calls made of it.

    ``calls`` holds ``"pause"``, ``"resume"``, ``"stop"`` and ``"abort"`` in the
    order they came; each is passed on to ``StringTransport``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.calls.append("resume")
        super().resumeProducing()

    def stopProducing(self) -> None:
        self.calls.append("stop")
        super().stopProducing()

    def abortConnection(self) -> None:
        self.calls.append("abort")
        super().abortConnection()
