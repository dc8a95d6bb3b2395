"""``--help`` of both launchers (CONTRACT 1): the console script and
``twistd twisted-gw`` list the same options (one table,
``twisted_gw.options.OPTIONS``) and tell a newcomer where to start: the demo
config in ``examples/`` and the daemon form with its stop command."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateway import REPO_ROOT
from twisted_gw.options import OPTIONS

TWISTD = "from twisted.scripts.twistd import run; run()"


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=env, cwd="/", check=False
    )


def checkout_env(*first: str) -> dict[str, str]:
    """This checkout first on the path (the gateway's package, and ``first``)."""
    path = [*first, str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def test_console_help_lists_every_option_and_points_to_the_examples():
    out = run([sys.executable, "-m", "twisted_gw", "--help"], checkout_env())
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("usage: twisted-gw ")
    for option in OPTIONS:
        assert f"--{option.long} {option.metavar}" in text
        if option.short:
            assert f"-{option.short} {option.metavar}" in text
    assert "--version" in text
    assert "twisted-gw --config examples/demo.yaml" in text
    assert f"example configs: {REPO_ROOT / 'examples'}" in text
    daemon = "twistd --logfile=gw.log --pidfile=gw.pid twisted-gw --config examples/demo.yaml"
    assert daemon in text and "kill $(cat gw.pid)" in text


def test_twistd_plugin_help_lists_the_same_options_and_the_examples(tmp_path):
    # this checkout's plugin module, found first (an editable install may point elsewhere)
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "twisted_gw_plugin.py").symlink_to(
        REPO_ROOT / "twistd_plugins" / "twisted_gw_plugin.py"
    )
    out = run([sys.executable, "-c", TWISTD, "twisted-gw", "--help"], checkout_env(str(tmp_path)))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # twistd wraps its long description
    for option in OPTIONS:
        assert f"--{option.long}=" in text
        if option.short:
            assert f"-{option.short}, --{option.long}=" in text
    assert "--version" in text
    assert "twistd -n twisted-gw --config examples/demo.yaml" in text
    assert f"Example configs: {REPO_ROOT / 'examples'}." in text
    assert "kill $(cat gw.pid)" in text
