"""A test-only hook, loaded through the config file's ``hooks:`` list, never
shipped as a default: it logs every finalize call with a per-request count so
black-box tests can assert that finalize ran exactly once on every path."""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.hooks.interfaces import IHook

log = Logger()

MARK = "finalize-count"


@implementer(IHook)
class FinalizeCounter:
    name = "finalize_counter"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def pre_call(self, ctx: Any) -> None:
        return None

    def post_call(self, ctx: Any) -> None:
        pass

    def finalize(self, ctx: Any) -> None:
        self.calls[ctx.request_id] += 1
        log.info(
            MARK + " rid={rid} n={n} end={end} status={status} chunks_usage={usage}",
            rid=ctx.request_id,
            n=self.calls[ctx.request_id],
            end=ctx.end_reason,
            status=ctx.status,
            usage=(ctx.usage or {}).get("total_tokens", 0),
        )
