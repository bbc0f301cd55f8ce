"""The web console in a real browser (headless Chromium), against a real toolrelay and the scripted fake upstream.

Each test drives the pages as a person would (sign in, pick, type, click) and checks what the page
shows and what the server recorded. Screenshots for the docs (docs/img/) are written on the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from console_driver import Console

from fakes.admin import ADMIN_KEY, Admin
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

PYTHON_CODE = "values = [6, 7]\nprint(values[0] * values[1])"
ANSWER = "The product is 42, computed by running the code in the sandbox and reading its output."


@pytest.fixture
def console(browser: Any, console_relay: RunningServer) -> Iterator[Console]:
    page = Console(browser, console_relay.root_url)
    yield page
    browser.get("about:blank")


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def _agent_script(body: dict[str, Any]) -> Reply:
    """A python call first; once its result is back, the answer, streamed slowly enough to be seen mid-way."""
    if any(m.get("role") == "tool" for m in body.get("messages", [])):
        return Reply(content=ANSWER, chunk_delay=0.15)
    return Reply(tool_calls=[{"name": "python", "arguments": {"code": PYTHON_CODE}}])


def test_the_page_loads_without_auth_errors_or_foreign_requests(console: Console, user_key: str) -> None:
    console.driver.get_log("browser")
    console.driver.get_log("performance")
    console.sign_in(user_key, ADMIN_KEY)
    console.wait_until(lambda: console.find_all("#pg-model option"), message="models listed")
    for page in ("usage", "keys", "memories", "playground"):
        console.go(page)
        console.wait_until(lambda page=page: console.find(f'#nav a[data-page="{page}"]').get_attribute("class") == "active")
    console.wait_until(lambda: console.find_all("#pg-model option"))
    assert console.console_errors() == []
    assert console.foreign_requests() == []
    # The key is in session storage, never in the URL.
    assert user_key not in console.driver.current_url
    assert console.driver.execute_script("return document.cookie") == ""


def test_an_agent_run_shows_its_step_and_answer_while_streaming(console: Console, user_key: str, fake: FakeUpstream) -> None:
    fake.responder = _agent_script
    console.sign_in(user_key)
    console.wait_until(lambda: console.find_all('#pg-model option[value="agent/fake-model"]'))
    console.select("#pg-model", "agent/fake-model")
    console.find("#pg-input").send_keys("What is six times seven? Use python.")
    console.find("#pg-send").click()

    # The step appears with its code, then its result (the sandbox's real output), before the answer ends.
    step = console.wait_for('details.step[data-tool="python"]')
    assert PYTHON_CODE in console.text("details.step pre.python")
    console.wait_until(lambda: "42" in console.text("details.step .step-result pre.output"), timeout=30, message="python result shown")
    assert console.text("details.step .badge") == "ok"
    assert step.get_attribute("open") is not None
    console.wait_until(lambda: 0 < len(console.text(".msg.assistant .answer")) < len(ANSWER), message="answer seen mid-stream")
    assert console.find_all(".msg.assistant.streaming"), "the answer is still streaming"
    console.screenshot("console-playground.png")

    console.wait_until(lambda: not console.find_all(".msg.assistant.streaming"), timeout=30, message="stream finished")
    assert console.text(".msg.assistant .answer") == ANSWER
    assert "completion tokens" in console.text(".msg.assistant .meta")
    # The request as code, for what was sent.
    assert '"model": "agent/fake-model"' in console.text("#pg-curl")
    assert 'model="agent/fake-model"' in console.text("#pg-python")
    assert user_key not in console.text("#pg-curl") + console.text("#pg-python")
    assert console.console_errors() == []


def test_a_function_call_is_answered_by_hand(console: Console, user_key: str, fake: FakeUpstream) -> None:
    def script(body: dict[str, Any]) -> Reply:
        results = [m for m in body.get("messages", []) if m.get("role") == "tool"]
        if results:
            return Reply(content=f"Your function said: {results[-1]['content']}")
        assert [t["function"]["name"] for t in body.get("tools", [])] == ["get_weather"]
        return Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])

    fake.responder = script
    console.sign_in(user_key)
    console.wait_until(lambda: console.find_all('#pg-model option[value="fake-model"]'))
    console.select("#pg-model", "fake-model")
    console.find("details.settings summary").click()
    console.find("#pg-tools").send_keys(
        '[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]'
    )
    console.find("#pg-input").send_keys("Weather in Paris?")
    console.find("#pg-send").click()

    console.wait_for(".answer-calls")
    assert console.text(".answer-calls .call-name") == "get_weather"
    assert '"city"' in console.text(".answer-calls .call-args")
    console.find(".answer-calls textarea.call-result").send_keys("sunny, 24 C")
    console.find(".answer-calls .send-results").click()
    console.wait_until(lambda: "Your function said: sunny, 24 C" in console.text("#pg-transcript"), message="second turn answered")
    # The round trip the upstream saw: the call, then its result under the same id.
    second = fake.chat_requests[-1].body
    assistant = next(m for m in second["messages"] if m.get("tool_calls"))
    tool = next(m for m in second["messages"] if m.get("role") == "tool")
    assert tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert tool["content"] == "sunny, 24 C"


def test_an_answer_holding_a_script_is_shown_as_text(console: Console, user_key: str, fake: FakeUpstream) -> None:
    hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>'
    fake.responder = lambda body: Reply(content=hostile, chunk_tokens=[hostile[:20], hostile[20:]])
    console.sign_in(user_key)
    console.wait_until(lambda: console.find_all('#pg-model option[value="fake-model"]'))
    console.select("#pg-model", "fake-model")
    console.find("#pg-input").send_keys("<script>alert(1)</script>")
    console.find("#pg-send").click()
    console.wait_until(lambda: not console.find_all(".msg.assistant.streaming"), message="answer done")
    assert console.text(".msg.assistant .answer") == hostile
    assert console.find_all(".msg.assistant .answer *") == []  # no element was made from the text
    assert console.find_all(".msg.user .content *") == []
    assert console.driver.execute_script("return window.__pwned === undefined")
    assert console.console_errors() == []


def test_keys_are_created_shown_once_and_revoked(console: Console, admin: Admin) -> None:
    console.sign_in("", ADMIN_KEY)
    console.go("keys")
    console.wait_for("#key-create")
    console.find("#key-name").send_keys("browser-made")
    console.find('#key-create input[name="rpm"]').send_keys("60")
    console.find('#key-create input[name="budget_usd"]').send_keys("5")
    console.find("#key-create-submit").click()
    secret = console.wait_for("#key-secret").text
    assert secret.startswith("tr-")
    key_id = secret.split("-")[1]
    row_css = f'tr[data-key-id="{key_id}"]'
    console.wait_for(row_css)
    # The secret works on the API, and the key shows its limits and budget.
    models = httpx.get(console.root_url + "/v1/models", headers={"authorization": f"Bearer {secret}"})
    assert models.status_code == 200
    assert "60 rpm" in console.text(row_css)
    assert "of $5.00" in console.text(row_css)
    console.screenshot("console-keys.png")

    # Edit: a new rate limit and no budget (null clears it).
    console.find(f"{row_css} button.edit").click()
    rpm = console.wait_for('form.key-edit input[name="rpm"]')
    rpm.clear()
    rpm.send_keys("120")
    console.find('form.key-edit input[name="budget_usd"]').clear()
    console.find('form.key-edit button[type="submit"]').click()
    console.wait_until(lambda: "120 rpm" in console.text(row_css), message="edited limit shown")
    assert admin.http.get(f"/admin/keys/{key_id}").json()["budget_usd"] is None

    # Rotate with a grace period: the new secret is shown once, the old one still works for now.
    console.find(f"{row_css} button.rotate").click()
    prompt = console.driver.switch_to.alert
    prompt.send_keys("600")
    prompt.accept()
    console.wait_until(lambda: console.text("#key-secret") not in ("", secret), message="new secret shown")
    rotated = console.text("#key-secret")
    # The list is reloaded after the secret is shown: wait for the row that says so before using its buttons.
    console.wait_until(lambda: "old secret until" in console.text(f"{row_css} td.status"), message="row shows the grace period")
    for valid in (rotated, secret):
        assert httpx.get(console.root_url + "/v1/models", headers={"authorization": f"Bearer {valid}"}).status_code == 200
    assert admin.http.get(f"/admin/keys/{key_id}").json()["previous_key_valid_until"] is not None

    console.find(f"{row_css} button.revoke").click()
    console.driver.switch_to.alert.accept()
    console.wait_until(lambda: console.text(f"{row_css} td.status").startswith("revoked"), message="row shows revoked")
    shown = admin.http.get(f"/admin/keys/{key_id}").json()
    assert shown["status"] == "revoked"
    assert httpx.get(console.root_url + "/v1/models", headers={"authorization": f"Bearer {rotated}"}).status_code == 401
    assert console.console_errors() == []


def test_a_request_appears_in_the_usage_table_and_chart(console: Console, admin: Admin, fake: FakeUpstream) -> None:
    key_id, secret = admin.create_key("usage-shown")
    fake.responder = lambda body: Reply(content="counted")
    sent = httpx.post(
        console.root_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {secret}"},
        json={"model": "fake-model", "messages": [{"role": "user", "content": "count me"}]},
    )
    assert sent.status_code == 200
    request_id = sent.headers["x-request-id"]
    admin.usage_rows(key_id, count=1)

    console.sign_in("", ADMIN_KEY)
    console.go("usage")
    console.wait_until(lambda: request_id in console.text("#req-rows"), message="request listed")
    row = next(r for r in console.find_all("#req-rows tr") if request_id in r.text)
    assert "fake-model" in row.text and "200" in row.text and "usage-shown" in row.text
    # Filtered by key: only that key's request is left.
    console.find("#req-key").send_keys(key_id)
    console.find("#usage-refresh").click()
    console.wait_until(lambda: len(console.find_all("#req-rows tr")) == 1 and request_id in console.text("#req-rows"), message="filtered")
    # Today's bar of the requests chart exists, split by model.
    bars = console.find_all("#chart-requests rect.bar")
    assert bars, "no bar drawn"
    assert any("fake-model" in b.get_attribute("textContent") for b in bars)
    assert console.find_all("#chart-latency circle")
    console.screenshot("console-usage.png")
    assert console.console_errors() == []


def test_a_memory_is_deleted_by_its_owner_and_by_the_admin(console: Console, admin: Admin) -> None:
    key_id, secret = admin.create_key("memory-owner")
    user = httpx.Client(base_url=console.root_url, headers={"authorization": f"Bearer {secret}"})
    first = user.post("/v1/memories", json={"text": "The user's cat is called <b>Tom</b>", "tags": ["pets"]}).json()
    second = user.post("/v1/memories", json={"text": "Prefers answers in French"}).json()

    # The owner, with their own key.
    console.sign_in(secret)
    console.go("memories")
    item = f'li[data-memory-id="{first["id"]}"]'
    console.wait_for(item)
    assert "<b>Tom</b>" in console.text(item)
    console.find(f"{item} button.delete").click()
    console.wait_until(lambda: not console.find_all(item), message="memory gone from the list")
    assert user.get(f"/v1/memories/{first['id']}").status_code == 404

    # The admin, picking the key (the admin key goes to /admin/memories only).
    console.sign_in("", ADMIN_KEY)
    console.go("memories")
    console.wait_until(lambda: console.find_all(f'#mem-key option[value="{key_id}"]'))
    console.select("#mem-key", key_id)
    other = f'li[data-memory-id="{second["id"]}"]'
    console.wait_for(other)
    console.find("#mem-search").send_keys("French")
    console.find("#mem-go").click()
    console.wait_until(lambda: console.find_all(other) and "French" in console.text("#mem-list"))
    console.find(f"{other} button.delete").click()
    console.wait_until(lambda: not console.find_all(other), message="memory gone")
    assert user.get(f"/v1/memories/{second['id']}").status_code == 404
    user.close()
    assert console.console_errors() == []


def _overflow(console: Console) -> dict[str, Any]:
    """How wide the document is against the viewport, and which elements stick out past its right edge."""
    return console.driver.execute_script(
        """
        const width = window.innerWidth;
        const out = [...document.querySelectorAll("body *")]
          .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > width + 0.5 && !e.closest(".table-wrap, pre"))
          .slice(0, 5)
          .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className && typeof e.className === "string" ? "." + e.className : ""));
        return {scroll: document.documentElement.scrollWidth, width, out};
        """
    )


def _on_screen(console: Console, css: str) -> bool:
    """Shown and, horizontally, inside the viewport (a control pushed off to the side counts as hidden)."""
    return bool(
        console.driver.execute_script(
            """
            const e = document.querySelector(arguments[0]);
            if (!e || !e.getClientRects().length) return false;
            const r = e.getBoundingClientRect(), style = getComputedStyle(e);
            return style.visibility !== "hidden" && r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= window.innerWidth + 0.5;
            """,
            css,
        )
    )


@pytest.fixture
def phone(console: Console) -> Iterator[Console]:
    """The console in a phone-sized window (390 x 844, under the layout's 760 px breakpoint)."""
    size = console.driver.get_window_size()
    console.driver.set_window_size(390, 844)
    try:
        yield console
    finally:
        console.driver.set_window_size(size["width"], size["height"])


def test_a_phone_width_screen_runs_a_request_without_sideways_scrolling(phone: Console, user_key: str, admin: Admin, fake: FakeUpstream) -> None:
    fake.responder = lambda body: Reply(content="A short answer that wraps on a narrow screen " * 4)
    phone.sign_in(user_key, ADMIN_KEY)
    assert phone.driver.execute_script("return window.innerWidth") < 760
    phone.wait_until(lambda: phone.find_all('#pg-model option[value="fake-model"]'), message="models listed")
    phone.select("#pg-model", "fake-model")
    for control in ("#nav", '#nav a[data-page="memories"]', "#signout", "#pg-model", "#pg-input", "#pg-send", "#pg-stop", "#pg-reset"):
        assert _on_screen(phone, control), f"{control} is not on screen"
    phone.find("#pg-input").send_keys("Say something long enough to wrap.")
    phone.find("#pg-send").click()
    phone.wait_until(lambda: not phone.find_all(".msg.assistant.streaming") and phone.find_all(".msg.assistant"), message="answer done")
    assert phone.text(".msg.assistant .answer").startswith("A short answer")
    assert '"model": "fake-model"' in phone.text("#pg-curl")
    layout = _overflow(phone)
    assert layout["scroll"] <= layout["width"], layout
    for control in ("#pg-transcript .msg.assistant", "#pg-curl", "#pg-input", "#pg-send"):
        assert _on_screen(phone, control), f"{control} is not on screen after the run"
    # One column: the request's code sits below the chat, not beside it.
    chat, aside = (phone.driver.execute_script(f"return document.querySelector('{css}').getBoundingClientRect().top") for css in (".chat", ".request"))
    assert aside > chat
    # The other pages fit as well (wide tables scroll inside their own box).
    for page, ready in (("usage", "#req-rows tr"), ("keys", "#keys-rows tr"), ("memories", "#mem-list")):
        phone.go(page)
        phone.wait_for(ready)
        layout = _overflow(phone)
        assert layout["scroll"] <= layout["width"], (page, layout)
    assert phone.console_errors() == []


def test_without_the_ledger_the_usage_page_shows_the_servers_metrics(browser: Any, ledgerless_relay: RunningServer, fake: FakeUpstream) -> None:
    fake.responder = lambda body: Reply(content="counted by the metrics")
    with Admin(ledgerless_relay) as admin:
        _, secret = admin.create_key("metrics-only")
    sent = httpx.post(
        ledgerless_relay.root_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {secret}"},
        json={"model": "fake-model", "messages": [{"role": "user", "content": "count me"}]},
    )
    assert sent.status_code == 200
    console = Console(browser, ledgerless_relay.root_url)
    try:
        console.sign_in("", ADMIN_KEY)
        console.go("usage")
        console.wait_for("#usage-metrics-note")
        assert "ledger is off" in console.text("#usage-metrics-note")
        rows = [r.text for r in console.find_all("#metrics-requests tbody tr")]
        assert any("fake-model" in row and "proxy" in row and "200" in row for row in rows), rows
        assert any("fake-model" in b.get_attribute("textContent") for b in console.find_all("#chart-requests rect.bar"))
        assert "proxy" in console.text("#metrics-latency") and " ms" in console.text("#metrics-latency")
        assert "fake-model" in console.text("#metrics-tokens")
        assert "ledger is off" in console.text("#req-rows")
        assert console.console_errors() == []
    finally:
        browser.get("about:blank")
