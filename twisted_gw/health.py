"""``GET /healthz`` and ``GET /readyz`` on both listeners (CONTRACT 5.2).

Answered by the site (:class:`twisted_gw.site.LimitedRequest`) before any
route, so both listeners say the same, without auth, while the etcd start-up
gate still holds every other request, and during a shutdown's drain:

- ``/healthz``: 200 ``{"status": "ok"}`` whenever the process answers at all
  (a liveness probe must not kill a gateway that waits for etcd at start);
- ``/readyz``: 200 ``{"status": "ready"}``, or 503 ``{"status": "not_ready",
  "reason": ...}`` naming why: ``shutting down`` once SIGTERM/SIGINT arrived,
  else what the config store says (``config not loaded yet``, ``etcd
  unreachable``; :meth:`IConfigStore.not_ready`).

Probes are not requests of the API: no hook sees them, so they write no
access-log line and count in no metric (a probe every few seconds would
drown both).
"""

from __future__ import annotations

import json

from twisted.web.server import Request

from twisted_gw.config.interfaces import IConfigStore

#: the two probe paths; only GET (and HEAD) are probes, other methods go to the routes
PROBE_PATHS = frozenset((b"/healthz", b"/readyz"))
PROBE_METHODS = frozenset((b"GET", b"HEAD"))

# the contract's bodies as it writes them (json.dumps' spacing, not the compact one)
_ALIVE = json.dumps({"status": "ok"}).encode()
_READY = json.dumps({"status": "ready"}).encode()


class Health:
    """The gateway's health, shared by both listeners' sites."""

    def __init__(self, store: IConfigStore) -> None:
        self.store = store
        #: set once a shutdown began: readiness is 503 from then on
        self.shutting_down = False

    def not_ready(self) -> str | None:
        """Why the gateway should get no new traffic, or None when it is ready."""
        if self.shutting_down:
            return "shutting down"
        return self.store.not_ready()

    def answer(self, request: Request) -> None:
        """Write and finish the probe's answer (``request.path`` is one of PROBE_PATHS)."""
        if request.path == b"/healthz":
            status, body = 200, _ALIVE
        else:
            reason = self.not_ready()
            if reason is None:
                status, body = 200, _READY
            else:
                status, body = 503, json.dumps({"status": "not_ready", "reason": reason}).encode()
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.setHeader(b"cache-control", b"no-store")
        request.write(body)
        request.finish()
