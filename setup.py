"""Packaging; metadata and dependencies live in setup.cfg.

The twistd plugin (``twistd_plugins/twisted_gw_plugin.py``) must end up where
Twisted's plugin loader looks: a ``twisted/plugins/`` directory on
``sys.path``. A normal install copies it into ``twisted/plugins/`` of the
wheel (no ``__init__.py``: Twisted's own must never be replaced). An editable
install cannot place files into another distribution's package, so it gets a
``.pth`` entry pointing at ``build/twistd-plugins/``, whose
``twisted/plugins/twisted_gw_plugin.py`` is a symlink to the source file, and
edits stay live.
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PLUGIN = os.path.join("twistd_plugins", "twisted_gw_plugin.py")


class BuildPy(build_py):
    """Also ship the plugin module as ``twisted/plugins/twisted_gw_plugin.py``."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "twisted", "plugins")
        self.mkpath(target)
        self.copy_file(PLUGIN, os.path.join(target, "twisted_gw_plugin.py"))


cmdclass = {"build_py": BuildPy}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # very old setuptools: no PEP 660 editable installs
    editable_wheel = None

if editable_wheel is not None:

    class _WithPluginPath:
        """Wraps setuptools' editable strategy to add our plugin .pth entry."""

        def __init__(self, strategy, pth_line):
            self._strategy = strategy
            self._pth_line = pth_line

        def __enter__(self):
            self._strategy.__enter__()
            return self

        def __exit__(self, *exc):
            return self._strategy.__exit__(*exc)

        def __call__(self, wheel, files, mapping):
            self._strategy(wheel, files, mapping)
            wheel.writestr("__editable__.twisted_gw_twistd_plugins.pth", self._pth_line)

    class EditableWheel(editable_wheel):
        def _select_strategy(self, name, tag, build_lib):
            strategy = super()._select_strategy(name, tag, build_lib)
            root = Path(self.project_dir).resolve()
            plugins = root / "build" / "twistd-plugins"
            target = plugins / "twisted" / "plugins"
            target.mkdir(parents=True, exist_ok=True)
            link = target / "twisted_gw_plugin.py"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(root / PLUGIN)
            return _WithPluginPath(strategy, f"{plugins}\n")

    cmdclass["editable_wheel"] = EditableWheel

setup(cmdclass=cmdclass)
