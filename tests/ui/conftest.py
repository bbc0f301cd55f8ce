"""Fixtures for the web console's tests: a real toolrelay with auth on, and headless Chromium.

- ``console_relay`` (module): toolrelay on :func:`fakes.relays.e2e_tree` (every built-in tool, the
  python sandbox, memory) with the admin key :data:`fakes.admin.ADMIN_KEY`, in front of the session
  fake upstream, scripted per test through ``fake``.
- ``user_key``: an API key made over ``/admin/keys`` for the test.
- ``ledgerless_relay`` (module): toolrelay with auth on and the usage ledger off (``auth.ledger =
  false``), for the usage page's fallback to the server's metrics.
- ``browser`` (module): Debian's ``chromium`` driven by ``chromium-driver`` through Selenium,
  headless, with the browser console and the network (performance) logs recorded. Missing browser:
  the tests skip, unless ``TOOLRELAY_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from fakes.admin import ADMIN_KEY, Admin
from fakes.relays import auth_tree, e2e_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream

# No test here searches the web: web_search points at a closed port.
_NO_SEARCH = "http://127.0.0.1:9"

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def console_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("console")
    tree = e2e_tree(
        fake_upstream,
        root / "data",
        _NO_SEARCH,
        auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05, "max_failed_auth": 10_000},
        pricing={"models": {"fake-model": {"input": 1.0, "output": 2.0}, "fake-tools": {"input": 3.0, "output": 6.0}}},
    )
    with start_relay(root, tree) as server:
        yield server


@pytest.fixture(scope="module")
def ledgerless_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("ledgerless")
    tree = auth_tree(fake_upstream, root / "data", auth={"admin_key": ADMIN_KEY, "ledger": False, "max_failed_auth": 10_000})
    with start_relay(root, tree) as server:
        yield server


@pytest.fixture
def admin(console_relay: RunningServer) -> Iterator[Admin]:
    with Admin(console_relay) as helper:
        yield helper


@pytest.fixture
def user_key(admin: Admin) -> str:
    _, secret = admin.create_key("console-user")
    return secret


def _browser_or_skip() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        if os.environ.get("TOOLRELAY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TOOLRELAY_REQUIRE_BROWSER=1 but missing: {', '.join(missing)}")
        pytest.skip(f"no browser: missing {', '.join(missing)} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,900", "--disable-gpu", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
