"""The hook manager's guarantees (in-process): order, an async pre_call chain,
rejection, exactly-once finalize, and a broken hook that breaks nothing else.
Plus the access-log line, which must never hold a key."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher

from tests.support.access_log import LOGFMT
from twisted_gw.config.snapshot import Snapshot, StoredEntry
from twisted_gw.errors import GatewayError, model_not_found
from twisted_gw.hooks.context import RequestContext
from twisted_gw.hooks.manager import HookManager
from twisted_gw.observability.access_log import access_line, logfmt_value
from twisted_gw.proxy.exchange import resolve_model


class Recorder:
    def __init__(self, name, calls, pre=None, fail_finalize=False):
        self.name, self.calls, self.pre, self.fail_finalize = name, calls, pre, fail_finalize

    def pre_call(self, ctx):
        self.calls.append((self.name, "pre"))
        return self.pre(ctx) if self.pre else None

    def post_call(self, ctx):
        self.calls.append((self.name, "post"))

    def finalize(self, ctx):
        self.calls.append((self.name, "finalize"))
        if self.fail_finalize:
            raise RuntimeError("hook bug")


def snapshot_with(models=(), keys=()):
    entries = [StoredEntry(f"/models/{i}", doc, 1, 1) for i, doc in models]
    entries += [StoredEntry(f"/apikeys/{i}", doc, 1, 1) for i, doc in keys]
    return Snapshot.build(entries)


def context(snapshot=None, **kw):
    return RequestContext(
        "rid-1",
        100.0,
        "POST",
        "/v1/chat/completions",
        "/v1/chat/completions",
        "127.0.0.1",
        snapshot or Snapshot(),
        **kw,
    )


def test_hooks_run_in_order_and_finalize_runs_once():
    calls = []
    manager = HookManager([Recorder("a", calls), Recorder("b", calls)])
    ctx = context()
    assert manager.pre_call(ctx) is None  # all synchronous: no Deferred at all
    manager.post_call(ctx)
    assert manager.finalize(ctx, "ok") is True
    assert manager.finalize(ctx, "client_gone") is False
    assert calls == [
        ("a", "pre"),
        ("b", "pre"),
        ("a", "post"),
        ("b", "post"),
        ("a", "finalize"),
        ("b", "finalize"),
    ]
    assert ctx.end_reason == "ok"


def test_async_pre_call_continues_the_chain_in_order():
    calls, clock = [], Clock()
    later = Recorder("slow", calls, pre=lambda ctx: _later(clock))
    manager = HookManager([later, Recorder("next", calls)])
    d = manager.pre_call(context())
    assert isinstance(d, defer.Deferred) and calls == [("slow", "pre")]
    clock.advance(1)
    assert calls == [("slow", "pre"), ("next", "pre")]
    assert d.called


def _later(clock):
    d = defer.Deferred()
    clock.callLater(1, d.callback, None)
    return d


def test_rejection_stops_later_pre_calls():
    calls = []

    def reject(ctx):
        raise model_not_found("x")

    manager = HookManager([Recorder("a", calls, pre=reject), Recorder("b", calls)])
    with pytest.raises(GatewayError):
        manager.pre_call(context())
    assert calls == [("a", "pre")]


def test_a_hook_that_raises_in_finalize_is_logged_and_others_still_run():
    calls, events = [], []
    globalLogPublisher.addObserver(events.append)
    try:
        manager = HookManager([Recorder("bad", calls, fail_finalize=True), Recorder("good", calls)])
        manager.finalize(context(), "ok")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert ("good", "finalize") in calls
    failures = [
        e for e in events if e.get("log_level") == LogLevel.critical and e.get("rid") == "rid-1"
    ]
    assert failures and failures[0]["hook"] == "bad"


MODEL = (
    "m1",
    {"name": "gpt", "model": "openai/x", "provider_config": {"api_key": "sk-provider-secret"}},
)
KEY = ("k1", {"key": "sk-client-secret", "allowed_models": ["gpt"]})


def test_resolve_model_resolves_and_rejects_in_contract_order():
    from twisted_gw.providers.interfaces import CHAT

    class Provider:
        endpoints = frozenset({CHAT})

    providers = {"openai": Provider()}
    snap = snapshot_with([MODEL], [KEY, ("k2", {"key": "sk-other", "allowed_models": []})])
    ctx = context(snap, api_key=snap.keys_by_key["sk-client-secret"], model_name="gpt")
    resolve_model(ctx, providers)
    assert ctx.model.id == "m1"
    with pytest.raises(GatewayError) as info:
        resolve_model(
            context(snap, api_key=snap.keys_by_key["sk-other"], model_name="nope"), providers
        )
    assert info.value.status == 400
    with pytest.raises(GatewayError) as info:
        resolve_model(
            context(snap, api_key=snap.keys_by_key["sk-other"], model_name="gpt"), providers
        )
    assert info.value.status == 403
    embeddings = context(snap, api_key=snap.keys_by_key["sk-client-secret"], model_name="gpt")
    embeddings.endpoint = "/v1/embeddings"
    with pytest.raises(GatewayError) as info:
        resolve_model(embeddings, providers)
    assert (info.value.status, info.value.code) == (400, "unsupported_endpoint")


def test_access_line_names_key_by_id_and_never_logs_secrets():
    snap = snapshot_with([MODEL], [KEY])
    ctx = context(snap, api_key=snap.keys_by_key["sk-client-secret"], model_name="gpt")
    ctx.status, ctx.end_reason, ctx.finished_at = 200, "ok", 100.0125
    ctx.usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    line = access_line(ctx, now=200.0)
    assert line == (
        "rid=rid-1 client=127.0.0.1 method=POST path=/v1/chat/completions status=200 model=gpt "
        "key_id=k1 latency_ms=12.5 first_token_ms=- prompt_tokens=3 completion_tokens=4 "
        "total_tokens=7 end=ok attempts=0 target=-"
    )
    assert "sk-client-secret" not in line and "sk-provider-secret" not in line


def test_access_line_names_the_model_the_client_sent_but_never_a_key():
    """CONTRACT 5.4: an unknown model is logged as sent (cut to 128
    characters); a configured client or provider key in it is ``[redacted]``."""
    snap = snapshot_with([MODEL], [KEY])
    ctx = context(snap, api_key=snap.keys_by_key["sk-client-secret"])
    ctx.status, ctx.end_reason, ctx.finished_at = 400, "rejected", 100.0125

    def model_of(name: str) -> str:
        ctx.model_name = name
        return dict(LOGFMT.findall(access_line(ctx, now=200.0)))["model"]

    assert model_of("gtp-4o-typo") == "gtp-4o-typo"
    assert model_of("sk-client-secret") == "[redacted]"  # a key pasted into "model"
    assert model_of("sk-provider-secret") == "[redacted]"
    assert model_of("x-sk-client-secret-y") == "x-[redacted]-y"
    assert model_of("m" * 300) == "m" * 128
    # redacted before the cut: no prefix of a key survives it
    assert model_of("m" * 120 + "sk-client-secret") == "m" * 120 + "[redacte"


def test_logfmt_quotes_only_when_needed():
    assert logfmt_value("/v1/models") == "/v1/models"
    assert logfmt_value('a b"c') == '"a b\\"c"'
    assert logfmt_value(None) == "-"
    assert logfmt_value("x" * 300) == "x" * 200 + "..."


def test_access_line_cannot_be_forged_through_usage_values():
    snap = snapshot_with([MODEL], [KEY])
    ctx = context(snap, api_key=snap.keys_by_key["sk-client-secret"], model_name="gpt")
    ctx.status, ctx.end_reason, ctx.finished_at = 200, "ok", 100.0
    ctx.usage = {
        "prompt_tokens": "5 end=ok\nforged rid=x status=200",
        "completion_tokens": 2,
        "total_tokens": True,
    }
    line = access_line(ctx, now=100.0)
    assert "\n" not in line and "forged" not in line
    assert "prompt_tokens=0 completion_tokens=2 total_tokens=0" in line
