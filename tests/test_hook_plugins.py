"""Third-party hooks as Twisted plugins (IPlugin + IHook found by getPlugins),
and config-loaded hooks that cannot be loaded stopping start-up clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.gateway import REPO_ROOT
from twisted_gw.config.file import ConfigError
from twisted_gw.hooks.loader import load_hooks

PLUGIN = textwrap.dedent(
    """
    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from twisted_gw.hooks.interfaces import IHook

    @implementer(IPlugin, IHook)
    class AuditHook:
        name = "audit-from-plugin"
        def pre_call(self, ctx): return None
        def post_call(self, ctx): pass
        def finalize(self, ctx): pass

    audit = AuditHook()
    """
)

LIST = "from twisted_gw.hooks.loader import plugin_hooks; print([h.name for h in plugin_hooks()])"


def test_an_installed_plugin_hook_is_found(tmp_path):
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "audit_hook_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO_ROOT)]))
    out = subprocess.run(
        [sys.executable, "-c", LIST],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "audit-from-plugin" in out.stdout


def test_without_plugins_none_are_found():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [sys.executable, "-c", LIST],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


def test_configured_hook_that_cannot_be_loaded_is_a_config_error():
    with pytest.raises(ConfigError, match="hook 'no.such.module.Hook' cannot be loaded"):
        load_hooks(["no.such.module.Hook"])
    with pytest.raises(ConfigError, match="does not provide IHook"):
        load_hooks(["collections.OrderedDict"])
    (hook,) = load_hooks(["tests.support.finalize_counter.FinalizeCounter"])
    assert hook.name == "finalize_counter"
