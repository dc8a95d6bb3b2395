"""Bedrock's provider (and botocore) is imported only when a Bedrock deployment is called."""

from __future__ import annotations

import subprocess
import sys

from twisted_gw.providers.interfaces import CHAT, IProvider


def test_building_the_providers_does_not_import_botocore():
    code = (
        "import sys\n"
        "from twisted.internet import reactor\n"
        "from twisted_gw.providers.http import UpstreamClient\n"
        "from twisted_gw.providers.registry import build_providers\n"
        "providers = build_providers(UpstreamClient(reactor))\n"
        "assert 'provider:bedrock' in providers\n"
        "print(sorted(m for m in sys.modules if m.startswith('botocore')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_lazy_provider_names_its_endpoints_and_loads_the_real_one_once():
    from twisted.internet import reactor

    from twisted_gw.providers.bedrock import BedrockProvider
    from twisted_gw.providers.http import UpstreamClient
    from twisted_gw.providers.registry import LazyBedrock

    lazy = LazyBedrock(UpstreamClient(reactor))
    assert IProvider.providedBy(lazy)
    assert (lazy.name, lazy.endpoints) == (BedrockProvider.name, BedrockProvider.endpoints)
    assert CHAT in lazy.endpoints
    real = lazy.loaded()
    assert isinstance(real, BedrockProvider)
    assert lazy.loaded() is real
