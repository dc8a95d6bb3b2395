"""The Admin API's Klein app (CONTRACT 3): CRUD of models and API keys,
the OpenAPI document and page, the UI routes and the UI's playground.

Each write is checked in the contract's order (JSON, schema, duplicate), then
goes to the IConfigStore, which checks the duplicate again atomically against
what is really stored and swaps the proxy's snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import CACHED
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from twisted_gw.admin.auth import authorize
from twisted_gw.config.entities import KINDS, MODELS, PROVIDERS, Kind, SchemaError
from twisted_gw.config.interfaces import DuplicateError, IConfigStore, StoreError
from twisted_gw.errors import GatewayError, invalid_url
from twisted_gw.jsonutil import loads
from twisted_gw.observability.logsafe import escape
from twisted_gw.site import routes

if TYPE_CHECKING:
    from twisted_gw.config.snapshot import StoredEntry
    from twisted_gw.ledger.interfaces import ILedgerDatabase
    from twisted_gw.observability.metrics import GatewayMetrics

log = Logger()

PREFIX = "/aisix/admin"
UI_DIR = os.path.join(os.path.dirname(__file__), "ui")
_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
}


class AdminError(Exception):
    """An Admin API failure: ``{"error_msg": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _audit(request: Request, key: str, status: int) -> None:
    """One log line per successful admin write: who changed what (never values).

    The key holds the id from the URL path: escaped, so an id with CR, LF or
    ESC cannot forge or colour a line (CONTRACT 5.4)."""
    client = request.getClientAddress()
    log.info(
        "admin {method} {key} -> {status} from {client}",
        method=escape(request.method.decode("ascii", "replace")),
        key=escape(key),
        status=status,
        client=escape(getattr(client, "host", "-")),
    )


def _static(request: Request, path: str, content_type: bytes) -> bytes:
    """A UI file, revalidated on every use (``no-cache`` with a content ETag).

    The UI's modules import each other by plain names, so a browser must
    never mix a cached old module with a new one after an upgrade; a 304
    keeps the revalidation cheap."""
    with open(path, "rb") as f:
        body = f.read()
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"x-content-type-options", b"nosniff")
    if request.setETag(b'"%s"' % hashlib.sha256(body).hexdigest()[:32].encode()) == CACHED:
        return b""
    return body


def error_body(error: GatewayError) -> bytes:
    """The Admin API's error shape (CONTRACT 3) for what the admin listener's
    site answers itself (431, 408, 400, 503; see twisted_gw.site)."""
    return json.dumps({"error_msg": error.message}).encode()


def _json(request: Request, status: int, doc: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(doc, ensure_ascii=False).encode()


def _providers_named(doc: dict) -> list[str]:
    """The provider entities a model document names (its own, its targets')."""
    named = [doc["provider_id"]] if isinstance(doc.get("provider_id"), str) else []
    targets = doc.get("targets") if "provider_id" in doc else None
    for target in targets if isinstance(targets, list) else ():
        provider_id = target.get("provider_id") if isinstance(target, dict) else None
        if isinstance(provider_id, str) and provider_id not in named:
            named.append(provider_id)
    return named


class AdminApp:
    """Admin listener: /aisix/admin/*, /openapi(.json), /ui (and / leading to it)."""

    app = routes()  # no redirects, ever (see twisted_gw.site.routes)

    def __init__(
        self,
        store: IConfigStore,
        admin_keys: Sequence[str],
        metrics: GatewayMetrics | None = None,
        chat: Callable[[Request], Any] | None = None,
        ledger: ILedgerDatabase | None = None,
        clock: Any = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        #: the request ledger's database, which the spend report reads (None: off)
        self.ledger = ledger
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        #: the proxy's chat endpoint, which the playground runs as it is
        self.chat = chat
        self._keys = tuple(k.encode() for k in admin_keys)

    # -- plumbing ----------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        headers = request.requestHeaders
        problem = authorize(
            headers.getRawHeaders(b"authorization"), headers.getRawHeaders(b"x-api-key"), self._keys
        )
        if problem:
            raise AdminError(*problem)

    def _run(self, request: Request, work: Callable[..., Any], *args: object) -> defer.Deferred:
        """Authorize, run ``work`` (may return a Deferred), render errors."""
        d = defer.maybeDeferred(self._authorize, request)
        d.addCallback(lambda _: work(request, *args))

        def failed(failure: Failure) -> bytes:
            if failure.check(AdminError):
                return _json(request, failure.value.status, {"error_msg": failure.value.message})
            if failure.check(defer.CancelledError):
                return b""
            log.failure(
                "admin request {method} {path} failed",
                failure,
                method=escape(request.method.decode("latin-1")),
                path=escape(request.path.decode("utf-8", "replace")),
            )
            return _json(
                request, 500, {"error_msg": f"internal error: {failure.getErrorMessage()}"}
            )

        d.addErrback(failed)
        return d

    @staticmethod
    def _document(request: Request, kind: Kind, id: str) -> dict:
        """Parse and validate the body: 413 if it was too large to keep, then
        'Invalid JSON', then schema errors, in that order."""
        if request.body_too_large:
            raise AdminError(413, f"Request body exceeds {request.max_body_bytes} bytes")
        try:
            doc = loads(request.content.read())
        except ValueError as e:
            raise AdminError(400, f"Invalid JSON: {e}") from None
        try:
            return kind.parse(id, doc).doc
        except SchemaError as e:
            raise AdminError(400, str(e)) from None

    def _store_call(self, d: defer.Deferred, what: str) -> defer.Deferred:
        def failed(failure: Failure) -> None:
            if failure.check(DuplicateError):
                raise AdminError(400, str(failure.value))
            if failure.check(StoreError):
                raise AdminError(500, str(failure.value))
            if failure.check(AdminError):
                failure.raiseException()
            raise AdminError(500, f"{what} failed: {failure.getErrorMessage()}")

        return d.addErrback(failed)

    # -- CRUD --------------------------------------------------------------------

    def _list(self, request: Request, kind: Kind) -> defer.Deferred:
        d = self._store_call(self.store.list(kind.segment), "store list")
        d.addCallback(
            lambda entries: _json(
                request, 200, {"total": len(entries), "list": [e.as_json() for e in entries]}
            )
        )
        return d

    def _get(self, request: Request, kind: Kind, id: str) -> defer.Deferred:
        def got(entry: StoredEntry | None) -> bytes:
            if entry is None:
                raise AdminError(404, kind.not_found(id))
            return _json(request, 200, entry.as_json())

        return self._store_call(self.store.get(kind.segment, id), "store get").addCallback(got)

    def _put(self, request: Request, kind: Kind, id: str, create_only: bool) -> defer.Deferred:
        value = self._document(request, kind, id)

        def stored(result: tuple[StoredEntry, bool]) -> bytes:
            entry, created = result
            status = 201 if created or create_only else 200
            _audit(request, entry.key, status)
            return _json(request, status, {"key": entry.key, "value": entry.value})

        def put(_: object = None) -> defer.Deferred:
            return self._store_call(self.store.put(kind.segment, id, value), "store put")

        named = _providers_named(value) if kind is MODELS else []
        d = defer.succeed(None)
        for provider_id in named:  # in order: the first missing one is the answer
            d.addCallback(lambda _, p=provider_id: self._provider_exists(p))
        return d.addCallback(put).addCallback(stored)

    def _provider_exists(self, provider_id: str) -> defer.Deferred:
        """CONTRACT-NEXT 1.3: a model may only name a provider that is stored
        (and parses: one that does not is the store's fault, a 500)."""

        def check(entry: StoredEntry | None) -> None:
            if entry is None:
                raise AdminError(400, PROVIDERS.not_found(provider_id))
            try:
                PROVIDERS.loaded(entry.id, entry.value)
            except SchemaError as e:
                raise AdminError(500, f"Failed to parse config item {entry.key}: {e}") from None

        d = self._store_call(self.store.get(PROVIDERS.segment, provider_id), "store get")
        return d.addCallback(check)

    def _delete(self, request: Request, kind: Kind, id: str) -> defer.Deferred:
        def deleted(entry: StoredEntry | None) -> bytes:
            if entry is None:
                raise AdminError(404, kind.not_found(id))
            _audit(request, entry.key, 200)
            return _json(request, 200, {"deleted": 1, "key": entry.key})

        def delete(_: object = None) -> defer.Deferred:
            return self._store_call(self.store.delete(kind.segment, id), "store delete")

        d = delete() if kind is not PROVIDERS else self._unreferenced(id).addCallback(delete)
        return d.addCallback(deleted)

    def _unreferenced(self, provider_id: str) -> defer.Deferred:
        """CONTRACT-NEXT 1.2: 404 for a provider that is not stored; 400 while
        a stored model of the later wire that parses names it."""

        def stored(entry: StoredEntry | None) -> defer.Deferred:
            if entry is None:
                raise AdminError(404, PROVIDERS.not_found(provider_id))
            return self._store_call(self.store.list(MODELS.segment), "store list")

        def check(models: list[StoredEntry]) -> None:
            for model in models:
                value = model.value
                if not isinstance(value, dict) or provider_id not in _providers_named(value):
                    continue
                try:
                    MODELS.loaded(model.id, value)
                except SchemaError:
                    continue
                raise AdminError(400, "provider is still referenced by models")

        d = self._store_call(self.store.get(PROVIDERS.segment, provider_id), "store get")
        return d.addCallback(stored).addCallback(check)

    @app.route(PREFIX + "/<any(models,apikeys,providers):segment>", methods=["GET"])
    def list_entities(self, request: Request, segment: str) -> Any:
        return self._run(request, self._list, KINDS[segment])

    @app.route(PREFIX + "/<any(models,apikeys,providers):segment>", methods=["POST"])
    def create_entity(self, request: Request, segment: str) -> Any:
        return self._run(request, self._put, KINDS[segment], str(uuid.uuid4()), True)

    @app.route(PREFIX + "/<any(models,apikeys,providers):segment>/<id>", methods=["GET"])
    def get_entity(self, request: Request, segment: str, id: str) -> Any:
        return self._run(request, self._get, KINDS[segment], id)

    @app.route(PREFIX + "/<any(models,apikeys,providers):segment>/<id>", methods=["PUT"])
    def put_entity(self, request: Request, segment: str, id: str) -> Any:
        return self._run(request, self._put, KINDS[segment], id, False)

    @app.route(PREFIX + "/<any(models,apikeys,providers):segment>/<id>", methods=["DELETE"])
    def delete_entity(self, request: Request, segment: str, id: str) -> Any:
        return self._run(request, self._delete, KINDS[segment], id)

    # -- reports -------------------------------------------------------------------

    def _spend(self, request: Request) -> defer.Deferred:
        """The spend report from the ledger (issue 17), queried on the
        database's thread; rows not yet flushed (up to a second's) are missing."""
        from twisted_gw.ledger.report import ReportError, parse_query, spend_document

        if self.ledger is None:
            raise AdminError(404, "The ledger is off (deployment.ledger.enabled: false)")
        args = {
            k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
            for k, vs in (request.args or {}).items()
        }
        try:
            query = parse_query(args, self.clock.seconds())
        except ReportError as e:
            raise AdminError(400, str(e)) from None

        def failed(failure: Failure) -> None:
            lines = failure.getErrorMessage().strip().splitlines() or [failure.type.__name__]
            raise AdminError(503, f"ledger database unavailable: {lines[0][:200]}")

        d = self.ledger.spend(query.group_by, query.start, query.end)
        d.addCallbacks(lambda rows: _json(request, 200, spend_document(query, rows)), failed)
        return d

    @app.route(PREFIX + "/spend", methods=["GET"])
    def spend(self, request: Request) -> Any:
        return self._run(request, self._spend)

    # -- unauthenticated pages -----------------------------------------------------

    @app.route("/openapi.json", methods=["GET"])
    def openapi_json(self, request: Request) -> bytes:
        from twisted_gw.admin.openapi import openapi_document

        return _json(request, 200, openapi_document())

    @app.route("/openapi", methods=["GET"])
    def openapi_page(self, request: Request) -> bytes:
        from twisted_gw.admin.openapi import openapi_document, openapi_html

        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return openapi_html(openapi_document())

    @app.route("/metrics", methods=["GET"])
    def metrics_page(self, request: Request) -> bytes:
        """Prometheus text exposition, no auth (CONTRACT 3) **[beyond]**."""
        if self.metrics is None:
            request.setResponseCode(404)
            return b""
        body, content_type = self.metrics.render()
        request.setHeader(b"content-type", content_type.encode())
        return body

    @app.route("/playground/chat/completions", methods=["POST"])
    def playground_chat(self, request: Request) -> Any:
        """The UI's playground (CONTRACT 3): exactly ``POST /v1/chat/completions``
        of the proxy, so the proxy key's auth, the rate limits, the hooks, the
        streaming relay and its cancellation apply as they do on the proxy
        listener; answers and errors are the proxy's. No admin key: the
        request carries the proxy key it is made with."""
        if self.chat is None:
            request.setResponseCode(404)
            return b""
        return self.chat(request)

    @app.route("/", methods=["GET"])
    @app.route("/ui", methods=["GET"], strict_slashes=False)
    def ui_redirect(self, request: Request) -> bytes:
        """``/ui`` and the listener's root lead to the UI: someone who opens
        the admin address in a browser lands on it, not on an empty 404. The
        Location is fixed, never built from the request."""
        request.setResponseCode(303)
        request.setHeader(b"location", b"/ui/")
        return b""

    @app.route("/ui/catalog.json", methods=["GET"])
    def ui_catalog(self, request: Request) -> bytes:
        """The provider families, rate-limit kinds and bounds the UI's forms
        are built from, so the UI repeats none of the lists; no auth, like the
        UI itself, and never reused from a cache after an upgrade."""
        from twisted_gw.admin.openapi import catalog_document

        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return _json(request, 200, catalog_document())

    @app.route("/ui/", methods=["GET"])
    @app.route("/ui/<path:rest>", methods=["GET"])
    def ui(self, request: Request, rest: str = "") -> bytes:
        """Real files under ui/ are served as such; anything else gets the
        single-page index, so deep links load the app (CONTRACT 3)."""
        path = os.path.normpath(os.path.join(UI_DIR, rest)) if rest else ""
        if path.startswith(UI_DIR + os.sep) and os.path.isfile(path):
            content_type = _CONTENT_TYPES.get(
                os.path.splitext(path)[1], b"application/octet-stream"
            )
            return _static(request, path, content_type)
        return _static(request, os.path.join(UI_DIR, "index.html"), _CONTENT_TYPES[".html"])

    # -- unmatched -------------------------------------------------------------

    @app.handle_errors(NotFound, RequestRedirect)
    def not_found(self, request: Request, failure: Failure) -> bytes:
        """Unknown paths: 404 with an empty body, no auth (CONTRACT 3); a path
        werkzeug would redirect is unknown too (see ``app`` above)."""
        if getattr(request, "url_undecodable", False):  # routed nowhere by twisted_gw.site
            return _json(request, 400, {"error_msg": invalid_url().message})
        request.setResponseCode(404)
        return b""

    @app.handle_errors(MethodNotAllowed)
    def wrong_method(self, request: Request, failure: Failure) -> Any:
        """A known path with a wrong method: 405, but only after auth."""

        def refuse(_: object) -> bytes:
            request.setResponseCode(405)
            request.setHeader(b"allow", ", ".join(failure.value.valid_methods or ()).encode())
            return _json(request, 405, {"error_msg": "Method not allowed"})

        return self._run(request, refuse)
