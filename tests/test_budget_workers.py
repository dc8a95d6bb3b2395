"""Issue 17 with ``server.workers`` and no Redis, black-box: a key's budget
is the gateway's, not each worker's (the supervisor holds the one budget
store, as it holds the rate limits), and a killed worker's reservations are
given back."""

from __future__ import annotations

import uuid

import pytest
from twisted.internet import task
from twisted.python.failure import Failure
from twisted.test import iosim

from tests.conftest import secret
from tests.test_workers_blackbox import chat_on, pinned, seen_by_all, start
from twisted_gw.proxy.history import ResponseHistory
from twisted_gw.ratelimit.memory import MemoryRateLimitStore
from twisted_gw.spend.interfaces import Reservation
from twisted_gw.spend.memory import MemoryBudgetStore
from twisted_gw.workers.shared import (
    RemoteBudgetStore,
    SharedStateServer,
    WorkerAMP,
)

PRICE = {"input_per_mtok": 1000, "output_per_mtok": 2000}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gateway = start(tmp_path_factory.mktemp("budget-workers"))
    yield gateway
    gateway.process.stop()


def test_one_budget_across_workers_with_the_memory_store(gw):
    conns = pinned(gw)
    try:
        model = f"priced-{uuid.uuid4().hex[:8]}"
        doc = {"name": model, "model": "mock/echo", "provider_config": {}, "pricing": PRICE}
        assert gw.admin_call("POST", "/aisix/admin/models", doc)[0] == 201
        key = secret()
        doc = {"key": key, "allowed_models": [model], "budget": {"max_usd": 0.25}}
        assert gw.admin_call("POST", "/aisix/admin/apikeys", doc)[0] == 201
        seen_by_all(gw, conns, key, "not-allowed")  # a 403: known, nothing spent
        body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        results = []
        for i in range(12):  # alternating workers
            status, headers, _ = chat_on(conns[sorted(conns)[i % 2]], key, doc=body)
            results.append((status, headers.get("x-budget-remaining-usd")))
        # each reserves 0.112 USD (12 prompt tokens, 50 out) and settles the mock's
        # usage, 12 prompt + 1 completion = 0.014 USD: 10 fit in 0.25 USD, not 10 a worker
        assert [s for s, _ in results] == [200] * 10 + [429] * 2, results
        assert [r for _, r in results[:3]] == ["0.138000", "0.124000", "0.110000"], results
        assert results[-1][1] == f"{0.25 - 10 * 0.014:.6f}" == "0.110000"
    finally:
        for conn in conns.values():
            conn.close()


# -- in memory: the supervisor's budget store over AMP ------------------------------------


def connected(budgets):
    clock = task.Clock()
    clock.running = True  # WorkerAMP stops a running reactor when its supervisor goes
    clock.stop = lambda: None
    clock.addSystemEventTrigger = lambda *a, **k: None
    limiter, history = MemoryRateLimitStore(clock), ResponseHistory(clock)
    return iosim.connectedServerAndClient(
        lambda: SharedStateServer(limiter, history, budgets=budgets),
        lambda: WorkerAMP(clock, 1),
    )


def result_of(d, pump):
    pump.flush()
    out = []
    d.addBoth(out.append)
    pump.flush()
    assert out, "no answer"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def test_two_workers_reserve_and_settle_in_the_supervisor_s_one_store():
    budgets = MemoryBudgetStore(task.Clock())
    (one, _, pump1), (two, _, pump2) = connected(budgets), connected(budgets)
    a, b = RemoteBudgetStore(one), RemoteBudgetStore(two)
    assert result_of(a.reserve("s", "r1", 600, 1000, 0), pump1) == Reservation(True, 400)
    assert result_of(b.reserve("s", "r2", 600, 1000, 0), pump2) == Reservation(False, 400)
    assert a.held() == 1 and budgets.held() == 1
    result_of(a.settle("s", "r1", 100, 0), pump1)
    assert a.held() == 0 and result_of(b.remaining("s", 1000), pump2) == 900
    assert result_of(b.reserve("s", "r2", 600, 1000, 0), pump2).ok


def test_a_worker_that_goes_away_gives_its_reservations_back():
    budgets = MemoryBudgetStore(task.Clock())
    client, server, pump = connected(budgets)
    store = RemoteBudgetStore(client)
    assert result_of(store.reserve("s", "r1", 700, 1000, 0), pump).ok
    assert budgets.reserved("s") == 700
    server.transport.loseConnection()
    pump.flush()
    assert budgets.reserved("s") == 0 and budgets.held() == 0 and budgets.spent("s") == 0
