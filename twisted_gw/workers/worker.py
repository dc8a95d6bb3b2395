"""One worker process: ``python -m twisted_gw.workers.worker``, started by the supervisor.

It runs the very gateway a single process runs (:func:`twisted_gw.service.build`),
with what the supervisor hands it through its environment: the listening
sockets as inherited file descriptors, the unix socket of the shared state
(:mod:`twisted_gw.workers.shared`) and the metrics directory. It stops the
way one process stops (SIGTERM/SIGINT: the reactor stops and the gateway's
normal ``stopService`` drains it), and on its own when the supervisor goes
away, so no worker outlives its gateway.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from dataclasses import dataclass
from typing import Any

#: the environment a worker is started with
ENV_ID = "TWISTED_GW_WORKER"
ENV_CONFIG = "TWISTED_GW_WORKER_CONFIG"
ENV_FDS = "TWISTED_GW_WORKER_FDS"  # "Proxy=3,Admin=4"
ENV_SHARED = "TWISTED_GW_WORKER_SHARED"  # the supervisor's AMP unix socket
ENV_METRICS = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import


@dataclass(frozen=True)
class WorkerSetup:
    """What :func:`twisted_gw.service.build` needs to know of a worker."""

    id: int
    #: listener name ("Proxy", "Admin") -> the inherited listening socket's fd
    fds: dict[str, int]
    #: the AMP connection to the supervisor's shared state
    amp: Any
    metrics_dir: str | None

    def fail(self, reactor: Any, message: str) -> None:
        """Start-up failed (a StartupGate's ``exit``): the supervisor says
        ``message`` as the gateway's last line, and this worker exits 1."""
        from twisted_gw.service import exit_while_running
        from twisted_gw.workers.shared import Failed

        d = self.amp.callRemote(Failed, worker=self.id, message=message)
        d.addBoth(lambda _: exit_while_running(reactor, message, quiet=True))


class LineAtomicOut:
    """The stdout every worker shares, written so no line is cut by another's.

    A worker writes a reactor turn's log lines in one ``write``. When stdout
    is a pipe (``twisted-gw | tee``, a service manager), only writes of up to
    PIPE_BUF bytes are atomic: a longer one from one worker can be split by
    another worker's and cut a line in two. So each write goes out in pieces
    of whole lines of at most PIPE_BUF bytes (a longer single line alone)."""

    LIMIT = getattr(select, "PIPE_BUF", 4096)
    #: characters that are at most LIMIT bytes however they encode (UTF-8 with
    #: backslashreplace: 6 bytes at most, a lone surrogate's "\udc80")
    SHORT = LIMIT // 6

    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, text: str) -> None:
        # a turn's lines, nearly always: one piece as it is, nothing split or
        # measured line by line (that cost a worker ~3 us a request)
        if len(text) <= self.SHORT or len(text.encode("utf-8", "backslashreplace")) <= self.LIMIT:
            self._send(text)
            return
        piece: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            length = len(line.encode("utf-8", "backslashreplace"))
            if piece and size + length > self.LIMIT:
                self._send("".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += length
        if piece:
            self._send("".join(piece))

    def _send(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()


def parse_fds(text: str) -> dict[str, int]:
    """``"Proxy=3,Admin=4"`` -> ``{"Proxy": 3, "Admin": 4}``."""
    fds = {}
    for item in filter(None, text.split(",")):
        name, _, fd = item.partition("=")
        fds[name] = int(fd)
    return fds


async def serve(reactor: Any) -> None:
    """Connect to the supervisor, build and start the gateway, say when it serves."""
    from twisted.internet.endpoints import UNIXClientEndpoint
    from twisted.internet.error import ConnectionClosed
    from twisted.internet.protocol import Factory
    from twisted.logger import Logger

    from twisted_gw.config.embedded import StoreFileError
    from twisted_gw.config.file import ConfigError, load_config
    from twisted_gw.config.interfaces import StoreError
    from twisted_gw.service import build
    from twisted_gw.workers.shared import Ready, WorkerAMP

    log = Logger(namespace="twisted_gw.workers")
    worker_id = int(os.environ[ENV_ID])
    leftovers = os.path.dirname(os.environ[ENV_SHARED])
    factory = Factory.forProtocol(lambda: WorkerAMP(reactor, worker_id, leftovers))
    factory.noisy = False
    protocol = await UNIXClientEndpoint(reactor, os.environ[ENV_SHARED]).connect(factory)
    setup = WorkerSetup(
        worker_id,
        parse_fds(os.environ.get(ENV_FDS, "")),
        protocol,
        os.environ.get(ENV_METRICS) or None,
    )
    try:
        config = load_config(os.environ.get(ENV_CONFIG) or None)
        gateway = build(config, reactor, setup)
    except (ConfigError, StoreFileError) as e:
        setup.fail(reactor, str(e))
        return
    gateway.privilegedStartService()
    gateway.startService()
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stopService)
    if gateway.shutdown is not None:  # drain on the first signal, cut on the next
        gateway.shutdown.take_signals()
    try:
        await gateway.store.when_loaded()
    except StoreError:
        return  # the store gave up: its StartupGate reports it (WorkerSetup.fail)
    log.info("worker {id} (pid {pid}) serving", id=worker_id, pid=os.getpid())
    try:
        await protocol.callRemote(Ready, worker=worker_id)
    except ConnectionClosed:
        pass  # stopping already (a signal right after start), or the supervisor is gone


def main() -> None:
    """The worker's entry point (its own process group: a terminal's Ctrl-C
    reaches the supervisor, which forwards it once, not twice)."""
    os.setpgrp()
    # until the reactor installs its handlers: a signal ends the worker quietly
    # (the supervisor forwards them, while this worker may still be importing)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from twisted_gw.reactor import install_if_none

    install_if_none()  # the reactor one process runs on
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner

    from twisted_gw.observability.logfile import TurnBufferedLogObserver
    from twisted_gw.service import exit_while_running

    # the console script's log format, so a worker's lines read as one process's
    observer = TurnBufferedLogObserver(LineAtomicOut(sys.stdout), reactor)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    stopping: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)

    def failed(failure: Any) -> None:
        if stopping:  # a start cut short by a stop is a stop, not a failure
            return
        exit_while_running(reactor, f"worker failed: {failure.getErrorMessage()}")

    def start() -> None:
        defer.Deferred.fromCoroutine(serve(reactor)).addErrback(failed)

    reactor.callWhenRunning(start)
    reactor.run()


if __name__ == "__main__":
    main()
