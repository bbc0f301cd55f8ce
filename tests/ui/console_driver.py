"""A thin helper over a Selenium driver for the console's pages (tests/ui)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

# The docs' screenshots are rewritten only on request (TOOLRELAY_UPDATE_SCREENSHOTS=1), so a test
# run leaves the checkout as it found it; otherwise they go to a scratch directory.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "img"
    if os.environ.get("TOOLRELAY_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / f"toolrelay-console-screenshots-{os.getuid()}"
)


class Console:
    def __init__(self, driver: Any, root_url: str) -> None:
        self.driver = driver
        self.root_url = root_url.rstrip("/")
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.root_url))

    # -- navigation

    def open(self) -> None:
        """The console, freshly loaded and signed out.

        After clearing the session the page is reloaded, never just sent to another ``#/`` route: from
        ``/ui``, going to ``/ui#/playground`` is a same-document hash change, whose ``hashchange``
        re-renders the page whenever it fires, possibly after the test found the sign-in form and
        began typing into it (the sign-in then went out with an empty key); and the page signed in
        with the previous test's keys would live on, its requests still in flight.
        """
        self.driver.get(self.root_url + "/ui#/playground")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.refresh()
        self.wait_for("#signin")

    def sign_in(self, user_key: str = "", admin_key: str = "") -> None:
        self.open()
        self.find("#signin-key").send_keys(user_key)
        if admin_key:
            self.find("#signin-admin").send_keys(admin_key)
        self.find("#signin-submit").click()
        self.wait_for("#signout")

    def go(self, page: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", "#/" + page)

    # -- finding and waiting

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, timeout: float = 15.0) -> Any:
        return WebDriverWait(self.driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def wait_until(self, check: Callable[[], Any], timeout: float = 15.0, message: str = "") -> Any:
        """Wait for ``check()`` to be truthy (an element gone stale meanwhile counts as not yet)."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: check())
        except TimeoutException:
            raise AssertionError(message or "condition not met in time") from None

    def select(self, css: str, value: str) -> None:
        Select(self.find(css)).select_by_value(value)

    def text(self, css: str) -> str:
        return str(self.driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", css))

    # -- what the page did

    def console_errors(self) -> list[dict[str, Any]]:
        return [entry for entry in self.driver.get_log("browser") if entry.get("level") == "SEVERE"]

    def foreign_requests(self) -> list[str]:
        """Every URL the page requested over the network (per the DevTools log) outside the relay's origin."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                url = message["params"]["request"]["url"]
                # data: URLs are the browser's own (a date input's icon): nothing leaves the machine.
                if not url.startswith("data:"):
                    urls.append(url)
        parts = ["{0.scheme}://{0.netloc}".format(urlsplit(url)) for url in urls]
        return [url for url, origin in zip(urls, parts, strict=True) if origin != self.origin]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        assert self.driver.save_screenshot(str(path)) and path.stat().st_size > 0
        return path
