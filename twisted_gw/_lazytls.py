"""pyOpenSSL loaded when TLS is first used, not by the import of Twisted's networking.

Why. Twisted decides at import time whether it can do TLS: ``twisted.internet.tcp``
(``startTLS``), ``posixbase`` (the reactor's ``listenSSL``/``connectSSL``),
``endpoints`` (``wrapClientTLS``) and ``twisted.web.client`` (https through
``BrowserLikePolicyForHTTPS``) each try ``import OpenSSL`` and keep what they
found. So every gateway carried pyOpenSSL, cryptography, service_identity and
``twisted.internet.ssl``, TLS listener or not, https upstream or not: 12 MB
of the 63 MB a plain-HTTP gateway kept resident after start-up.

What. :func:`import_networking` imports those modules with pyOpenSSL hidden,
so they take their no-TLS branch, unless pyOpenSSL is loaded already (then
it changes nothing). The gateway's own TLS never goes through those branches;
each of its paths imports ``twisted.protocols.tls`` / ``twisted.internet.ssl``
(and so pyOpenSSL) the first time it is used, and works as before:

- TLS listeners: ``GatewayReactor.listenSSL`` (and ``connectSSL``), which do
  what Twisted's own do (:mod:`twisted_gw.reactor`); a worker's adopted
  socket is wrapped in ``TLSMemoryBIOFactory`` (:mod:`twisted_gw.service`);
- https upstreams and etcd: the endpoints and the policy of
  :mod:`twisted_gw._outbound`;
- ``rediss://``: txredisapi, imported only when Redis is configured.

What a gateway process gives up: ``startTLS`` on its TCP connections (the
TLS mixins of ``twisted.internet.tcp``'s classes are chosen at import). Until
:func:`restore_twisted_tls` runs, Twisted's https helpers above
(``wrapClientTLS``, Agent's default https policy, treq's default client over
https) raise ``NotImplementedError`` too; it runs as soon as an extra hook is
loaded (a hook is code of someone else's that may call out with treq over
https: :mod:`twisted_gw.hooks.loader`), so only a gateway without hooks goes
without them, and nothing of its own needs them. A process that imported the
reactor before (twistd ``--reactor``, a test run) keeps Twisted's TLS as it is.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import sys
from collections.abc import Iterator

#: the Twisted modules that keep what ``import OpenSSL`` gave them at import
NETWORKING = (
    "twisted.internet.tcp",
    "twisted.internet.posixbase",
    "twisted.internet.endpoints",
    "twisted.web.client",
)


class _HideOpenSSL(importlib.abc.MetaPathFinder):
    """``import OpenSSL`` fails as if pyOpenSSL were not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "OpenSSL" or name.startswith("OpenSSL."):
            raise ModuleNotFoundError(f"No module named {name!r} (yet)", name=name)


@contextlib.contextmanager
def without_openssl() -> Iterator[None]:
    """Imports inside see no pyOpenSSL, unless it is loaded already; a module
    that failed to import for it is imported afresh the next time, with it."""
    if "OpenSSL" in sys.modules:
        yield
        return
    finder = _HideOpenSSL()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


#: whether import_networking imported NETWORKING without pyOpenSSL
_hidden = False


def import_networking() -> None:
    """Import :data:`NETWORKING` without pyOpenSSL (see the module docstring)."""
    global _hidden
    if "OpenSSL" in sys.modules or all(name in sys.modules for name in NETWORKING):
        return
    with without_openssl():
        for name in NETWORKING:
            importlib.import_module(name)
    _hidden = "OpenSSL" not in sys.modules


def restore_twisted_tls() -> None:
    """Load pyOpenSSL and give Twisted's https helpers what their import would
    have found: what ``posixbase``, ``endpoints`` and ``twisted.web.client``
    bind when ``import OpenSSL`` works (``startTLS`` stays unavailable: see the
    module docstring). Nothing to do when they were imported with it."""
    global _hidden
    if not _hidden:
        return
    from twisted.internet import endpoints, posixbase, ssl
    from twisted.protocols import _sni, tls
    from twisted.web import client

    posixbase.tls, posixbase.ssl = tls, ssl
    for name in (
        "Certificate",
        "CertificateOptions",
        "KeyPair",
        "PrivateCertificate",
        "optionsForClientTLS",
        "trustRootFromCertificates",
    ):
        setattr(endpoints, name, getattr(ssl, name))
    endpoints.SNIConnectionCreator = _sni.SNIConnectionCreator
    endpoints._TLSServerEndpoint = _sni.TLSServerEndpoint
    endpoints.autoReloadingDirectoryOfPEMs = _sni.autoReloadingDirectoryOfPEMs
    endpoints.TLSMemoryBIOFactory = tls.TLSMemoryBIOFactory
    from OpenSSL import SSL

    client.SSL = SSL
    client.CertificateOptions = ssl.CertificateOptions
    client.optionsForClientTLS = ssl.optionsForClientTLS
    client.platformTrust = ssl.platformTrust
    # the methods ``_requireSSL`` replaced at class definition (functools.wraps
    # kept the originals)
    for cls in vars(client).values():
        if isinstance(cls, type) and cls.__module__ == client.__name__:
            for name, f in list(vars(cls).items()):
                code = getattr(f, "__code__", None)
                if code is not None and code.co_name == "raiseNotImplemented":
                    setattr(cls, name, f.__wrapped__)
    _hidden = False
