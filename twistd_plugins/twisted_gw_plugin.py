"""twistd plugin: ``twistd -n twisted-gw --config PATH [--workers N]``.

Installed into the ``twisted.plugins`` namespace; only the service maker lives
here. The options and the service they make are in
:mod:`twisted_gw.twistd_options`, so a new option changes the package, not
this installed copy, and everything heavy is imported when the service is
made, so ``twistd --help`` stays fast.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_gw.twistd_options import GatewayOptions


class Options(GatewayOptions):
    pass


@implementer(IServiceMaker, IPlugin)
class GatewayServiceMaker:
    tapname = "twisted-gw"
    description = "OpenAI-compatible LLM gateway (AISIX wire-compatible)."
    options = Options

    def makeService(self, options: Options):
        from twisted_gw.twistd_options import make_service

        return make_service(options)


serviceMaker = GatewayServiceMaker()
