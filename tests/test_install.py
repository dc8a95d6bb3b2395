"""Packaging: ``pip install .`` puts the twistd plugin into Twisted's plugin
namespace (without replacing Twisted's own ``twisted/plugins/__init__.py``),
ships the UI files, and the editable install the test command uses finds the
plugin too."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateway import REPO_ROOT

FIND_PLUGIN = """
import sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
names = [p.tapname for p in getPlugins(IServiceMaker)]
assert "twisted-gw" in names, names
print(sys.modules["twisted.plugins.twisted_gw_plugin"].__file__)
"""


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300, **kw)


def test_pip_install_places_the_plugin_module_and_package_data(tmp_path):
    target = tmp_path / "site"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(REPO_ROOT),
        ]
    )
    plugin_dir = target / "twisted" / "plugins"
    assert (plugin_dir / "twisted_gw_plugin.py").is_file()
    assert not (plugin_dir / "__init__.py").exists(), "must never shadow Twisted's own package"
    assert not (target / "twisted" / "__init__.py").exists()
    assert (target / "twisted_gw" / "admin" / "ui" / "index.html").is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    found = run([sys.executable, "-c", FIND_PLUGIN], env=env, cwd=tmp_path).stdout.strip()
    assert found == str(plugin_dir / "twisted_gw_plugin.py")


def test_editable_install_finds_the_plugin_source():
    found = run([sys.executable, "-c", FIND_PLUGIN], cwd="/").stdout.strip()
    assert os.path.realpath(found) == str(REPO_ROOT / "twistd_plugins" / "twisted_gw_plugin.py")
