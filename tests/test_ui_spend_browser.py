"""Issue 17: the admin UI's Spend page in headless Chromium, against the
real gateway and its SQLite ledger: per API key (with its budget, or "no
budget") and per model over the last day, week or month, with inline SVG
bars. Requests go through the proxy (the mock provider: no upstream); two
priced rows are written into the ledger file by hand, at chosen times and
costs (a priced model would write such rows itself, at the present time).

Needs Debian's ``chromium`` and ``chromium-driver`` (see test_ui_browser.py)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any

import pytest

from tests.conftest import secret, start_gateway
from tests.support.gateway import http
from tests.test_ui_browser import CHROMIUM, Browser, _chromium

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="headless browser tests need Chromium: apt-get install chromium chromium-driver",
)

MODEL = "spend-echo"
DAY = 86400


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ui-spend")
    gateway = start_gateway(directory)
    gateway.ledger_path = directory / "ledger.sqlite3"
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="module")
def traffic(gw) -> dict[str, Any]:
    """Two keys that made requests: a 3 times, b once; then two priced rows."""
    status, _ = gw.admin_call(
        "PUT",
        f"/aisix/admin/models/{MODEL}",
        {"name": MODEL, "model": "mock/echo", "provider_config": {}},
    )
    assert status in (200, 201)
    keys = {}
    for name in ("spend-a", "spend-b"):
        keys[name] = secret()
        doc = {"key": keys[name], "allowed_models": [MODEL]}
        assert gw.admin_call("PUT", f"/aisix/admin/apikeys/{name}", doc)[0] in (200, 201)
    rids = []
    for name, n in (("spend-a", 3), ("spend-b", 1)):
        for _ in range(n):
            status, headers, _ = http(
                "POST",
                gw.proxy + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {keys[name]}"},
                body=json.dumps(
                    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
                ).encode(),
            )
            assert status == 200
            rids.append(headers["x-request-id"])
    deadline = time.monotonic() + 5
    while True:  # the writer is at most a second behind
        with sqlite3.connect(gw.ledger_path) as db:
            if db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == len(rids):
                break
        assert time.monotonic() < deadline, "the requests' rows never came"
        time.sleep(0.05)
    now = time.time()
    priced = [
        (
            now - 3 * DAY,
            "priced-old",
            "spend-b",
            MODEL,
            f"{MODEL}#0",
            200,
            "ok",
            100,
            0,
            50,
            0.5,
            False,
            9.0,
        ),
        (
            now - 60,
            "priced-new",
            "spend-a",
            MODEL,
            f"{MODEL}#0",
            200,
            "ok",
            10,
            0,
            5,
            0.25,
            True,
            3.0,
        ),
    ]
    with sqlite3.connect(gw.ledger_path) as db:
        db.executemany(
            "INSERT INTO ledger (ts, request_id, key_id, model, deployment, status, end_reason,"
            " prompt_tokens, cached_tokens, completion_tokens, cost_usd, cost_estimated, latency_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            priced,
        )
    return keys


@pytest.fixture(scope="module")
def browser(gw, tmp_path_factory):
    user_data = tempfile.mkdtemp(prefix="twisted-gw-chromium-")
    driver = _chromium(user_data)
    driver.set_window_size(1280, 860)
    driver.set_page_load_timeout(20)
    try:
        yield Browser(driver, gw.admin, tmp_path_factory.mktemp("ui-spend-screens"))
        errors = [
            e
            for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]
        assert errors == [], errors
    finally:
        driver.quit()
        shutil.rmtree(user_data, ignore_errors=True)


def cells(b: Browser, section: str) -> list[list[str]]:
    return [
        [td.text for td in tr.find_elements("css selector", "td")]
        for tr in b.all(f"#{section} tbody tr")
    ]


def test_spend_page_shows_keys_with_budgets_and_models_over_the_chosen_period(gw, traffic, browser):
    b = browser
    b.go("/ui/")
    b.fill("#admin-key", gw.admin_key + "\n")
    b.wait(lambda: b.heading() == "Overview", what="the overview")
    b.click("#nav a[href='/ui/spend']")
    b.wait(lambda: b.heading() == "Spend", what="the spend page")
    assert b.css('#nav a[aria-current="page"]').text == "Spend"
    assert b.css("#spend-range").get_attribute("value") == "week"  # the default period

    # the last 7 days: b's priced row of 3 days ago is in; by cost, then requests
    b.wait(lambda: len(cells(b, "spend-keys")) == 2, what="the keys' rows")
    assert cells(b, "spend-keys") == [
        ["spend-b", "2", "112", "51", "$0.5000", "no budget"],
        ["spend-a", "4", "46", "8", "$0.2500", "no budget"],
    ]
    bars = b.all("#spend-keys-chart g.bar")
    assert [g.get_attribute("data-id") for g in bars] == ["spend-b", "spend-a"]
    widths = [float(g.find_element("css selector", "rect").get_attribute("width")) for g in bars]
    assert widths[0] == 2 * widths[1]  # $0.50 against $0.25
    assert b.css("#spend-keys-chart").get_attribute("aria-label") == "Spend by API key: cost in USD"
    assert cells(b, "spend-models") == [[MODEL, "6", "158", "59", "$0.7500"]]
    assert "(UTC)" in b.css("#spend-period").text
    b.shot("spend-week")

    # the last day: the old row is out, b has no priced request left
    b.select("#spend-range", "day")
    b.wait(lambda: cells(b, "spend-keys")[0][0] == "spend-a", what="the day's report")
    assert cells(b, "spend-keys") == [
        ["spend-a", "4", "46", "8", "$0.2500", "no budget"],
        ["spend-b", "1", "12", "1", "–", "no budget"],
    ]
    b.select("#spend-range", "month")
    b.wait(lambda: cells(b, "spend-keys")[0][0] == "spend-b", what="the month's report")
    b.check_accessible_controls()
    b.check_same_origin_only()
    b.shot("spend-month")

    # a phone: the chart scales down, the page never scrolls sideways
    b.driver.set_window_size(390, 844)
    try:
        b.wait(
            lambda: (
                b.js(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                <= 0
            ),
            timeout=3,
            what="no sideways scroll",
        )
        b.shot("spend-phone")
    finally:
        b.driver.set_window_size(1280, 860)

    # a key's budget (budget.max_usd, set through the API keys of the budget work) and its use
    shown = b.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        import("/ui/spend.js").then((m) => done([
          m.budgetText({max_usd: 5}, 1.25), m.budgetText(undefined, 1), m.budgetText({max_usd: 2}, null),
        ]));
        """
    )
    assert shown == ["$5.00 (25% used)", "no budget", "$2.00"]


def test_a_keys_budget_and_its_use_in_the_period_show_on_its_row(gw, traffic, browser):
    # spend-a spent $0.25 in the last week (its priced row of a minute ago)
    doc = {
        "key": traffic["spend-a"],
        "allowed_models": [MODEL],
        "budget": {"max_usd": 1, "period": "month"},
    }
    assert gw.admin_call("PUT", "/aisix/admin/apikeys/spend-a", doc)[0] == 200
    b = browser
    try:
        b.go("/ui/spend")
        b.wait(lambda: b.heading() == "Spend", what="the spend page")
        b.wait(
            lambda: (
                ["spend-a", "4", "46", "8", "$0.2500", "$1.00 (25% used)"] in cells(b, "spend-keys")
            ),
            what="spend-a's budget on its row",
        )
        assert ["spend-b", "2", "112", "51", "$0.5000", "no budget"] in cells(b, "spend-keys")
    finally:
        doc.pop("budget")
        assert gw.admin_call("PUT", "/aisix/admin/apikeys/spend-a", doc)[0] == 200


def test_spend_page_without_requests_in_the_period_says_so(gw, browser):
    b = browser
    with sqlite3.connect(gw.ledger_path) as db:
        db.execute("DELETE FROM ledger")
    b.go("/ui/spend")
    b.wait(lambda: b.heading() == "Spend")
    b.wait(
        lambda: "No requests in this period." in b.css("#spend-keys").text, what="the empty state"
    )
    assert "No requests in this period." in b.css("#spend-models").text
