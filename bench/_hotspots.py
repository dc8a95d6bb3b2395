"""The tables the profile is read with: self time by subsystem, the hot spots
of a request and of a stream, and the roots of a stream's per-event path.

They name functions and files of the gateway and its libraries, so they are
the part to update when that code moves or is renamed; a name that no longer
exists shows as 0.0% in the report, not as an error."""

from __future__ import annotations

# Self time is grouped by where the code lives: (label, path fragment, bare
# function names or None for any). First match wins, so specific rows go first.
CATEGORIES = [
    (
        "twisted.web access log (HTTPFactory.log)",
        "twisted/web/http.py",
        {"log", "combinedLogFormatter", "_escape", "datetimeToLogString"},
    ),
    ("logging (twisted.logger / legacy log)", "twisted/logger/", None),
    ("logging (twisted.logger / legacy log)", "twisted/python/log.py", None),
    ("Content-Type parsing (stdlib email, twisted.web _parseContentType)", "email/", None),
    (
        "Content-Type parsing (stdlib email, twisted.web _parseContentType)",
        "twisted/web/http.py",
        {"_parseContentType"},
    ),
    ("upstream client (treq)", "treq/", None),
    ("upstream client (twisted.web.client / _newclient)", "twisted/web/client.py", None),
    ("upstream client (twisted.web.client / _newclient)", "twisted/web/_newclient.py", None),
    ("cookie jar / urllib (treq's per-request cookie handling)", "http/cookiejar.py", None),
    ("cookie jar / urllib (treq's per-request cookie handling)", "urllib/", None),
    ("URL objects (hyperlink)", "hyperlink/", None),
    ("routing (Klein / werkzeug)", "klein/", None),
    ("routing (Klein / werkzeug)", "werkzeug/", None),
    ("HTTP server (twisted.web http/server/resource, LineReceiver)", "twisted/web/", None),
    (
        "HTTP server (twisted.web http/server/resource, LineReceiver)",
        "twisted/protocols/basic.py",
        None,
    ),
    ("json", "json/", None),
    ("Deferreds", "twisted/internet/defer.py", None),
    ("reactor / TCP transport / endpoints", "twisted/internet/", None),
    ("twisted.python (context, failure, components, ...)", "twisted/python/", None),
    ("zope.interface", "zope/interface", None),
    ("gateway code (twisted_gw)", "twisted_gw/", None),
]

# Inclusive time of a few functions that answer "what does X cost per request":
# (label, function names, path fragment). A name with a dot must match py-spy's
# qualified "Class.method"; cProfile knows bare names only, so there the part
# after the last dot is compared. py-spy counts each sample once even when
# several listed functions nest; cProfile takes the largest cumtime.
HOTSPOTS = [
    (
        "incoming request: parse, route, handler, start of the upstream call",
        {"Request.requestReceived"},
        "twisted/web/http.py",
    ),
    (
        "  Content-Type parse via stdlib email (Site(parsePOSTFormSubmission=True))",
        {"_parseContentType"},
        "twisted/web/http.py",
    ),
    ("  Klein render (routing + handler)", {"KleinResource.render"}, "klein/_resource.py"),
    (
        "    werkzeug routing (Map.bind + MapAdapter.match)",
        {"Map.bind", "MapAdapter.match"},
        "werkzeug/routing/",
    ),
    (
        "    gateway handler ProxyApp._model_call (auth, body, exchange, provider)",
        {"ProxyApp._model_call"},
        "twisted_gw/proxy/app.py",
    ),
    (
        "      treq HTTPClient.request (URL objects, cookies, then Agent)",
        {"HTTPClient.request"},
        "treq/client.py",
    ),
    (
        "        Agent.request (endpoint per request, pool, write request)",
        {"Agent.request"},
        "twisted/web/client.py",
    ),
    (
        "          HostnameEndpoint() built per request (idna)",
        {"HostnameEndpoint.__init__"},
        "twisted/internet/endpoints.py",
    ),
    (
        "upstream response: HTTP11ClientProtocol.dataReceived (parse, body, callbacks)",
        {"HTTP11ClientProtocol.dataReceived"},
        "twisted/web/_newclient.py",
    ),
    (
        "  gateway success path Exchange._answered (post_call, write, finish, finalize)",
        {"Exchange._answered"},
        "twisted_gw/proxy/exchange.py",
    ),
    ("    response Request.finish (incl. access log)", {"Request.finish"}, "twisted/web/"),
    ("      access log line HTTPFactory.log", {"HTTPFactory.log"}, "twisted/web/http.py"),
    ("    hooks finalize", {"HookManager.finalize"}, "twisted_gw/hooks/"),
    (
        "treq cookie jar (add_cookie_header + extract_cookies)",
        {"CookieJar.add_cookie_header", "CookieJar.extract_cookies"},
        "http/cookiejar.py",
    ),
    (
        "twisted.logger events published (LogPublisher.__call__)",
        {"LogPublisher.__call__"},
        "twisted/logger/_observer.py",
    ),
    ("json.dumps", {"dumps"}, "json/__init__.py"),
    ("json.loads", {"loads"}, "json/__init__.py"),
    (
        "new upstream connections (HostnameEndpoint.connect)",
        {"HostnameEndpoint.connect"},
        "twisted/internet/endpoints.py",
    ),
]


# The same for a streamed answer. A fourth element names functions of which
# one must also be on the stack (py-spy only): "loads" under StreamRelay.chunk
# is the per-event check, not the request body's parse.
STREAM_HOTSPOTS = [
    (
        "incoming request: parse, route, handler, open the upstream stream",
        {"Request.requestReceived"},
        "twisted/web/http.py",
    ),
    (
        "  gateway handler ProxyApp._model_call (auth, body, exchange, provider)",
        {"ProxyApp._model_call"},
        "twisted_gw/proxy/app.py",
    ),
    (
        "    OpenAICompatibleProvider.stream_chat (upstream JSON, treq request)",
        {"OpenAICompatibleProvider.stream_chat"},
        "twisted_gw/providers/openai.py",
    ),
    (
        "upstream response: HTTP11ClientProtocol.dataReceived (headers + every event)",
        {"HTTP11ClientProtocol.dataReceived"},
        "twisted/web/_newclient.py",
    ),
    (
        "  stream opened: Deferred chain to Exchange._answered (source, deliverBody)",
        {"Exchange._answered"},
        "twisted_gw/proxy/exchange.py",
    ),
    (
        "  upstream chunked decoding _ChunkedTransferDecoder.dataReceived (incl. below)",
        {"_ChunkedTransferDecoder.dataReceived"},
        "twisted/web/http.py",
    ),
    (
        "    per-event path _SSEBodyProtocol.dataReceived",
        {"_SSEBodyProtocol.dataReceived"},
        "twisted_gw/providers/sources.py",
    ),
    ("      SSEParser.feed (lines, fields, SSEEvent)", {"SSEParser.feed"}, "twisted_gw/sse.py"),
    (
        "      StreamRelay.chunk (check the event, write it)",
        {"StreamRelay.chunk"},
        "twisted_gw/proxy/relay.py",
    ),
    (
        "        jsonutil.loads of the event (decode + JSONDecoder)",
        {"loads"},
        "twisted_gw/jsonutil.py",
        {"StreamRelay.chunk"},
    ),
    (
        "        StreamRelay.start_response (headers, registerProducer)",
        {"StreamRelay.start_response"},
        "twisted_gw/proxy/relay.py",
    ),
    (
        "        Request.write per event (chunk framing, transport buffer)",
        {"Request.write"},
        "twisted/web/",
        {"StreamRelay.chunk"},
    ),
    (
        "  end of the upstream body: HTTPClientParser._finished (pool, relay end)",
        {"HTTPClientParser._finished"},
        "twisted/web/_newclient.py",
    ),
    (
        "    Exchange.upstream_ended ([DONE], finish, finalize)",
        {"Exchange.upstream_ended"},
        "twisted_gw/proxy/exchange.py",
    ),
    ("      Request.finish", {"Request.finish"}, "twisted/web/", {"Exchange.upstream_ended"}),
    ("      hooks finalize (metrics, access log)", {"HookManager.finalize"}, "twisted_gw/hooks/"),
    (
        "socket writes (FileDescriptor.doWrite: client + upstream)",
        {"FileDescriptor.doWrite"},
        "twisted/internet/abstract.py",
    ),
    (
        "twisted.logger events published (LogPublisher.__call__)",
        {"LogPublisher.__call__"},
        "twisted/logger/_observer.py",
    ),
    (
        "new upstream connections (HostnameEndpoint/TCP4ClientEndpoint.connect)",
        {"HostnameEndpoint.connect", "TCP4ClientEndpoint.connect"},
        "twisted/internet/endpoints.py",
    ),
]

# Stacks through any of these are "the per-event path": from the upstream's
# chunked body to the client's transport buffer; but not the end of the body
# (the decoder's last chunk runs the response's end: pool, [DONE], finalize).
PER_EVENT_ROOTS = {
    ("_ChunkedTransferDecoder.dataReceived", "twisted/web/http.py"),
    ("_SSEBodyProtocol.dataReceived", "twisted_gw/providers/sources.py"),
}
PER_EVENT_EXCLUDE = {("HTTPClientParser._finished", "twisted/web/_newclient.py")}
