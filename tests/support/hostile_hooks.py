"""Test-only hooks (loaded through the config's ``hooks:`` list) that put a
value into a request which the request path cannot handle, the way an
out-of-range number once slipped in through the Admin API: the request
path's last-resort guard must still answer JSON and finalize once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from zope.interface import implementer

from twisted_gw.hooks.interfaces import IHook


@implementer(IHook)
class OverflowTimeout:
    """Gives models named ``overflow-*`` a timeout no float can hold."""

    name = "overflow_timeout"

    def pre_call(self, ctx: Any) -> None:
        if ctx.model is not None and ctx.model.name.startswith("overflow-"):
            ctx.model = replace(ctx.model, timeout_ms=10**400)

    def post_call(self, ctx: Any) -> None:
        pass

    def finalize(self, ctx: Any) -> None:
        pass
