"""A twisted.web Request that refuses bodies over ``max_body_bytes`` **[beyond]**.

twisted.web buffers the whole body before dispatch; without a bound a client
could make the gateway store gigabytes. This request stops storing at the
limit and marks itself, and the route answers 413.
"""

from __future__ import annotations

from twisted.web.server import Request


class LimitedRequest(Request):
    """Request with a body-size bound; see :func:`limited_request_factory`."""

    max_body_bytes = 32 * 1024 * 1024
    body_too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_bytes:
            self.body_too_large = True
            length = 0  # don't allocate a spool file for what we will refuse
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        if self.content.tell() + len(data) > self.max_body_bytes:
            self.body_too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


def limited_request_factory(max_body_bytes: int) -> type:
    """A LimitedRequest subclass with its own bound (one per listener)."""
    return type("BoundedRequest", (LimitedRequest,), {"max_body_bytes": max_body_bytes})
