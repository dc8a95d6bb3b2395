"""The launch options (CONTRACT 1), one table for both launchers.

The ``twisted-gw`` console script (argparse, :mod:`twisted_gw.cli`) and the
twistd plugin (``usage.Options``, ``twistd_plugins/twisted_gw_plugin.py``) are
built from :data:`OPTIONS`, so a new option is one row here and both
``--help`` texts list it. Imports nothing heavy: ``twistd --help`` loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Option:
    """One ``--long VALUE`` option of the gateway (``-s`` too when ``short``)."""

    long: str
    short: str | None
    metavar: str
    help: str
    default: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option(
        "config",
        "c",
        "PATH",
        "YAML or JSON config file (.json is JSON, anything else YAML); "
        "default: ./config.yaml if present, else all defaults",
    ),
    Option(
        "workers",
        None,
        "N",
        "processes serving the listeners, 1 to 256 (overrides server.workers)",
    ),
)


def make_twistd_service(options: Any) -> Any:
    """The service for the twistd plugin's parsed options (``options.parent``:
    twistd's own). Here, not in the installed plugin file, so that a new
    option needs no new copy of that file."""
    from twisted_gw.service import Launch, makeService

    # twistd's own options say whether it daemonizes and where it logs,
    # which decides how a start-up failure reaches the operator
    launch = Launch.from_twistd(options.parent) if options.parent is not None else None
    return makeService(options["config"], launch=launch, workers=options.get("workers"))


def examples_dir() -> Path | None:
    """The ``examples/`` directory of the source tree this package runs from,
    if there is one (an installed wheel has none)."""
    candidate = Path(__file__).resolve().parent.parent / "examples"
    return candidate if (candidate / "demo.yaml").is_file() else None


def _where() -> str:
    found = examples_dir()
    return str(found) if found is not None else "examples/ of the twisted-gw source tree"


def console_epilog() -> str:
    """What ``twisted-gw --help`` says after the options: how to start, where
    the example configs are, and the daemon form of the same service."""
    return (
        "examples:\n"
        "  twisted-gw --config examples/demo.yaml\n"
        "      the demo config: a model 'demo' on the built-in mock provider (no\n"
        "      network, no provider key) and the API key sk-demo-key; the proxy on\n"
        "      127.0.0.1:3000, the Admin API and UI on 127.0.0.1:3001 (/ui/)\n"
        "  twistd --logfile=gw.log --pidfile=gw.pid twisted-gw --config examples/demo.yaml\n"
        "      the same service as a daemon; stop it with: kill $(cat gw.pid)\n"
        "\n"
        f"example configs: {_where()}\n"
        "logs go to stdout; SIGTERM or SIGINT (Ctrl+C) stops the gateway cleanly."
    )


def twistd_longdesc() -> str:
    """The same pointers for ``twistd twisted-gw --help`` (twistd wraps it as prose)."""
    return (
        "Example: twistd -n twisted-gw --config examples/demo.yaml runs the demo "
        "config (a model 'demo' on the built-in mock provider, no network or "
        "provider key needed, and the API key sk-demo-key). As a daemon: twistd "
        "--logfile=gw.log --pidfile=gw.pid twisted-gw --config examples/demo.yaml, "
        f"stopped with kill $(cat gw.pid). Example configs: {_where()}."
    )
