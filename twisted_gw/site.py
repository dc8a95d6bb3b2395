"""The twisted.web Site and Request both listeners use.

- The request refuses bodies over ``max_body_bytes`` **[beyond]**: twisted.web
  buffers the whole body before dispatch, so without a bound a client could
  make the gateway store gigabytes. It stops storing at the limit and marks
  itself, and the route answers 413.
- The site does not parse form bodies (every JSON POST would otherwise run
  its Content-Type through the stdlib ``email`` parser, ~80 us a request) and
  writes no twisted.web access log line: the gateway's own access-log hook
  writes one line per request, without the query string (where a key may be).
"""

from __future__ import annotations

from twisted.web.server import Request, Site


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


class GatewaySite(Site):
    """A Site for the gateway's Klein resources; see the module docstring."""

    noisy = False
    displayTracebacks = False

    def __init__(
        self,
        resource: object,
        max_body_bytes: int,
        header_timeout: float = 30.0,
        max_connections: int = 4096,
        reactor: object = None,
    ) -> None:
        super().__init__(
            resource,
            requestFactory=limited_request_factory(max_body_bytes),
            parsePOSTFormSubmission=False,
            reactor=reactor,
        )
        self.header_timeout = header_timeout
        self.max_connections = max_connections

    def log(self, request: object) -> None:
        """No twisted.web access log (see the module docstring)."""
