"""Extra hooks named in the config file (``hooks: [package.module.Name]``).

Each name is imported and called with no arguments; the result must provide
IHook. A name that cannot be loaded stops start-up with a clear message, as a
misconfigured rate limiter or audit hook must not be silently skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.python.reflect import namedAny

from twisted_gw.config.file import ConfigError
from twisted_gw.hooks.interfaces import IHook


def load_hooks(names: Sequence[str]) -> list[Any]:
    """Instantiate the configured hooks, in order."""
    hooks = []
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
