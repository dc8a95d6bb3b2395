"""Built-in hook 1: the model exists, the key may use it, and its provider
serves the endpoint (CONTRACT 4.1: checks 3 and 4, before any rate limit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from twisted_gw.errors import model_access_forbidden, model_not_found, unsupported_endpoint
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.interfaces import IHook


@implementer(IHook)
class ValidateModelHook:
    """Resolves ``ctx.model`` from the request's snapshot, or rejects 400/403."""

    name = "validate_model"

    def __init__(self, providers: Mapping[str, Any]) -> None:
        self.providers = providers

    def pre_call(self, ctx: RequestContext) -> None:
        if ctx.model_name is None:  # endpoints without a model (GET /v1/models)
            return
        model = ctx.snapshot.models_by_name.get(ctx.model_name)
        if model is None:
            raise model_not_found(ctx.model_name)
        if ctx.api_key is None or ctx.model_name not in ctx.api_key.allowed_models:
            raise model_access_forbidden(ctx.model_name)
        endpoint = ctx.endpoint.removeprefix("/v1/")
        provider = self.providers.get(model.provider)
        if provider is None or endpoint not in provider.endpoints:
            raise unsupported_endpoint(ctx.model_name, endpoint)
        ctx.model = model
        return

    def post_call(self, ctx: RequestContext) -> None:
        pass

    def finalize(self, ctx: RequestContext) -> None:
        pass
