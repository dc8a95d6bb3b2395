"""Routing's choices and cooldowns (CONTRACT 5.1) on a Clock: the Router and
its Plans alone, no request around them (the exchange's loop over them is in
tests/test_pipeline_routing.py, the wire in tests/test_routing_blackbox.py)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from twisted_gw.config.entities import Cooldown, Model, SchemaError, parse_model
from twisted_gw.proxy.routing import MAX_RETRY_AFTER, Router, retry_after_seconds

COOLDOWN = Cooldown(failures=2, window_ms=10_000, duration_ms=30_000)


def model(*targets: dict, routing: dict | None = None, **own: object) -> Model:
    doc: dict = {"name": "m", "model": "openai/own", "provider_config": {"api_key": "k0"}, **own}
    if targets:
        doc["targets"] = [
            {"model": f"openai/t{i}", "provider_config": {"api_key": f"k{i}"}, **t}
            for i, t in enumerate(targets, start=1)
        ]
    if routing is not None:
        doc["routing"] = routing
    return parse_model("id-m", doc)


def router(seed: int = 0) -> tuple[Router, Clock]:
    clock = Clock()
    clock.advance(1000)
    return Router(clock, random.Random(seed)), clock


def walk(r: Router, m: Model) -> list[int]:
    """Every deployment one request's plan hands out, in order."""
    plan = r.plan(m)
    order = []
    while (d := plan.next()) is not None:
        order.append(d.index)
    return order


def fail(r: Router, d: Model, cooldown: Cooldown = COOLDOWN, retry_after: float | None = None):
    state, probe = r.began(d)
    return r.failed(state, probe, cooldown, retry_after)


# -- the document -----------------------------------------------------------------------


def test_a_model_without_routing_fields_is_one_deployment_tried_once():
    m = parse_model("id", {"name": "m", "model": "openai/x", "provider_config": {"api_key": "k"}})
    r, _ = router()
    assert m.deployments == (m,) and m.fallbacks == ()
    assert walk(r, m) == [0]
    assert m.doc == {"name": "m", "model": "openai/x", "provider_config": {"api_key": "k"}}


def test_targets_inherit_the_models_timeout_and_keep_their_own():
    m = model({"timeout": 5}, {}, timeout=9)
    assert [d.timeout_ms for d in m.deployments] == [9, 5, 9]
    assert [d.index for d in m.deployments] == [0, 1, 2]
    assert {d.name for d in m.deployments} == {"m"}  # what the client named
    assert m.targets[0].rate_limit is None and m.targets[0].api_key == "k1"


def test_the_stored_document_keeps_the_routing_fields_as_written():
    m = model({"weight": 3}, routing={"retries": 1}, weight=2, fallbacks=["b"])
    assert m.doc["targets"] == [
        {"model": "openai/t1", "provider_config": {"api_key": "k1"}, "weight": 3}
    ]
    assert (m.doc["routing"], m.doc["weight"], m.doc["fallbacks"]) == ({"retries": 1}, 2, ["b"])


@pytest.mark.parametrize(
    "routing, text",
    [
        ({"retry_on": [400]}, '"/routing/retry_on/0" validation failed: 400 is a client error'),
        ({"retry_on": [599, 600]}, "600 is greater than the maximum of 599"),
        ({"retry_on": ["later"]}, '"later" is not one of ["connect","timeout","auth"]'),
        ({"strategy": "random"}, '"random" is not one of ["weighted","least_busy"]'),
        ({"retries": 11}, "11 is greater than the maximum of 10"),
        ({"cooldown": {"window_ms": 0}}, "0 is less than the minimum of 1"),
    ],
)
def test_routing_mistakes_are_schema_errors(routing, text):
    with pytest.raises(SchemaError) as info:
        model(routing=routing)
    assert str(info.value).startswith("JSON schema validation error: property ")
    assert text in str(info.value)


def test_401_and_403_in_retry_on_are_auth():
    assert model(routing={"retry_on": [401, 403, 429]}).routing.retry_on == {"auth", 429}


# -- choices --------------------------------------------------------------------------------


def test_each_deployment_is_tried_once_by_default():
    r, _ = router()
    m = model({}, {})
    for _ in range(50):
        order = walk(r, m)
        assert sorted(order) == [0, 1, 2]


def test_retries_past_the_deployments_try_them_again_only_after_each_once():
    r, _ = router()
    m = model({}, routing={"retries": 4})
    for _ in range(20):
        order = walk(r, m)
        assert len(order) == 5
        assert sorted(order[:2]) == [0, 1]  # no repeat while one is untried


def test_lower_priority_first_then_the_next():
    r, _ = router()
    m = model({"priority": 2}, {"priority": 1}, {"priority": 1})
    for _ in range(30):
        order = walk(r, m)
        assert order[0] == 0 and sorted(order[1:3]) == [2, 3] and order[3] == 1


def test_weighted_draws_in_proportion_to_weight():
    r, _ = router(seed=7)
    m = model({"weight": 3})
    firsts = Counter(walk(r, m)[0] for _ in range(4000))
    assert 0.70 < firsts[1] / 4000 < 0.80  # 3/4 expected


def test_least_busy_picks_the_fewest_in_flight():
    r, _ = router()
    m = model({}, {}, routing={"strategy": "least_busy"})
    r.began(m.deployments[0])
    r.began(m.deployments[0])
    r.began(m.deployments[1])
    assert walk(r, m)[0] == 2


# -- cooldowns ----------------------------------------------------------------------------------


def test_failures_within_the_window_start_a_cooldown_and_outside_it_do_not():
    r, clock = router()
    m = model({})
    d0 = m.deployments[0]
    assert fail(r, d0) is False
    clock.advance(10.5)  # the first failure left the 10 s window
    assert fail(r, d0) is False
    clock.advance(1)
    assert fail(r, d0) is True
    assert all(walk(r, m)[0] == 1 for _ in range(20))
    assert r.cooling_down() == [("id-m", 0, pytest.approx(30.0))]


def test_after_the_cooldown_one_request_probes_and_success_ends_it():
    r, clock = router()
    m = model({})
    d0 = m.deployments[0]
    fail(r, d0, retry_after=5)
    clock.advance(5)
    state, probe = r.began(d0)  # the probe
    assert probe is True
    assert all(walk(r, m)[0] == 1 for _ in range(20))  # others wait for the probe
    r.succeeded(state, probe)
    assert r.cooling_down() == []
    r.released(state)
    assert r.state(d0).in_flight == 0
    assert Counter(walk(r, m)[0] for _ in range(200))[0] > 50


def test_a_failed_probe_rests_again_at_once():
    r, clock = router()
    m = model({})
    d0 = m.deployments[0]
    fail(r, d0, retry_after=5)
    clock.advance(6)
    assert fail(r, d0) is True  # one failure is enough for a probe
    assert r.cooling_down() == [("id-m", 0, pytest.approx(30.0))]


def test_a_probe_abandoned_lets_the_next_request_probe():
    r, clock = router()
    d0 = model({}).deployments[0]
    fail(r, d0, retry_after=5)
    clock.advance(6)
    state, probe = r.began(d0)
    r.abandoned(state, probe)
    assert r.began(d0)[1] is True


def test_all_cooling_down_are_still_tried_first_to_recover_first():
    r, _ = router()
    m = model({}, {})
    d0, d1, d2 = m.deployments
    fail(r, d0, retry_after=30)
    fail(r, d1, retry_after=10)
    fail(r, d2, retry_after=20)
    assert walk(r, m) == [1, 2, 0]


def test_retry_after_is_capped_at_ten_minutes():
    r, clock = router()
    m = model({})
    fail(r, m.deployments[0], retry_after=retry_after_seconds("86400", clock.seconds()))
    assert r.cooling_down()[0][2] == pytest.approx(MAX_RETRY_AFTER)


def test_a_changed_upstream_starts_with_a_clean_state():
    r, _ = router()
    m = model({})
    fail(r, m.deployments[0], retry_after=30)
    moved = parse_model(
        "id-m", {**m.doc, "provider_config": {"api_key": "k0", "api_base": "http://b"}}
    )
    assert r.cooling_down() == [("id-m", 0, pytest.approx(30.0))]
    walk(r, moved)  # sees the deployment's new upstream
    assert r.cooling_down() == []


@pytest.mark.parametrize(
    "value, expected",
    [
        ("30", 30.0),
        (" 7 ", 7.0),
        ("0", None),
        ("-3", None),
        ("soon", None),
        (None, None),
        ("", None),
    ],
)
def test_retry_after_seconds(value, expected):
    assert retry_after_seconds(value, 1000.0) == expected


def test_retry_after_as_an_http_date():
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 12, 1, 12, 0, 45, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(later, now) == pytest.approx(45.0)
    earlier = format_datetime(datetime(2026, 12, 1, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(earlier, now) is None


# -- the property of the plan -------------------------------------------------------------------

deployment = st.fixed_dictionaries(
    {}, optional={"weight": st.integers(1, 5), "priority": st.integers(0, 3)}
)


@settings(max_examples=300, deadline=None)
@given(
    targets=st.lists(deployment, max_size=5),
    retries=st.one_of(st.none(), st.integers(0, 10)),
    strategy=st.sampled_from(["weighted", "least_busy"]),
    resting=st.sets(st.integers(0, 5)),
    seed=st.integers(0, 2**16),
)
def test_a_plan_never_exceeds_its_budget_nor_repeats_while_one_is_untried(
    targets, retries, strategy, resting, seed
):
    routing: dict = {"strategy": strategy}
    if retries is not None:
        routing["retries"] = retries
    m = model(*targets, routing=routing)
    r, _ = router(seed)
    for i in resting & set(range(len(m.deployments))):
        fail(r, m.deployments[i], retry_after=60 + i)
    order = walk(r, m)
    n = len(m.deployments)
    assert len(order) == 1 + (n - 1 if retries is None else retries)
    first_round = order[:n]
    assert len(set(first_round)) == len(first_round)  # no repeat while one is untried
    # priorities are respected among the deployments not resting, which come first
    free = [i for i in first_round if i not in resting]
    priorities = [m.deployments[i].priority for i in free]
    assert priorities == sorted(priorities)
    assert first_round[: len(free)] == free
