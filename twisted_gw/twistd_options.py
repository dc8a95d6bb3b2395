"""The twistd plugin's options and service, kept in the package.

``twistd_plugins/twisted_gw_plugin.py`` is installed as a copy; so that a
new option needs no new copy of it, the options and how they become a
service live here, and the plugin only subclasses and calls them. Imports
stay light: ``twistd --help`` loads this module.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.python import usage


class GatewayOptions(usage.Options):
    """``twistd twisted-gw`` options: the same as the console script's."""

    optParameters: ClassVar[list] = [
        ["config", "c", None, "YAML or JSON config file (default: ./config.yaml if present)."],
        [
            "workers",
            None,
            None,
            "Processes serving the listeners, 1 to 256 (overrides server.workers).",
        ],
    ]

    def opt_version(self) -> None:
        """Print the twisted-gw version and exit."""
        from twisted_gw import __version__

        print(f"twisted-gw {__version__}")
        raise SystemExit(0)


def make_service(options: Any) -> Any:
    """The service for parsed plugin options (``options.parent``: twistd's own)."""
    from twisted_gw.service import Launch, makeService

    # twistd's own options say whether it daemonizes and where it logs,
    # which decides how a start-up failure reaches the operator
    launch = Launch.from_twistd(options.parent) if options.parent is not None else None
    return makeService(options["config"], launch=launch, workers=options.get("workers"))
