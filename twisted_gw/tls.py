"""TLS for the listeners: load and check the PEM files at start-up (CONTRACT 1).

Imported only when a listener has TLS enabled: pyOpenSSL costs start-up time
that plain-HTTP gateways should not pay.
"""

from __future__ import annotations

import re
from typing import Any

from twisted_gw.config.file import ConfigError, TLSConfig

_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)


def context_factory(name: str, tls: TLSConfig) -> Any:
    """A CertificateOptions for the listener named ``name`` ("Proxy"/"Admin").

    The cert file may hold a chain (leaf first). Raises ConfigError with a
    message that names the file and what is wrong with it."""
    from OpenSSL.crypto import FILETYPE_PEM
    from OpenSSL.crypto import Error as OpenSSLError
    from twisted.internet import ssl

    with open(tls.cert_file, "rb") as f:
        cert_pem = f.read()
    with open(tls.key_file, "rb") as f:
        key_pem = f.read()
    blocks = _CERT_BLOCK.findall(cert_pem)
    if not blocks:
        raise ConfigError(
            f"{name} TLS cert_file '{tls.cert_file}' is not a PEM certificate: "
            "Expecting: CERTIFICATE"
        )
    try:
        chain = [ssl.Certificate.loadPEM(b) for b in blocks]
    except (OpenSSLError, ValueError) as e:
        raise ConfigError(
            f"{name} TLS cert_file '{tls.cert_file}' is not a valid certificate: {e}"
        ) from None
    try:
        key = ssl.KeyPair.load(key_pem, FILETYPE_PEM)
    except (OpenSSLError, ValueError):
        raise ConfigError(
            f"{name} TLS key_file '{tls.key_file}' is not a PEM private key: Expecting: PRIVATE KEY"
        ) from None
    try:
        return ssl.CertificateOptions(
            privateKey=key.original,
            certificate=chain[0].original,
            extraCertChain=[c.original for c in chain[1:]],
        )
    except (OpenSSLError, ValueError) as e:
        raise ConfigError(
            f"{name} TLS key_file '{tls.key_file}' does not match cert_file '{tls.cert_file}': {e}"
        ) from None
