"""The ``twisted-gw`` console script: the same service as ``twistd twisted-gw``,
without twistd's daemon options (logs go to stdout; SIGTERM/SIGINT stop it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from twisted_gw import __version__, options


def build_parser() -> argparse.ArgumentParser:
    """The console script's parser: every row of ``twisted_gw.options.OPTIONS``,
    ``--version``, and the examples after the options."""
    parser = argparse.ArgumentParser(
        prog="twisted-gw",
        description="OpenAI-compatible LLM gateway on Twisted (AISIX wire-compatible).",
        epilog=options.console_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in options.OPTIONS:
        flags = [f"-{option.short}"] if option.short else []
        parser.add_argument(
            *flags,
            f"--{option.long}",
            metavar=option.metavar,
            default=option.default,
            help=option.help,
        )
    parser.add_argument("--version", action="version", version=f"twisted-gw {__version__}")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``sys.argv[1:]`` by default); ``--help`` and
    ``--version`` print and exit."""
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the gateway in the foreground until SIGTERM/SIGINT."""
    args = parse_args(argv)
    from twisted_gw.reactor import install_if_none

    install_if_none()  # before anything imports the default reactor
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from twisted_gw.observability.logfile import TurnBufferedLogObserver
    from twisted_gw.service import makeService

    service = makeService(args.config, reactor, workers=args.workers)
    observer = TurnBufferedLogObserver(sys.stdout, reactor)  # twistd's text format, a write a turn
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
