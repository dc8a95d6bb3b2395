"""Extra hooks: named in the config file, or installed as Twisted plugins.

- ``hooks: [package.module.Name]`` in the config: each name is imported and
  called with no arguments; the result must provide IHook. A name that cannot
  be loaded stops start-up with a clear message, as a misconfigured audit or
  billing hook must not be silently skipped.
- A package that ships a module in ``twisted/plugins/`` with an object
  providing both ``IPlugin`` and ``IHook`` is found with ``getPlugins`` and
  runs after the configured hooks (``plugin_hooks: false`` turns that off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.python.reflect import namedAny

from twisted_gw._lazytls import restore_twisted_tls
from twisted_gw.config.file import ConfigError
from twisted_gw.hooks.interfaces import IHook


def plugin_hooks() -> list[Any]:
    """Every installed Twisted plugin that provides IHook, in a stable order."""
    import twisted.plugins
    from twisted.plugin import getPlugins

    found = [p for p in getPlugins(IHook, twisted.plugins) if IHook.providedBy(p)]
    if found:
        restore_twisted_tls()  # someone else's code: Twisted's https helpers work for it
    return sorted(found, key=lambda p: (getattr(p, "name", ""), type(p).__qualname__))


def load_hooks(names: Sequence[str]) -> list[Any]:
    """Instantiate the configured hooks, in order."""
    hooks = []
    if names:
        restore_twisted_tls()  # someone else's code: Twisted's https helpers work for it
    for name in names:
        try:
            factory = namedAny(name.replace(":", "."))
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"hook '{name}' cannot be loaded: {e}") from None
        hook = factory()
        if not IHook.providedBy(hook):
            raise ConfigError(f"hook '{name}' does not provide IHook")
        hooks.append(hook)
    return hooks
