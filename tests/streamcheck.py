"""Helpers for streaming black-box tests: reading the test-only finalize
counter's lines out of a gateway's log, and building upstream SSE events."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import reactor, task

from tests.support.finalize_counter import MARK

_LINE = re.compile(MARK + r" rid=(\S+) n=(\d+) end=(\S+) status=(\S+) chunks_usage=(\d+)")


def finalize_records(process: Any) -> dict[str, list[tuple[int, str, str, int]]]:
    """rid -> [(n, end, status, total_tokens), ...] for every finalize logged."""
    records: dict[str, list[tuple[int, str, str, int]]] = {}
    for rid, n, end, status, usage in _LINE.findall(process.stdout):
        records.setdefault(rid, []).append((int(n), end, status, int(usage)))
    return records


async def wait_finalized(process: Any, rid: str, timeout: float = 5.0) -> tuple[str, str, int]:
    """Wait until ``rid`` was finalized; assert it was exactly once; (end, status, tokens).

    Polls the log of another process (nothing here can be awaited directly).
    It waits an extra 100 ms after the first line, so a second finalize
    would be seen too."""
    waited = 0.0
    while rid not in finalize_records(process):
        assert waited < timeout, f"request {rid} was never finalized"
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02
    await task.deferLater(reactor, 0.1, lambda: None)
    records = finalize_records(process)[rid]
    assert [n for n, *_ in records] == [1], f"finalize ran {len(records)} times for {rid}"
    _, end, status, tokens = records[0]
    return end, status, tokens


async def wait_new_finalized(
    process: Any, before: set[str], timeout: float = 5.0
) -> tuple[str, tuple[str, str, int]]:
    """For a request whose id the client never saw: the one new rid finalized."""
    waited = 0.0
    while not set(finalize_records(process)) - before:
        assert waited < timeout, "no request was finalized"
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02
    (rid,) = set(finalize_records(process)) - before
    return rid, await wait_finalized(process, rid, timeout)


def no_unhandled_errors(process: Any) -> None:
    output = process.output
    assert "Unhandled error in Deferred" not in output
    assert "Unhandled Error" not in output
    assert "Traceback" not in output


def counted_gateway(tmp_path_factory: Any, name: str, upstream_timeout: float | None = None):
    """Body of a module fixture (``yield from`` it): a real gateway with the
    test-only FinalizeCounter hook; at teardown its log must hold no unhandled
    error."""
    from tests.conftest import start_gateway

    extra: dict[str, Any] = {"hooks": ["tests.support.finalize_counter.FinalizeCounter"]}
    if upstream_timeout is not None:
        extra["server"] = {"proxy": {"upstream_timeout": upstream_timeout}}
    gateway = start_gateway(tmp_path_factory.mktemp(name), extra=extra)
    yield gateway
    gateway.process.stop()
    no_unhandled_errors(gateway.process)
