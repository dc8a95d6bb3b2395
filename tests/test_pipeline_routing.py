"""CONTRACT 5.1 in memory (twisted_gw.testing): the Exchange's loop over a
model's deployments and fallbacks, with the upstream calls answered by hand
on a Clock. Which deployment a call went to is ``call.model.index`` (the
providers are called with the deployment itself)."""

from __future__ import annotations

import json
import random

import pytest

from twisted_gw.errors import provider_error
from twisted_gw.testing import MemoryGateway

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "model": "up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
REFUSED = "connection refused by 127.0.0.1:9"


def target(name: str, **fields: object) -> dict:
    return {"model": f"openai/{name}", "provider_config": {"api_key": f"sk-{name}"}, **fields}


@pytest.fixture
def gw() -> MemoryGateway:
    gateway = MemoryGateway(upstream_timeout=10.0)
    gateway.proxy.router.random = random.Random(1)
    # deployment 0 is always tried first: the targets have a later priority
    gateway.add_model("r", "openai/own", targets=[target("t1", priority=1, timeout=500)])
    gateway.add_model("solo", "openai/solo", fallbacks=["backup", "closed", "missing", "limited"])
    gateway.add_model("backup", "openai/backup")
    gateway.add_model("closed", "openai/closed")
    gateway.add_model("limited", "openai/limited", rate_limit={"rpm": 1})
    gateway.key = gateway.add_key(["r", "solo", "backup", "limited"])
    return gateway


def send(gw: MemoryGateway, model: str = "r", path: str = CHAT, **body: object):
    doc = {"model": model, **(HELLO if path == CHAT else {"input": "x"}), **body}
    return gw.post(path, doc, gw.key)


def call(gw: MemoryGateway, n: int = -1):
    return gw.provider.calls[n]


def chunk(text: str) -> dict:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }


# -- retries before anything reached the client -----------------------------------------------


def test_a_refused_deployment_is_retried_on_the_next(gw):
    pending = send(gw)
    call(gw).fail(provider_error(REFUSED, "connect"))
    assert [c.model.index for c in gw.provider.calls] == [0, 1]
    assert call(gw).model.upstream_model == "t1" and call(gw).model.api_key == "sk-t1"
    call(gw).answer(ANSWER)
    response = gw.result(pending)
    assert response.code == 200 and response.json() == ANSWER
    assert response.headers["x-gateway-attempts"] == "2"
    ctx = gw.recorder.finalized[0]
    assert (ctx.attempts, ctx.target, ctx.end_reason) == (2, "r#1", "ok")
    assert gw.sample("twisted_gw_upstream_attempts_total", model="r", target="0", outcome="connect")
    assert gw.sample("twisted_gw_upstream_attempts_total", model="r", target="1", outcome="ok")
    assert len(gw.recorder.finalized) == 1


def test_a_deployment_past_its_timeout_is_cancelled_and_the_next_tried(gw):
    pending = send(gw)
    gw.clock.advance(9.999)  # deployment 0: the gateway's 10 s
    assert len(gw.provider.calls) == 1
    gw.clock.advance(0.001)
    assert call(gw, 0).cancelled and len(gw.provider.calls) == 2
    gw.clock.advance(0.5)  # deployment 1: its own 500 ms, and the last attempt
    response = gw.result(pending)
    assert call(gw, 1).cancelled
    assert response.code == 504 and response.headers["x-gateway-attempts"] == "2"
    assert gw.ends == ["timeout"]


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_client_error_from_the_upstream_is_answered_at_once(gw, status):
    pending = send(gw)
    call(gw).refuse(status, {"error": {"message": "bad", "type": "x", "code": "bad"}})
    response = gw.result(pending)
    assert response.code == status and len(gw.provider.calls) == 1
    assert response.headers["x-gateway-attempts"] == "1"
    assert gw.sample(
        "twisted_gw_upstream_attempts_total", model="r", target="0", outcome=str(status)
    )


@pytest.mark.parametrize("status, outcome", [(401, "auth"), (403, "auth"), (500, "500")])
def test_auth_and_server_errors_are_retried(gw, status, outcome):
    pending = send(gw)
    call(gw).refuse(status)
    call(gw).answer(ANSWER)
    assert gw.result(pending).code == 200
    assert gw.sample("twisted_gw_upstream_attempts_total", model="r", target="0", outcome=outcome)


def test_a_reason_not_in_retry_on_is_not_retried(gw):
    gw.add_model("picky", "openai/p", targets=[target("q")], routing={"retry_on": ["timeout"]})
    gw.key = gw.add_key(["picky"])
    pending = send(gw, "picky")
    call(gw).fail(provider_error(REFUSED, "connect"))
    response = gw.result(pending)
    assert response.code == 502 and len(gw.provider.calls) == 1


def test_every_attempt_failed_is_the_last_attempts_error(gw):
    pending = send(gw)
    call(gw).fail(provider_error(REFUSED, "connect"))
    call(gw).refuse(503, {"error": {"message": "overloaded"}})
    response = gw.result(pending)
    assert response.code == 502
    assert response.json()["error"]["message"] == (
        "Provider error: upstream returned status 503: overloaded"
    )
    assert response.headers["x-gateway-attempts"] == "2" and gw.ends == ["upstream_error"]


def test_a_request_refused_before_any_attempt_has_no_attempts_header(gw):
    response = gw.result(send(gw, "closed"))  # not in the key's allowed_models
    assert response.code == 403 and "x-gateway-attempts" not in response.headers
    assert gw.recorder.finalized[0].attempts == 0


# -- cooldowns --------------------------------------------------------------------------------


def test_retry_after_rests_the_deployment_and_later_requests_skip_it(gw):
    pending = send(gw)
    call(gw).refuse(429, {"error": {"message": "slow down"}}, retry_after="30")
    call(gw).answer(ANSWER)
    assert gw.result(pending).code == 200
    assert gw.sample("twisted_gw_deployment_cooldowns_total", model="r", target="0") == 1
    for _ in range(3):
        pending = send(gw)
        assert call(gw).model.index == 1
        call(gw).answer(ANSWER)
        assert gw.result(pending).headers["x-gateway-attempts"] == "1"
    gw.clock.advance(30)
    pending = send(gw)  # the cooldown is over: deployment 0 is probed
    assert call(gw).model.index == 0
    call(gw).answer(ANSWER)
    assert gw.result(pending).code == 200 and gw.proxy.router.cooling_down() == []


def test_the_last_attempt_resting_everything_still_tries(gw):
    gw.add_model("one", "openai/one")
    gw.key = gw.add_key(["one"])
    for _ in range(3):  # three failures in the window: a cooldown
        pending = send(gw, "one")
        call(gw).refuse(502)
        assert gw.result(pending).code == 502
    assert gw.sample("twisted_gw_deployment_cooldowns_total", model="one", target="0") == 1
    pending = send(gw, "one")  # resting, and the only one: tried anyway
    call(gw).answer(ANSWER)
    assert gw.result(pending).code == 200


# -- streams: retried only before the first chunk ------------------------------------------------


def test_a_stream_cut_before_its_first_chunk_is_retried(gw):
    pending = send(gw, stream=True)
    call(gw).stream().end(clean=False, detail="connection lost")
    source = call(gw).stream()
    source.push(chunk("hel"), chunk("lo"))
    source.push(chunk("!"))
    source.end()
    response = gw.result(pending)
    assert response.code == 200 and response.headers["content-type"] == "text/event-stream"
    assert response.data[-1] == "[DONE]" and len(response.data) == 4
    assert response.headers["x-gateway-attempts"] == "2"
    assert gw.sample("twisted_gw_upstream_attempts_total", model="r", target="0", outcome="connect")
    assert gw.ends == ["done"]
    assert all(s.in_flight == 0 for s in gw.proxy.router._states.values())


def test_a_malformed_first_event_is_retried_and_its_upstream_closed(gw):
    pending = send(gw, stream=True)
    first = call(gw).stream()
    first.push(b"garbage")
    assert first.cancelled and len(gw.provider.calls) == 2
    source = call(gw).stream()
    source.push(chunk("ok"))
    source.end()
    response = gw.result(pending)
    assert response.code == 200 and response.data[-1] == "[DONE]"
    assert [json.loads(d) for d in response.data[:-1]] == [chunk("ok")]


def test_a_stream_cut_after_its_first_chunk_is_not_retried(gw):
    pending = send(gw, stream=True)
    source = call(gw).stream()
    source.push(chunk("a"))
    gw.flush()
    state = gw.proxy.router.state(call(gw).model)
    assert state.in_flight == 1  # answered, and still being relayed (least_busy counts it)
    source.end(clean=False, detail="connection lost")
    response = gw.result(pending)
    assert response.code == 200 and "[DONE]" not in response.data
    assert len(gw.provider.calls) == 1 and response.headers["x-gateway-attempts"] == "1"
    assert gw.ends == ["upstream_cut"] and state.in_flight == 0


def test_a_first_chunk_timeout_is_retried(gw):
    pending = send(gw, stream=True)
    first = call(gw).stream()
    gw.clock.advance(10)
    assert first.cancelled and len(gw.provider.calls) == 2
    source = call(gw).stream()
    source.push(chunk("ok"))
    source.end()
    assert gw.result(pending).data[-1] == "[DONE]"


# -- the client leaving, and nothing left behind ---------------------------------------------------


def test_a_client_gone_between_attempts_ends_once_and_leaks_nothing(gw):
    gw.add_model("lim", "openai/l", targets=[target("m")], rate_limit={"concurrency": 1})
    gw.key = gw.add_key(["lim"])
    pending = send(gw, "lim")
    call(gw).fail(provider_error(REFUSED, "connect"))
    gw.disconnect()
    assert call(gw).cancelled and gw.ends == ["client_gone"]
    pending.addErrback(lambda _: None)
    assert gw.limiter.slots_held() == 0
    assert all(s.in_flight == 0 for s in gw.proxy.router._states.values())


# -- fallbacks ------------------------------------------------------------------------------------


def test_a_fallback_answers_when_the_model_failed(gw):
    pending = send(gw, "solo")
    call(gw).fail(provider_error(REFUSED, "connect"))
    assert call(gw).model.upstream_model == "backup"
    call(gw).answer(ANSWER)
    response = gw.result(pending)
    assert response.code == 200 and response.json()["model"] == "up"  # the upstream's
    assert response.headers["x-gateway-attempts"] == "2"
    ctx = gw.recorder.finalized[0]
    assert (ctx.model.name, ctx.target) == ("solo", "backup#0")
    assert gw.sample(
        "twisted_gw_upstream_attempts_total", model="solo", target="backup#0", outcome="ok"
    )


def test_fallbacks_the_key_may_not_use_missing_or_over_their_limits_are_skipped(gw):
    pending = send(gw, "solo")  # spends the only request "limited" has this minute
    call(gw).fail(provider_error(REFUSED, "connect"))
    call(gw).fail(provider_error(REFUSED, "connect"))  # backup
    assert call(gw).model.upstream_model == "limited"  # closed and missing skipped
    call(gw).fail(provider_error(REFUSED, "connect"))
    assert gw.result(pending).headers["x-gateway-attempts"] == "3"
    pending = send(gw, "solo")
    call(gw).fail(provider_error(REFUSED, "connect"))
    call(gw).fail(provider_error(REFUSED, "connect"))  # backup; limited is over its rpm
    response = gw.result(pending)
    assert response.code == 502 and response.headers["x-gateway-attempts"] == "2"
    assert [c.model.upstream_model for c in gw.provider.calls[3:]] == ["solo", "backup"]


def test_a_client_error_is_not_a_reason_to_fall_back(gw):
    pending = send(gw, "solo")
    call(gw).refuse(400)
    assert gw.result(pending).code == 400 and len(gw.provider.calls) == 1


def test_embeddings_through_a_fallback_carry_the_clients_model_name(gw):
    pending = send(gw, "solo", path=EMB)
    call(gw).fail(provider_error(REFUSED, "connect"))
    fallback_call = call(gw)
    # the provider writes the deployment's name into an embeddings answer
    assert fallback_call.kind == "embeddings"
    assert fallback_call.model.upstream_model == "backup" and fallback_call.model.name == "solo"
    fallback_call.answer({"object": "list", "data": [], "model": "solo"})
    assert gw.result(pending).code == 200


def test_a_fallback_holds_its_concurrency_slot_until_the_end(gw):
    gw.add_model("fb", "openai/fb", rate_limit={"concurrency": 1})
    gw.add_model("main", "openai/main", fallbacks=["fb"])
    gw.key = gw.add_key(["main", "fb"])
    pending = send(gw, "main")
    call(gw).fail(provider_error(REFUSED, "connect"))
    assert gw.limiter.slots_held() == 1
    busy = gw.result(send(gw, "fb"))
    assert busy.code == 429 and "x-gateway-attempts" not in busy.headers
    call(gw).answer(ANSWER)
    assert gw.result(pending).code == 200
    assert gw.limiter.slots_held() == 0
