"""A proxied answer's headers, set all at once.

Why not ``Request.setHeader`` per header: each one is four Python calls in
twisted.web (``setHeader``, ``Headers.setRawHeaders``, the name encoder and
the CR/LF sanitizer) and a list, about 3 % of a plain request's
instructions for its three headers and as much again for the eight
``x-ratelimit-*`` headers of a key and model with every limit configured.

:func:`set_answer_headers` gives the same :class:`~twisted.web.http_headers.Headers`
content: a name is canonicalised (and validated) by twisted.web once, the
first time it is seen, and kept (:mod:`twisted_gw.headernames`); a value is
UTF-8 encoded like twisted.web does. A value holding CR or LF, a value that is not a ``str``, or a name not
seen yet goes through ``setRawHeaders`` itself, so what twisted.web refuses
or rewrites it still refuses or rewrites. The one private part is
``Headers._rawHeaders`` (its slot, read once here): without it every header
takes ``setRawHeaders``, and a test pins the two ways to the same headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from twisted.web.http_headers import Headers

from twisted_gw.headernames import KNOWN, canonical

_RAW = "_rawHeaders" in getattr(Headers, "__slots__", ())


def set_answer_headers(
    headers: Headers,
    fixed: Iterable[tuple[bytes, bytes]],
    extra: Mapping[str, str],
) -> None:
    """Set ``fixed`` (names from :func:`~twisted_gw.headernames.canonical`,
    values the gateway made: no CR or LF), then ``extra`` (the hooks'
    ``ctx.response_headers``), each replacing a header of that name."""
    if not _RAW:
        for name, value in fixed:
            headers.setRawHeaders(name, [value])
        for name, value in extra.items():
            headers.setRawHeaders(name, [value])
        return
    raw = headers._rawHeaders
    for name, value in fixed:
        raw[name] = [value]
    if not extra:
        return
    for name, value in extra.items():
        key = KNOWN.get(name)
        if key is None or type(value) is not str or "\r" in value or "\n" in value:
            headers.setRawHeaders(name, [value])  # validates, sanitises
            if key is None:
                canonical(name)  # known from now on (while KNOWN has room)
        else:
            raw[key] = [value.encode()]
