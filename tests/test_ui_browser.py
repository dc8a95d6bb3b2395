"""The admin UI in a real browser (issue 8): headless Debian Chromium driven by
Selenium, against the real gateway process and a mock upstream.

The tests run in order and share one browser and one gateway, like an
operator's session: sign in, create a model and an API key through the forms,
hit a schema error, follow deep links, chat in the playground (streamed text
must appear progressively), stop a stream (the upstream must see its
connection closed), read the overview, create a provider entity and a model
naming it (CONTRACT-NEXT 1), delete them all. Each view is saved as a
screenshot under the test's artifacts directory and copied to
``/tmp/twisted-gw-ui-screens/``.

The mock upstream lives in this process's reactor, and Selenium blocks, so
each test's browser steps run in a thread (``deferToThread``) and reach the
reactor with ``blockingCallFromThread``.

Needs Debian's ``chromium`` and ``chromium-driver`` and PyPI's ``selenium``;
skipped, with the reason, only where Chromium is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.conftest import SESSION_SECRETS, secret, start_gateway
from tests.support.gateway import http
from tests.support.mock_upstream import chat_chunk, sse_event
from twisted_gw.admin.openapi import catalog_document

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENS = Path("/tmp/twisted-gw-ui-screens")

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="headless browser tests need Chromium: apt-get install chromium chromium-driver",
)

MODEL = "ui-stream"  # on the mock upstream, streams with gaps
ECHO = "ui-echo"  # the mock provider
ROUTED = "ui-routed"  # on the mock upstream, with a target on the mock provider
WORDS = ["Streaming ", "arrives ", "word ", "by ", "word ", "here."]
LOCAL = "ui-local"  # a provider entity of type mock
NAMED = "ui-named"  # a model of the later wire, naming it
UPSTREAM_ID = "org/echo:v1"  # an upstream model id with "/" and ":", sent verbatim


# -- the browser -------------------------------------------------------------------------


class Browser:
    """A Chromium session and the few things these tests do with it."""

    def __init__(self, driver: Any, base: str, screens: Path) -> None:
        self.driver = driver
        self.base = base
        self.screens = screens

    # finding and waiting
    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        from selenium.common.exceptions import WebDriverException

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except WebDriverException as e:  # not there yet, or replaced while we read it
                last = e
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or condition}: {last}")

    def visible(self, selector: str, timeout: float = 10.0) -> Any:
        return self.wait(
            lambda: next((e for e in self.all(selector) if e.is_displayed()), None),
            timeout,
            f"{selector} to be visible",
        )

    def heading(self) -> str:
        return self.visible("main h1").text

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # acting
    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    def fill(self, selector: str, text: str) -> None:
        element = self.visible(selector)
        element.clear()
        element.send_keys(text)

    def click(self, selector: str) -> None:
        self.visible(selector).click()

    def select(self, selector: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.visible(selector)).select_by_value(value)

    def shot(self, name: str) -> Path:
        """A full-page screenshot: the window grows to the page's height for it."""
        width, height = self.driver.get_window_size().values()
        full = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(width, max(height, min(full + 100, 4000)))
        self.js("window.scrollTo(0, 0)")
        path = self.screens / f"{name}.png"
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(width, height)
        SCREENS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENS / path.name)
        return path

    # checks every view gets
    def check_accessible_controls(self) -> None:
        """Every visible form control has a label (or an aria-label)."""
        unlabelled = self.js(
            """
            return [...document.querySelectorAll('input, select, textarea, button')]
              .filter(el => el.offsetParent !== null)
              .filter(el => el.tagName === 'BUTTON'
                ? !(el.textContent.trim() || el.getAttribute('aria-label'))
                : !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
              .map(el => el.outerHTML.slice(0, 120));
            """
        )
        assert unlabelled == []

    def check_same_origin_only(self) -> None:
        """Nothing was loaded from anywhere but the admin listener."""
        urls = self.js("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(self.base + "/") for u in urls), urls


def _chromium(user_data: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMEDRIVER), (
        "Chromium is installed but chromedriver is not: apt-get install chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--force-prefers-reduced-motion",
        f"--user-data-dir={user_data}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gateway = start_gateway(tmp_path_factory.mktemp("ui-browser"))
    yield gateway
    gateway.process.stop()


@pytest.fixture(scope="module")
def browser(gw, tmp_path_factory):
    screens = tmp_path_factory.mktemp("ui-screens")
    user_data = tempfile.mkdtemp(prefix="twisted-gw-chromium-")
    driver = _chromium(user_data)
    driver.set_window_size(1280, 860)
    driver.set_page_load_timeout(20)
    try:
        yield Browser(driver, gw.admin, screens)
        errors = [
            e
            for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]
        assert errors == [], errors  # no uncaught exception in any view
    finally:
        driver.quit()
        shutil.rmtree(user_data, ignore_errors=True)


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What one test leaves for the next (ids, keys), as an operator would remember."""
    return {}


def in_thread(work: Callable[[], Any]) -> Any:
    """Run blocking browser steps off the reactor, which keeps serving the upstream."""
    return threads.deferToThread(work)


def on_reactor(f: Callable[..., Any], *args: Any) -> Any:
    """From a browser thread: call ``f`` in the reactor (waits for a Deferred it returns)."""
    return threads.blockingCallFromThread(reactor, f, *args)


def admin_list(gw, segment: str) -> list[dict]:
    status, body = gw.admin_call("GET", f"/aisix/admin/{segment}")
    assert status == 200, body
    return body["list"]


def entry_named(gw, segment: str, field: str, value: str) -> dict | None:
    return next((e for e in admin_list(gw, segment) if e["value"].get(field) == value), None)


# -- sign in -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sign_in_keeps_the_admin_key_in_session_storage_only(gw, browser):
    def steps():
        b = browser
        b.go("/ui/")
        b.visible("#admin-key")
        assert b.heading() == "Sign in"
        assert b.js("return document.activeElement.id") == "admin-key"
        b.fill("#admin-key", "not-the-key")
        b.click("#login-form button[type=submit]")
        error = b.visible("#login-error")
        assert "Invalid API key" in error.text
        assert b.css("#admin-key").get_attribute("aria-invalid") == "true"
        b.shot("01-sign-in-refused")

        b.fill("#admin-key", gw.admin_key + "\n")  # Enter submits
        b.wait(lambda: b.heading() == "Overview", what="the overview")
        deployments = b.visible("#overview-deployments")  # no request routed yet
        b.wait(lambda: "No routed requests yet." in deployments.text, what="the empty state")
        assert b.js("return sessionStorage.getItem('twisted-gw.adminKey')") == gw.admin_key
        assert b.js("return localStorage.length") == 0
        assert b.driver.get_cookies() == []
        assert gw.admin_key not in b.driver.current_url
        assert b.css('#nav a[aria-current="page"]').text == "Overview"
        # the same tab keeps it across reloads, and a deep link needs no new sign-in
        b.go("/ui/models")
        assert b.heading() == "Models"

    await in_thread(steps)


# -- models ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_models_are_created_through_the_form_and_listed_with_masked_keys(
    gw, browser, upstream, state
):
    provider_key = secret("sk-provider")
    state["provider_key"] = provider_key

    def steps():
        b = browser
        b.go("/ui/models")
        b.click("a[href='/ui/models/create']")
        b.wait(lambda: b.heading() == "Add model")
        assert b.driver.current_url.endswith("/ui/models/create")

        # a mock model: no provider connection fields
        b.fill("#m-name", ECHO)
        b.select("#m-provider", "mock")
        assert not b.css("#m-remote").is_displayed()
        b.fill("#m-upstream", "echo")
        b.click("#model-form button[type=submit]")
        b.wait(lambda: b.heading() == "Models")
        assert f"Model {ECHO} created." in b.visible(".flash").text

        # a real provider on the mock upstream, with a bad value first
        b.click("a[href='/ui/models/create']")
        b.wait(lambda: b.heading() == "Add model")
        b.fill("#m-name", MODEL)
        b.select("#m-provider", "openai")
        assert b.css("#m-remote").is_displayed()
        b.fill("#m-upstream", "gpt-ui/stream")
        b.fill("#m-api-key", provider_key)
        b.fill("#m-api-base", upstream.base_url)
        b.fill("#m-timeout", "-5")
        b.fill("#m-rpm", "600")
        preview = b.css("#preview-body").text
        assert provider_key not in preview and provider_key[-4:] in preview
        b.click("#model-form button[type=submit]")
        panel = b.visible("#form-error")
        # a sentence naming the field as the form labels it, not the validator's text ...
        assert b.css("#form-error-text").text == "Timeout (ms) must be at least 0."
        assert "validation failed" not in panel.text
        timeout = b.css("#m-timeout")
        assert timeout.get_attribute("aria-invalid") == "true"
        assert "form-error" in timeout.get_attribute("aria-describedby")
        assert b.js("return document.activeElement.id") == "m-timeout"
        # ... and the Admin API's own text stays one click away, exactly as it came
        assert b.css("#form-error-raw").get_attribute("open") is None
        b.click("#form-error-raw > summary")
        assert b.visible("#form-error-raw-text").text == (
            'JSON schema validation error: property "/timeout" validation failed: '
            "-5 is less than the minimum of 0"
        )
        assert b.driver.current_url.endswith("/ui/models/create")  # still on the form
        b.shot("04-model-form-schema-error")

        b.fill("#m-timeout", "30000")
        b.click("#model-form button[type=submit]")
        b.wait(lambda: b.heading() == "Models")
        rows = b.wait(
            lambda: (
                len(b.all("#models-table tbody tr[data-id]")) == 2
                and b.all("#models-table tbody tr[data-id]")
            )
        )
        table = b.css("#models-table").text
        assert MODEL in table and ECHO in table and "gpt-ui/stream" in table
        assert "30 s" in table and "rpm 600" in table
        assert f"••••{provider_key[-4:]}" in table
        assert provider_key not in b.driver.page_source
        assert len(rows) == 2
        b.shot("03-models")

    await in_thread(steps)
    entry = entry_named(gw, "models", "name", MODEL)
    assert entry["value"] == {
        "name": MODEL,
        "model": "openai/gpt-ui/stream",
        "provider_config": {"api_key": provider_key, "api_base": upstream.base_url},
        "timeout": 30000,
        "rate_limit": {"rpm": 600},
    }
    state["model_id"] = entry["key"].rsplit("/", 1)[1]
    state["echo_id"] = entry_named(gw, "models", "name", ECHO)["key"].rsplit("/", 1)[1]


@pytest_twisted.ensureDeferred
async def test_schema_errors_are_said_as_sentences_never_as_the_schema_s_pattern(gw, browser):
    """An empty upstream model id makes the document's model "openai/", which the
    Admin API refuses by quoting the model pattern, a regular expression; the
    form says what is wrong with which field instead, one sentence per field."""
    before = len(admin_list(gw, "models"))

    def steps():
        b = browser
        b.go("/ui/models/create")
        b.wait(lambda: b.heading() == "Add model")
        b.select("#m-provider", "openai")
        b.fill("#m-api-key", secret("sk-provider"))
        b.click("#model-form button[type=submit]")  # no name, no upstream model id
        panel = b.visible("#form-error")
        sentences = b.css("#form-error-text").text.split("\n")
        raw = b.css("#form-error-raw-text").get_attribute("textContent")
        b.shot("04b-model-form-sentences")
        for selector in ("#m-upstream", "#m-name"):
            assert b.css(selector).get_attribute("aria-invalid") == "true", selector
        return panel.text, sentences, raw

    text, sentences, raw = await in_thread(steps)
    assert sentences == [
        "Upstream model cannot be empty: “openai/” needs the model's id after the /.",
        "Name cannot be empty.",
    ]
    assert "^(" not in text and "validation failed" not in text
    assert raw.startswith('JSON schema validation error: property "/model" validation failed: ')
    assert '"openai/" does not match "^(openai|' in raw  # AISIX's text, kept as it came
    assert len(admin_list(gw, "models")) == before  # nothing was saved


@pytest_twisted.ensureDeferred
async def test_editing_a_model_keeps_its_provider_key_unless_a_new_one_is_typed(gw, browser, state):
    provider_key = state["provider_key"]

    def steps():
        b = browser
        b.go(f"/ui/models/{state['model_id']}/edit")  # a deep link
        b.wait(lambda: b.heading() == f"Edit model {MODEL}")
        assert b.css("#m-api-key").get_attribute("value") == ""
        help_text = b.css("#m-api-key-help").text
        assert f"••••{provider_key[-4:]}" in help_text and provider_key not in b.driver.page_source
        assert b.css("#m-timeout").get_attribute("value") == "30000"
        b.fill("#m-rpm", "")
        b.fill("#m-tpm", "50000")
        b.shot("05-model-edit")
        b.click("#model-form button[type=submit]")
        b.wait(lambda: b.heading() == "Models")
        assert f"Model {MODEL} saved." in b.visible(".flash").text

    await in_thread(steps)
    value = entry_named(gw, "models", "name", MODEL)["value"]
    assert value["provider_config"]["api_key"] == provider_key
    assert value["rate_limit"] == {"tpm": 50000}
    # the routing fields it never had are not written (no "targets": [] or "routing": {})
    assert set(value) == {"name", "model", "provider_config", "timeout", "rate_limit"}


# -- API keys ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_generated_api_key_is_shown_once_with_a_copy_button(gw, browser, state):
    def steps():
        b = browser
        b.driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": b.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        b.go("/ui/apikeys/create")  # a deep link
        b.wait(lambda: b.heading() == "Add API key")
        assert b.css('#nav a[aria-current="page"]').text == "API keys"
        assert b.css("#k-mode-generate").is_selected()
        assert not b.css("#k-key").is_displayed()
        boxes = {e.get_attribute("value"): e for e in b.all("input[name=allowed_models]")}
        assert set(boxes) == {MODEL, ECHO}
        boxes[MODEL].click()
        b.fill("#k-rpm", "1.5")
        b.click("#apikey-form button[type=submit]")
        b.visible("#form-error")
        assert b.css("#form-error-text").text == "Requests/minute (rpm) must be a whole number."
        assert b.css("#k-rpm").get_attribute("aria-invalid") == "true"
        b.fill("#k-rpm", "")
        b.click("#apikey-form button[type=submit]")

        b.wait(lambda: b.heading() == "API key created")
        key = b.css("#new-key").get_attribute("value")
        assert b.driver.current_url == b.base + "/ui/apikeys"  # never the key in a URL
        b.click("#copy-key")
        b.wait(lambda: b.css("#copy-status").text, what="the copy status")
        copied = b.driver.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('error: ' + e))"
        )
        b.shot("06-apikey-created")
        b.click("#key-done")
        b.wait(lambda: b.heading() == "API keys")
        b.wait(lambda: b.all("#apikeys-table tbody tr[data-id]"))
        table = b.css("#apikeys-table").text
        assert f"••••{key[-4:]}" in table and MODEL in table
        assert key not in b.driver.page_source  # shown once: not in the list
        return key, copied

    key, copied = await in_thread(steps)
    SESSION_SECRETS.add(key)
    assert key.startswith("sk-") and len(key) == 46  # 32 random bytes, base64url
    assert copied == key
    entry = entry_named(gw, "apikeys", "key", key)
    assert entry["value"] == {"key": key, "allowed_models": [MODEL]}
    state["key"] = key
    state["key_id"] = entry["key"].rsplit("/", 1)[1]


@pytest_twisted.ensureDeferred
async def test_allowed_models_are_edited_from_the_list_of_models(gw, browser, state):
    def steps():
        b = browser
        b.go("/ui/apikeys")
        b.click(f"a[href='/ui/apikeys/{state['key_id']}/edit']")
        b.wait(lambda: b.heading().startswith("Edit API key"))
        assert b.css("#k-mode-keep").is_selected()
        boxes = {e.get_attribute("value"): e for e in b.all("input[name=allowed_models]")}
        assert boxes[MODEL].is_selected() and not boxes[ECHO].is_selected()
        boxes[ECHO].click()
        b.shot("07-apikey-edit")
        b.click("#apikey-form button[type=submit]")
        b.wait(lambda: b.heading() == "API keys")
        b.wait(lambda: ECHO in b.css("#apikeys-table").text)
        b.shot("08-apikeys")

    await in_thread(steps)
    value = entry_named(gw, "apikeys", "key", state["key"])["value"]
    assert value == {"key": state["key"], "allowed_models": [ECHO, MODEL]}


@pytest_twisted.ensureDeferred
async def test_a_budgeted_key_edited_in_the_form_keeps_its_budget(gw, browser, state):
    key = secret()
    doc = {"key": key, "allowed_models": [MODEL], "budget": {"max_usd": 25, "period": "week"}}
    status, body = await gw.aadmin("POST", "/aisix/admin/apikeys", doc)
    assert status == 201, body
    key_id = body["key"].rsplit("/", 1)[1]

    def steps():
        b = browser
        b.go(f"/ui/apikeys/{key_id}/edit")
        b.wait(lambda: b.heading().startswith("Edit API key"))
        {e.get_attribute("value"): e for e in b.all("input[name=allowed_models]")}[ECHO].click()
        b.click("#apikey-form button[type=submit]")
        b.wait(lambda: b.heading() == "API keys")

    await in_thread(steps)
    status, body = await gw.aadmin("GET", f"/aisix/admin/apikeys/{key_id}")
    assert body["value"] == {**doc, "allowed_models": [ECHO, MODEL]}
    status, _ = await gw.aadmin("DELETE", f"/aisix/admin/apikeys/{key_id}")
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_a_typed_key_that_exists_shows_the_admin_api_error(gw, browser, state):
    def steps():
        b = browser
        b.go("/ui/apikeys/create")
        b.wait(lambda: b.heading() == "Add API key")
        b.click("#k-mode-type")
        assert b.js("return document.activeElement.id") == "k-key"
        b.fill("#k-key", state["key"])
        b.click("#apikey-form button[type=submit]")
        assert "API key already exists" in b.visible("#form-error").text
        assert b.css("#k-key").get_attribute("aria-invalid") == "true"

    await in_thread(steps)


# -- deep links and history --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_deep_links_open_their_view_and_history_works(gw, browser):
    def steps():
        b = browser
        for path, heading, section in [
            ("/ui/models", "Models", "Models"),
            ("/ui/apikeys/create", "Add API key", "API keys"),
            ("/ui/playground", "Playground", "Playground"),
            ("/ui/models/create/", "Add model", "Models"),
            ("/ui/providers/create", "Add provider", "Providers"),
            ("/ui/", "Overview", "Overview"),
        ]:
            b.go(path)
            b.wait(lambda h=heading: b.heading() == h, what=heading)
            assert b.css('#nav a[aria-current="page"]').text == section
            assert b.driver.title.startswith(heading)
            b.check_accessible_controls()
            b.check_same_origin_only()
        b.go("/ui/no/such/view")
        assert b.heading() == "Page not found"
        # in-app navigation uses the History API: no reload, back and forward work
        b.go("/ui/models")
        b.js("window.__sameDocument = true")
        b.click("#nav a[href='/ui/apikeys']")
        b.wait(lambda: b.heading() == "API keys")
        b.driver.back()
        b.wait(lambda: b.heading() == "Models")
        b.driver.forward()
        b.wait(lambda: b.heading() == "API keys")
        assert b.js("return window.__sameDocument") is True
        # keyboard: the focus lands on the new view's heading
        assert b.js("return document.activeElement.tagName") == "H1"

    await in_thread(steps)


# -- the playground ----------------------------------------------------------------------

OBSERVE = """
window.__states = [];
const t0 = performance.now();
new MutationObserver(() => {
  const el = document.querySelector('#pg-answer .text');
  const text = el ? el.textContent : null;
  const last = window.__states[window.__states.length - 1];
  if (text && (!last || last.text !== text)) window.__states.push({text, t: performance.now() - t0});
}).observe(document.getElementById('pg-transcript'),
           {subtree: true, childList: true, characterData: true});
"""


def stream_events(words: list[str]) -> list[bytes]:
    events = [chat_chunk("", role="assistant")]
    events += [chat_chunk(w) for w in words]
    events.append(chat_chunk(finish_reason="stop"))
    events.append(
        chat_chunk(usage={"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15})
    )
    return [sse_event(e) for e in events] + [sse_event("[DONE]")]


@pytest_twisted.ensureDeferred
async def test_playground_streams_the_answer_token_by_token(gw, browser, upstream, state):
    upstream.set_sse("/v1/chat/completions", stream_events(WORDS), gap=0.3)

    def steps():
        b = browser
        b.go("/ui/playground")
        b.wait(lambda: b.heading() == "Playground")
        b.wait(lambda: b.all(f"#pg-key option[value='{state['key_id']}']"), what="the key")
        b.select("#pg-key", state["key_id"])
        b.wait(lambda: b.all(f"#pg-model option[value='{MODEL}']"), what="the model")
        b.select("#pg-model", MODEL)
        assert b.css("#pg-stream").is_selected()
        b.js(OBSERVE)
        b.fill("#pg-input", "Tell me how streaming works.")
        b.click("#pg-send")
        b.wait(lambda: len(b.js("return window.__states")) >= 3, what="partial text")
        assert b.css("#pg-stop").is_enabled() and not b.css("#pg-send").is_enabled()
        b.shot("09-playground-streaming")
        b.wait(lambda: b.css("#pg-stats").text.startswith("Usage"), what="the stats")
        b.shot("10-playground-done")
        return b.js("return window.__states"), b.css("#pg-stats").text

    states, stats = await in_thread(steps)
    full = "".join(WORDS)
    texts = [s["text"] for s in states]
    assert texts[-1] == full
    intermediate = [t for t in texts[:-1] if full.startswith(t) and t != full]
    assert len(intermediate) >= 2, texts  # it grew while the stream was running
    assert texts == sorted(texts, key=len)  # only ever appended to
    assert states[-1]["t"] - states[0]["t"] >= 0.3 * (len(WORDS) - 2) * 1000
    assert "9 prompt + 6 completion = 15 tokens" in stats
    assert "first token" in stats and "total" in stats and "Request ID" in stats
    sent = upstream.requests[-1].json
    assert sent["model"] == "gpt-ui/stream" and sent["stream"] is True
    assert sent["messages"] == [{"role": "user", "content": "Tell me how streaming works."}]
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {state['provider_key']}"


@pytest_twisted.ensureDeferred
async def test_playground_stop_aborts_the_stream_and_the_upstream_is_cancelled(
    gw, browser, upstream, state
):
    many = [f"w{i} " for i in range(100)]
    upstream.set_sse("/v1/chat/completions", stream_events(many), gap=0.2, end="hang")
    armed: list[Any] = []

    def steps():
        b = browser
        b.fill("#pg-input", "Go on forever.")
        b.click("#pg-send")
        b.wait(lambda: "w1" in b.css("#pg-answer .text").text, what="the first words")
        requests_before = on_reactor(lambda: len(upstream.requests))
        on_reactor(lambda: armed.append(upstream.wait_for_disconnect(timeout=5)))
        b.click("#pg-stop")
        on_reactor(lambda: armed[0])  # the gateway dropped the upstream connection
        b.wait(lambda: "Stopped" in b.css("#pg-stats").text, what="the stopped note")
        assert b.css("#pg-send").is_enabled() and not b.css("#pg-stop").is_enabled()
        text = b.css("#pg-answer .text").text
        b.shot("11-playground-stopped")
        return requests_before, text

    requests_before, text = await in_thread(steps)
    record = upstream.requests[requests_before - 1]
    for _ in range(40):  # the connection is gone; its request record follows at once
        if record.client_gone:
            break
        await threads.deferToThread(time.sleep, 0.05)
    assert record.client_gone and not record.completed
    assert text.startswith("w0 w1") and "w99" not in text


@pytest_twisted.ensureDeferred
async def test_playground_shows_the_proxy_s_errors(gw, browser, upstream, state):
    from selenium.webdriver.common.keys import Keys

    upstream.set_json("/v1/chat/completions", {"error": {"message": "boom"}}, status=500)

    def steps():
        b = browser
        b.fill("#pg-input", "Fail please.")
        b.click("#pg-send")
        error = b.visible("#pg-error")
        assert "Provider error" in error.text and "502 provider_error" in error.text
        assert b.css("#pg-input").get_attribute("value") == "Fail please."  # not lost
        b.shot("12-playground-error")
        b.select("#pg-model", ECHO)
        b.css("#pg-input").send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard way to send
        b.wait(lambda: "Fail please." in b.css("#pg-answer .text").text, what="the echo")
        assert b.css("#pg-error").is_displayed() is False

    await in_thread(steps)
    upstream.clear("/v1/chat/completions")


@pytest_twisted.ensureDeferred
async def test_playground_starts_with_a_key_that_may_use_a_model_and_short_keys_are_masked(
    gw, browser, state
):
    """A key listed first that may use no configured model (its one model is
    gone) is not the one the playground starts with; it is listed, said to
    have no usable model, and a short key shows its last characters like a
    long one (never more than half of it)."""
    short = f"k{uuid.uuid4().hex[:5]}"  # 6 characters: shown as its last 3
    SESSION_SECRETS.add(short)
    unusable = "0000-unusable"  # listed first: the store lists entries in key order
    status, body = gw.admin_call(
        "PUT", f"/aisix/admin/apikeys/{unusable}", {"key": short, "allowed_models": ["ui-gone"]}
    )
    assert status == 201, body

    def steps():
        b = browser
        b.go("/ui/playground")  # a fresh page: no key picked before
        b.wait(lambda: len(b.all("#pg-key option")) >= 2, what="the keys")
        options = [(o.get_attribute("value"), o.text) for o in b.all("#pg-key option")]
        chosen = b.css("#pg-key").get_attribute("value")
        models = [o.get_attribute("value") for o in b.all("#pg-model option")]
        ready = b.css("#pg-model").is_enabled()
        b.shot("12b-playground-key-choice")
        b.select("#pg-key", unusable)
        b.wait(lambda: not b.css("#pg-model").is_enabled(), what="no model for that key")
        help_text = b.css("#pg-model-help").text
        b.go("/ui/apikeys")
        row = b.visible(f"#apikeys-table tr[data-id='{unusable}']")
        return options, chosen, models, ready, help_text, row.text, b.driver.page_source

    options, chosen, models, ready, help_text, row, page = await in_thread(steps)
    assert options[0][0] == unusable
    assert options[0][1] == f"••••{short[-3:]} (ID {unusable[:8]}), no usable model"
    assert chosen == state["key_id"] and ready
    assert set(models) == {MODEL, ECHO}
    assert help_text == "This key allows no configured model."
    assert f"••••{short[-3:]}" in row and short not in page
    status, _ = gw.admin_call("DELETE", f"/aisix/admin/apikeys/{unusable}")
    assert status == 200


# -- overview ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_overview_reads_metrics_and_refreshes(gw, browser, state):
    def steps():
        b = browser
        b.go("/ui/")
        b.wait(lambda: b.css("#overview-updated").text != "loading…", what="metrics")
        requests = int(b.css("#stat-requests .stat-value").text.replace(",", ""))
        tokens = int(b.css("#stat-tokens .stat-value").text.replace(",", ""))
        assert requests >= 4 and tokens >= 15
        assert "%" in b.css("#stat-errors .stat-value").text
        assert "502" in b.css("#overview-body").text
        first = b.css("#overview-updated").text
        b.shot("02-overview")
        # a request made elsewhere shows up on the next refresh, without a reload
        status, _, _ = http(
            "POST",
            gw.admin + "/playground/chat/completions",
            headers={"Authorization": f"Bearer {state['key']}"},
            json_body={"model": ECHO, "messages": [{"role": "user", "content": "x"}]},
        )
        assert status == 200
        b.wait(lambda: b.css("#overview-updated").text != first, timeout=8, what="a refresh")
        b.wait(
            lambda: int(b.css("#stat-requests .stat-value").text.replace(",", "")) > requests,
            timeout=8,
            what="the new request counted",
        )

    await in_thread(steps)


# -- routing: a target, a fallback and the deployments table -----------------------------


def deployment_rows(b: Browser) -> list[list[str]]:
    return b.js(
        """
        return [...document.querySelectorAll('#overview-deployments tbody tr')]
          .map(tr => [...tr.cells].map(td => td.textContent.trim()));
        """
    )


@pytest_twisted.ensureDeferred
async def test_a_model_with_a_target_and_a_fallback_routes_and_the_overview_shows_it(
    gw, browser, upstream, state
):
    provider_key = secret("sk-routed")
    # deployment 0 is down (a retryable 503); the target on the mock provider answers
    upstream.set_json("/v1/chat/completions", {"error": {"message": "down"}}, status=503)

    def create():
        b = browser
        b.go("/ui/models/create")
        b.wait(lambda: b.heading() == "Add model")
        b.fill("#m-name", ROUTED)
        b.select("#m-provider", "openai")
        b.fill("#m-upstream", "gpt-ui/down")
        b.fill("#m-api-key", provider_key)
        b.fill("#m-api-base", upstream.base_url)
        assert not b.css("#m-target-add").is_displayed()  # folded away until wanted
        b.click("#m-routing-section > summary")
        b.click("#m-target-add")
        assert b.js("return document.activeElement.id") == "m-t1-provider"
        assert "Deployment 1" in b.css("#m-targets fieldset legend").text
        b.select("#m-t1-provider", "mock")
        assert not b.css("#m-t1-remote").is_displayed()
        b.fill("#m-t1-upstream", "echo")
        b.fill("#m-t1-priority", "1")
        b.fill("#m-t1-weight", "0")
        b.fill("#m-cooldown-failures", "1")
        names = [o.get_attribute("value") for o in b.all("#m-fallback-pick option")]
        assert names == [ECHO, MODEL]  # the existing models, not the one being made
        b.select("#m-fallback-pick", ECHO)
        b.click("#m-fallback-add")
        assert [li.get_attribute("data-name") for li in b.all("#m-fallbacks li")] == [ECHO]
        preview = b.css("#preview-body").text
        assert provider_key not in preview and provider_key[-4:] in preview
        assert '"model": "mock/echo"' in preview and f'"fallbacks": [\n    "{ECHO}"' in preview

        # the Admin API judges the target's fields; its error points at the input
        b.click("#model-form button[type=submit]")
        b.visible("#form-error")
        # deployment 0 is the model's own upstream: targets/0 is the form's "Deployment 1"
        assert b.css("#form-error-text").text == "Deployment 1: Weight must be at least 1."
        assert b.css("#m-t1-weight").get_attribute("aria-invalid") == "true"
        assert b.js("return document.activeElement.id") == "m-t1-weight"
        b.shot("20-model-form-routing-error")
        b.fill("#m-t1-weight", "")
        b.click("#model-form button[type=submit]")
        b.wait(lambda: b.heading() == "Models")
        assert f"Model {ROUTED} created." in b.visible(".flash").text
        assert "+1 target" in b.css("#models-table").text
        assert provider_key not in b.driver.page_source

    await in_thread(create)
    entry = entry_named(gw, "models", "name", ROUTED)
    expected = {
        "name": ROUTED,
        "model": "openai/gpt-ui/down",
        "provider_config": {"api_key": provider_key, "api_base": upstream.base_url},
        "targets": [{"model": "mock/echo", "provider_config": {}, "priority": 1}],
        "routing": {"cooldown": {"failures": 1}},
        "fallbacks": [ECHO],
    }
    assert entry["value"] == expected
    model_id = entry["key"].rsplit("/", 1)[1]

    def edit_unchanged():
        b = browser
        b.go(f"/ui/models/{model_id}/edit")
        b.wait(lambda: b.heading() == f"Edit model {ROUTED}")
        assert b.css("#m-routing-section").get_attribute("open") is not None
        assert b.css("#m-t1-upstream").get_attribute("value") == "echo"
        assert b.css("#m-t1-priority").get_attribute("value") == "1"
        assert b.css("#m-retry-default").is_selected()
        b.shot("21-model-edit-routing")
        b.click("#model-form button[type=submit]")
        b.wait(lambda: b.heading() == "Models")

    await in_thread(edit_unchanged)
    assert entry_named(gw, "models", "name", ROUTED)["value"] == expected

    key, key_id = await gw.add_key_with_id([ROUTED, ECHO])
    chat = {"model": ROUTED, "messages": [{"role": "user", "content": "routed"}]}
    status, headers, body = await gw.chat(key, chat)
    assert status == 200, body
    assert headers["x-gateway-attempts"] == "2"  # deployment 0's 503, then the target

    def overview():
        b = browser
        b.go("/ui/")
        b.wait(lambda: ROUTED in b.css("#overview-deployments").text, what="the routed model")
        rows = [r for r in deployment_rows(b) if r[0] == ROUTED]
        b.shot("22-overview-deployments")
        return rows

    rows = await in_thread(overview)
    # Model, Target, OK, Failed, Failures by outcome, Cooldowns
    assert rows == [[ROUTED, "0", "0", "1", "503 1", "1"], [ROUTED, "1", "1", "0", "–", "0"]]
    upstream.clear("/v1/chat/completions")
    for path in (f"/models/{model_id}", f"/apikeys/{key_id}"):
        status, _ = await gw.aadmin("DELETE", "/aisix/admin" + path)
        assert status == 200, path


@pytest_twisted.ensureDeferred
async def test_a_routed_model_edited_in_the_form_keeps_every_field_it_did_not_change(gw, browser):
    target_key = secret("sk-target")
    doc = {
        "name": "ui-full",
        "model": "mock/full",
        "provider_config": {},
        "timeout": 30000,
        "weight": 2,
        "targets": [
            {
                "model": "openai/gpt-x",
                "provider_config": {"api_key": target_key, "api_base": "https://eu.example/v1"},
                "weight": 3,
            },
            {
                "model": "mock/other",
                "provider_config": {},
                "priority": 1,
                "timeout": 60000,
                "pricing": {"input_per_mtok": 3, "output_per_mtok": 15},
            },
        ],
        "pricing": {"input_per_mtok": 0.4, "output_per_mtok": 1.6, "cached_input_per_mtok": 0.1},
        "routing": {
            "strategy": "least_busy",
            "retries": 2,
            "retry_on": ["connect", "auth", 429, 503],
            "cooldown": {"failures": 3, "window_ms": 60000, "duration_ms": 30000},
        },
        "fallbacks": [ECHO, "ui-gone"],
    }
    status, body = await gw.aadmin("POST", "/aisix/admin/models", doc)
    assert status == 201, body
    model_id = body["key"].rsplit("/", 1)[1]

    def steps():
        b = browser
        b.go(f"/ui/models/{model_id}/edit")
        b.wait(lambda: b.heading() == "Edit model ui-full")
        assert b.css("#m-routing-section").get_attribute("open") is not None
        assert b.css("#m-t1-api-key").get_attribute("value") == ""
        assert f"••••{target_key[-4:]}" in b.css("#m-t1-api-key-help").text
        assert target_key not in b.driver.page_source
        assert b.css("#m-strategy").get_attribute("value") == "least_busy"
        assert not b.css("#m-retry-default").is_selected()
        assert b.css("#m-retry-statuses").get_attribute("value") == "429, 503"
        gone = b.css("#m-fallbacks li[data-name='ui-gone']")
        assert "(no such model)" in gone.text
        b.click("#m-fallbacks button[aria-label='Move ui-gone up']")
        assert [li.get_attribute("data-name") for li in b.all("#m-fallbacks li")] == [
            "ui-gone",
            ECHO,
        ]
        b.check_accessible_controls()
        b.shot("23-model-edit-full-routing")
        b.click("#model-form button[type=submit]")
        b.wait(lambda: b.heading() == "Models")

    await in_thread(steps)
    status, body = await gw.aadmin("GET", f"/aisix/admin/models/{model_id}")
    assert body["value"] == {**doc, "fallbacks": ["ui-gone", ECHO]}
    status, _ = await gw.aadmin("DELETE", f"/aisix/admin/models/{model_id}")
    assert status == 200


# -- providers: the entity and the models that name it (CONTRACT-NEXT 1) ----------------


def provider_rows(b: Browser) -> dict[str, list[str]]:
    """The providers table by row id: the text of each cell."""
    return b.js(
        """
        return Object.fromEntries([...document.querySelectorAll('#providers-table tr[data-id]')]
          .map(tr => [tr.dataset.id, [...tr.cells].map(td => td.textContent.trim())]));
        """
    )


@pytest_twisted.ensureDeferred
async def test_a_mock_provider_and_a_model_naming_it_are_made_in_the_ui_and_answer(
    gw, browser, state
):
    def create():
        b = browser
        b.go("/ui/models")
        b.click("#nav a[href='/ui/providers']")
        b.wait(lambda: b.heading() == "Providers")
        assert b.css('#nav a[aria-current="page"]').text == "Providers"
        b.wait(lambda: "No providers yet" in b.css("#providers-table").text, what="empty")
        b.click("a[href='/ui/providers/create']")
        b.wait(lambda: b.heading() == "Add provider")
        b.fill("#p-name", LOCAL)
        b.select("#p-type", "mock")  # a type with no settings at all
        assert "this type answers locally" in b.css("#p-config").text
        assert b.all("#p-config input") == []
        preview = json.loads(b.css("#preview-body").text)
        assert preview == {"name": LOCAL, "type": "mock", "config": {}}
        b.check_accessible_controls()
        b.click("#provider-form button[type=submit]")
        b.wait(lambda: b.heading() == "Providers")
        assert f"Provider {LOCAL} created." in b.visible(".flash").text
        rows = b.wait(lambda: provider_rows(b), what="the provider")
        ((provider_id, cells),) = rows.items()
        # Name, Type, Base URL, Models
        assert cells[:4] == [LOCAL, "mock", "none (answers locally)", "0"]
        b.shot("24-providers")

        # a model naming it: the later wire is the default once a provider exists
        b.go("/ui/models/create")
        b.wait(lambda: b.heading() == "Add model")
        assert b.css("#m-wire-provider").is_selected()
        assert not b.css("#m-own").is_displayed()  # no provider_config ...
        assert not b.css("#m-routing-section").is_displayed()  # ... and no routing on this wire
        b.fill("#m-name", NAMED)
        b.select("#m-provider-id", provider_id)
        b.fill("#m-provider-model", UPSTREAM_ID)
        b.fill("#m-rpm", "100")
        preview = json.loads(b.css("#preview-body").text)
        assert preview == {
            "name": NAMED,
            "provider_id": provider_id,
            "model": UPSTREAM_ID,
            "rate_limit": {"rpm": 100},
        }
        b.check_accessible_controls()
        b.shot("25-model-form-provider")
        b.click("#model-form button[type=submit]")
        b.wait(lambda: b.heading() == "Models")
        assert f"Model {NAMED} created." in b.visible(".flash").text
        b.wait(lambda: NAMED in b.css("#models-table").text, what="the model")
        named = next(
            r for r in b.all("#models-table tbody tr[data-id]") if r.text.startswith(NAMED)
        )
        assert LOCAL in named.text and UPSTREAM_ID in named.text
        return provider_id

    provider_id = await in_thread(create)
    provider = gw.admin_call("GET", f"/aisix/admin/providers/{provider_id}")[1]
    assert provider["value"] == {"name": LOCAL, "type": "mock", "config": {}}
    entry = entry_named(gw, "models", "name", NAMED)
    expected = {
        "name": NAMED,
        "provider_id": provider_id,
        "model": UPSTREAM_ID,
        "rate_limit": {"rpm": 100},
    }
    assert entry["value"] == expected
    model_id = entry["key"].rsplit("/", 1)[1]

    # the mock type answers locally, as the upstream model named verbatim
    key, key_id = await gw.add_key_with_id([NAMED])
    doc = {"model": NAMED, "messages": [{"role": "user", "content": "named"}]}
    status, _, body = await gw.chat(key, doc)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model"] == UPSTREAM_ID
    assert answer["choices"][0]["message"]["content"] == "named"

    def edit_and_delete():
        b = browser
        # each model opens on its own wire: the named one ...
        b.go(f"/ui/models/{model_id}/edit")
        b.wait(lambda: b.heading() == f"Edit model {NAMED}")
        assert b.css("#m-wire-provider").is_selected()
        assert b.css("#m-provider-id").get_attribute("value") == provider_id
        assert b.css("#m-provider-model").get_attribute("value") == UPSTREAM_ID
        assert not b.css("#m-own").is_displayed()
        b.click("#model-form button[type=submit]")  # saved unchanged
        b.wait(lambda: b.heading() == "Models")
        # ... and a legacy one with its provider_config
        b.go(f"/ui/models/{state['echo_id']}/edit")
        b.wait(lambda: b.heading() == f"Edit model {ECHO}")
        assert b.css("#m-wire-config").is_selected() and b.css("#m-provider").is_displayed()
        assert not b.css("#m-provider-id").is_displayed()

        # the provider is still named by a model: the Admin API's refusal is shown
        b.go("/ui/providers")
        row = f"#providers-table tr[data-id='{provider_id}']"
        b.wait(lambda: provider_rows(b).get(provider_id, [""] * 4)[3] == "1", what="1 model")
        b.click(f"{row} button.danger")
        assert f"Delete provider {LOCAL}?" in b.visible("dialog.confirm").text
        b.click("dialog.confirm button[value=ok]")
        error = b.visible("#providers-error")
        assert "provider is still referenced by models" in error.text
        assert b.js("return document.activeElement.id") == "providers-error"
        assert b.all(row)  # still there
        b.shot("26-provider-still-referenced")

    await in_thread(edit_and_delete)
    assert entry_named(gw, "models", "name", NAMED)["value"] == expected
    assert gw.admin_call("GET", f"/aisix/admin/providers/{provider_id}")[0] == 200

    # once no model names it, the same button deletes it
    for path in (f"/models/{model_id}", f"/apikeys/{key_id}"):
        status, _ = await gw.aadmin("DELETE", "/aisix/admin" + path)
        assert status == 200, path

    def delete():
        b = browser
        b.go("/ui/providers")
        row = f"#providers-table tr[data-id='{provider_id}']"
        b.wait(lambda: provider_rows(b).get(provider_id, [""] * 4)[3] == "0", what="0 models")
        b.click(f"{row} button.danger")
        b.click("dialog.confirm button[value=ok]")
        b.wait(lambda: not b.all(row), what="the provider to go")
        assert not b.css("#providers-error").is_displayed()

    await in_thread(delete)
    assert admin_list(gw, "providers") == []


@pytest_twisted.ensureDeferred
async def test_a_provider_s_api_key_never_comes_back_into_the_page(gw, browser):
    provider_key = secret("sk-entity")
    openai_base = next(
        t["default_base"] for t in catalog_document()["provider_types"] if t["name"] == "openai"
    )

    def create():
        b = browser
        b.go("/ui/providers/create")
        b.wait(lambda: b.heading() == "Add provider")
        b.fill("#p-name", "ui-openai")
        b.select("#p-type", "openai")
        assert b.css("#p-api-key").get_attribute("type") == "password"
        assert b.css("#p-api-base").get_attribute("placeholder") == openai_base
        b.fill("#p-api-key", provider_key)
        b.fill("#p-api-base", "https://eu.example/v1")
        preview = b.css("#preview-body").text
        assert provider_key not in preview and provider_key[-4:] in preview
        b.check_accessible_controls()
        b.shot("27-provider-form")
        b.click("#provider-form button[type=submit]")
        b.wait(lambda: b.heading() == "Providers")
        b.wait(lambda: provider_rows(b), what="the provider")
        ((provider_id, cells),) = provider_rows(b).items()
        assert cells[:4] == ["ui-openai", "openai", "https://eu.example/v1", "0"]
        assert provider_key not in b.driver.page_source
        return provider_id

    provider_id = await in_thread(create)
    stored = {
        "name": "ui-openai",
        "type": "openai",
        "config": {"api_key": provider_key, "api_base": "https://eu.example/v1"},
    }
    assert gw.admin_call("GET", f"/aisix/admin/providers/{provider_id}")[1]["value"] == stored

    def edit():
        b = browser
        b.go(f"/ui/providers/{provider_id}/edit")
        b.wait(lambda: b.heading() == "Edit provider ui-openai")
        assert b.css("#p-api-key").get_attribute("value") == ""
        assert f"••••{provider_key[-4:]}" in b.css("#p-api-key-help").text
        assert provider_key not in b.driver.page_source
        assert provider_key not in b.css("#preview-body").text
        # another type: the base URL typed carries over, the saved key does not
        b.select("#p-type", "deepseek")
        assert b.css("#p-api-base").get_attribute("value") == "https://eu.example/v1"
        assert "Saved key" not in b.css("#p-api-key-help").text
        b.select("#p-type", "openai")
        assert "Saved key" in b.css("#p-api-key-help").text
        b.fill("#p-name", "ui-openai-eu")
        b.click("#provider-form button[type=submit]")  # the key field left empty
        b.wait(lambda: b.heading() == "Providers")
        assert "Provider ui-openai-eu saved." in b.visible(".flash").text
        assert provider_key not in b.driver.page_source
        # nor in the model form that lists the providers
        b.go("/ui/models/create")
        b.wait(lambda: b.all(f"#m-provider-id option[value='{provider_id}']"), what="it")
        assert provider_key not in b.driver.page_source

    await in_thread(edit)
    value = gw.admin_call("GET", f"/aisix/admin/providers/{provider_id}")[1]["value"]
    assert value == {**stored, "name": "ui-openai-eu"}  # the saved key kept
    status, _ = await gw.aadmin("DELETE", f"/aisix/admin/providers/{provider_id}")
    assert status == 200


# -- phone width and the reference page -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_views_fit_a_phone_screen(gw, browser):
    def steps():
        b = browser
        b.driver.set_window_size(390, 844)
        try:
            for path, name in [
                ("/ui/models", "13-phone-models"),
                ("/ui/apikeys", "14-phone-apikeys"),
                ("/ui/playground", "15-phone-playground"),
                ("/ui/models/create", "16-phone-model-form"),
                ("/ui/providers", "28-phone-providers"),
                ("/ui/providers/create", "29-phone-provider-form"),
            ]:
                b.go(path)
                b.wait(lambda: b.all("main h1"))
                b.wait(lambda: not b.all("[aria-busy=true]"), what="loaded")
                if path == "/ui/models/create":  # with its routing unfolded and a target
                    b.click("#m-routing-section > summary")
                    b.click("#m-target-add")
                time.sleep(0.2)
                overflow = b.js(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
                b.shot(name)
        finally:
            b.driver.set_window_size(1280, 860)

    await in_thread(steps)


@pytest_twisted.ensureDeferred
async def test_openapi_page_renders_offline(gw, browser):
    def steps():
        b = browser
        b.go("/openapi")
        assert "twisted-gw Admin API" in b.css("h1").text
        assert b.all("[id='op-post-/playground/chat/completions']")
        assert b.js("return document.scripts.length") == 0
        assert b.js("return performance.getEntriesByType('resource').length") == 0
        b.shot("17-openapi")

    await in_thread(steps)


# -- the UI's pure modules, in the browser ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_metrics_and_sse_modules(gw, browser):
    script = """
    const done = arguments[0];
    Promise.all([import('/ui/metrics.js'), import('/ui/sse.js'), import('/ui/schema.js')])
      .then(([m, s, schema]) => {
        const text = [
          '# TYPE aisix_request_count_total counter',
          'aisix_request_count_total{endpoint="/v1/chat/completions",method="POST",status_code="200"} 6.0',
          'aisix_request_count_total{endpoint="-",method="GET",status_code="404"} 1.0',
          'aisix_request_count_total{endpoint="/v1/chat/completions",method="POST",status_code="502"} 1.0',
          'aisix_token_count_total{model="a",type="total"} 38.0',
          'aisix_token_count_total{model="a",type="prompt"} 5.0',
          'aisix_request_latency_milliseconds_sum{endpoint="-",method="GET",status_code="404"} 16.0',
          'aisix_request_latency_milliseconds_count{endpoint="-",method="GET",status_code="404"} 8.0',
          'twisted_gw_upstream_attempts_total{model="a",outcome="ok",target="fb#0"} 1.0',
          'twisted_gw_upstream_attempts_total{model="a",outcome="timeout",target="0"} 2.0',
          'twisted_gw_upstream_attempts_total{model="a",outcome="502",target="0"} 1.0',
          'twisted_gw_upstream_attempts_created{model="a",outcome="502",target="0"} 1.7e9',
          'twisted_gw_upstream_attempts_total{model="a",outcome="ok",target="1"} 3.0',
          'twisted_gw_deployment_cooldowns_total{model="a",target="0"} 1.0',
        ].join('\\n');
        const sum = m.summarize(m.parsePrometheus(text));
        const p = new s.SSEParser();
        const events = [...p.push('data: {"a":'), ...p.push('1}\\r\\n\\r\\ndata: x\\ndata: y\\n\\n'),
                        ...p.push('data: [DONE]\\n\\n')];
        const keys = new Set(Array.from({length: 50}, () => schema.generateKey()));
        const deployments = sum.deployments.map(d => ({...d, failures: [...d.failures]}));
        done({requests: sum.requests, errors: sum.errors, rate: sum.errorRate, deployments,
              tokens: sum.tokens.total, latency: sum.meanLatencyMs, events,
              keys: keys.size, mask: [schema.mask('sk-abcdefgh1234'), schema.mask('short'),
                     schema.mask('abcdef'), schema.mask('a'), schema.mask('')],
              pointers: schema.errorPointers(
                'JSON schema validation error: property "/name" validation failed: x\\n' +
                'property "/rate_limit/rpm" validation failed: y')});
      }, e => done({error: String(e)}));
    """

    def steps():
        browser.go("/ui/")  # the UI's origin and CSP (the /openapi page allows no script)
        return browser.driver.execute_async_script(script)

    result = await in_thread(steps)
    assert result == {
        "requests": 8,
        "errors": 2,
        "rate": 0.25,
        "tokens": 38,
        "latency": 2,
        # per deployment: its own (by index), then the fallbacks'; failures by outcome
        "deployments": [
            {
                "model": "a",
                "target": "0",
                "ok": 0,
                "failed": 3,
                "failures": [["timeout", 2], ["502", 1]],
                "cooldowns": 1,
            },
            {"model": "a", "target": "1", "ok": 3, "failed": 0, "failures": [], "cooldowns": 0},
            {"model": "a", "target": "fb#0", "ok": 1, "failed": 0, "failures": [], "cooldowns": 0},
        ],
        "events": ['{"a":1}', "x\ny", "[DONE]"],
        "keys": 50,
        # short keys too show their last characters, never more than half of them
        "mask": ["••••1234", "••••rt", "••••def", "••••", ""],
        "pointers": ["/name", "/rate_limit/rpm"],
    }


SCHEMA_ERRORS = {
    '"/" validation failed: "name" is a required property': "Name is required.",
    '"/provider_config" validation failed: "api_key" is a required property': (
        "Provider API key is required."
    ),
    '"/model" validation failed: "gpt" does not match "^(openai|mock)/.+$"': (
        "Model must be a provider and the upstream model's id, as provider/model-id, "
        "with a provider among openai, mock."
    ),
    '"/timeout" validation failed: 4000000 is greater than the maximum of 3600000': (
        "Timeout (ms) must be at most 3,600,000."
    ),
    '"/rate_limit/concurrency" validation failed: -1 is less than the minimum of 0': (
        "In flight (concurrency) must be at least 0."
    ),
    '"/allowed_models" validation failed: "demo" is not of type "array"': (
        "Allowed models must be a list."
    ),
    "\"/\" validation failed: Additional properties are not allowed ('colour' was unexpected)": (
        "This document has no field “colour”: remove it."
    ),
    '"/routing/strategy" validation failed: "fast" is not one of ["weighted","least_busy"]': (
        "Strategy must be one of weighted, least_busy."
    ),
    '"/routing/cooldown/window_ms" validation failed: 0 is less than the minimum of 1': (
        "Cooldown window (ms) must be at least 1."
    ),
    '"/routing/retry_on/1" validation failed: 404 is a client error, which is never retried': (
        "Retry on, item 2: 404 is the client's own mistake, which is never retried."
    ),
    '"/targets/1/provider_config" validation failed: "api_key" is a required property': (
        "Deployment 2: Provider API key is required."
    ),
    '"/fallbacks/0" validation failed: "" is shorter than 1 character': (
        "Fallback 1 cannot be empty."
    ),
    '"/config" validation failed: "access_key_id" is a required property': (
        "Access key ID is required."
    ),
}


@pytest_twisted.ensureDeferred
async def test_the_errors_module_says_each_kind_of_schema_error_as_a_sentence(gw, browser):
    """errors.js, pure: each validator message the Admin API gives (CONTRACT 3,
    AISIX's texts) becomes a sentence about the field as the forms label it;
    any other error text is left to be shown as it is."""
    script = """
    const [lines, done] = arguments;
    import('/ui/errors.js').then(e => done({
      each: lines.map(l => e.schemaSentences(
        'JSON schema validation error: property ' + l)),
      joined: e.schemaSentences('JSON schema validation error: property ' + lines.join(
        '\\nproperty ')),
      other: e.schemaSentences('Model name already exists'),
    }), err => done({error: String(err)}));
    """

    def steps():
        browser.go("/ui/")
        return browser.driver.execute_async_script(script, list(SCHEMA_ERRORS))

    result = await in_thread(steps)
    assert result["each"] == [[s] for s in SCHEMA_ERRORS.values()]
    assert result["joined"] == list(SCHEMA_ERRORS.values())  # one per line of a 400
    assert result["other"] is None


# -- delete both -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_asks_first_then_removes_the_key_and_the_models(gw, browser, state):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    def steps():
        b = browser
        b.go("/ui/apikeys")
        row = f"#apikeys-table tr[data-id='{state['key_id']}']"
        b.visible(row)
        b.click(f"{row} button.danger")
        dialog = b.visible("dialog.confirm")
        assert "Delete API key" in dialog.text
        assert b.js("return document.activeElement.textContent") == "Cancel"
        b.shot("18-confirm-delete")
        ActionChains(b.driver).send_keys(Keys.ESCAPE).perform()  # Escape declines
        b.wait(lambda: not b.all("dialog.confirm"), what="the dialog to close")
        assert b.all(row)  # still there

        b.click(f"{row} button.danger")
        b.click("dialog.confirm button[value=ok]")
        b.wait(lambda: not b.all(row), what="the key to go")

        b.go("/ui/models")
        for model_id in (state["model_id"], state["echo_id"]):
            model_row = f"#models-table tr[data-id='{model_id}']"
            b.click(f"{model_row} button.danger")
            b.click("dialog.confirm button[value=ok]")
            b.wait(lambda r=model_row: not b.all(r), what="the model to go")
        assert "No models yet" in b.css("#models-table").text

    await in_thread(steps)
    assert admin_list(gw, "apikeys") == []
    assert admin_list(gw, "models") == []
    assert gw.admin_call("GET", f"/aisix/admin/apikeys/{state['key_id']}")[0] == 404


@pytest_twisted.ensureDeferred
async def test_sign_out_forgets_the_key(gw, browser):
    def steps():
        b = browser
        b.click("#sign-out")
        b.visible("#admin-key")
        assert b.js("return sessionStorage.getItem('twisted-gw.adminKey')") is None
        b.go("/ui/models")
        assert b.heading() == "Sign in"  # a deep link asks for the key again
        b.shot("19-signed-out")
        # a key the gateway no longer takes (rotated in the config) is dropped, and said so
        b.js("sessionStorage.setItem('twisted-gw.adminKey', 'rotated-away')")
        b.go("/ui/apikeys")
        assert "refused the admin key (Invalid API key)" in b.visible("#login-error").text
        assert b.js("return sessionStorage.getItem('twisted-gw.adminKey')") is None

    await in_thread(steps)
