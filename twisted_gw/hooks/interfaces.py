"""The hook seam: built-in checks and accounting, and third-party extensions."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IHook(Interface):
    """One step around every proxied request.

    Stages, run in hook order by the HookManager:
    - ``pre_call(ctx)``: before the upstream call; may end the request by
      raising (or failing with) a GatewayError. May return a Deferred.
    - ``post_call(ctx)``: after a successful upstream answer, before the
      response is written; may add ``ctx.response_headers``.
    - ``finalize(ctx)``: exactly once per request, on every path (success,
      rejection, upstream error, timeout, client gone); must not raise, and
      an exception is logged and does not stop the other hooks.
    """

    name = Attribute("Short name, used in logs and as the ctx.state key.")

    def pre_call(ctx):
        """Check or reserve; raise GatewayError to reject."""

    def post_call(ctx):
        """Look at the answer (ctx.usage, ctx.status)."""

    def finalize(ctx):
        """Settle and record; called exactly once."""


class IAdmission(Interface):
    """A hook that also decides whether a request may use a fallback model
    (CONTRACT 5.1: a fallback over its own limits is skipped)."""

    def admit(ctx, model):
        """May ``ctx`` also use ``model``? True or False, or a Deferred of it.

        True spends what using the model costs (its request counts, a
        concurrency slot), to be settled at finalize; False spends nothing."""


class IRequestTrace(Interface):
    """One request's trace (CONTRACT 5.3), told what the request's owner
    sees: each upstream attempt, how it failed, what the upstream answered.

    Present on ``ctx.trace`` only when tracing is on; the finalize hook of
    :mod:`twisted_gw.observability.tracing` ends it. None of its methods
    may raise into the request."""

    def attempt(deployment, target):
        """A context manager around one upstream attempt's call: the
        attempt's span begins, and is current while the call is made (so the
        upstream request carries its ``traceparent``)."""

    def attempt_failed(error):
        """The attempt now running failed before anything reached the client
        (``error``, a GatewayError); its span ends."""

    def answered(body):
        """The whole (non-stream) upstream answer, as bytes."""

    def chunk(doc):
        """One parsed upstream stream chunk."""
