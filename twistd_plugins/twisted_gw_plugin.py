"""twistd plugin: ``twistd -n twisted-gw --config PATH [--workers N]``.

Installed into the ``twisted.plugins`` namespace; only the service maker lives
here. The options are a table in the package (:mod:`twisted_gw.options`) and
how they become a service is :func:`twisted_gw.options.make_twistd_service`,
so a new option changes the package, not this installed copy; everything
heavy is imported when the service is made, so ``twistd --help`` stays fast.
"""

from typing import ClassVar

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer

from twisted_gw.options import OPTIONS, twistd_longdesc


class Options(usage.Options):
    # the same table as the console script's (twisted_gw.options.OPTIONS)
    optParameters: ClassVar[list] = [[o.long, o.short, o.default, o.help] for o in OPTIONS]
    longdesc = twistd_longdesc()

    def opt_version(self) -> None:
        """Print the twisted-gw version and exit."""
        from twisted_gw import __version__

        print(f"twisted-gw {__version__}")
        raise SystemExit(0)


@implementer(IServiceMaker, IPlugin)
class GatewayServiceMaker:
    tapname = "twisted-gw"
    description = "OpenAI-compatible LLM gateway (AISIX wire-compatible)."
    options = Options

    def makeService(self, options: Options):
        from twisted_gw.options import make_twistd_service

        return make_twistd_service(options)


serviceMaker = GatewayServiceMaker()
