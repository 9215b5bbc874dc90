"""Driving Debian's Chromium through Selenium for the console tests (tests/e2e).

The browser is ``/usr/bin/chromium`` driven by ``/usr/bin/chromedriver`` (the Debian
packages ``chromium`` and ``chromium-driver``, installed by ``scripts/ensure_browser.sh``).
Given the driver's path (``Service(executable_path=...)``), Selenium skips Selenium Manager;
``SE_OFFLINE=true`` keeps it offline should it ever run: nothing is downloaded.

:class:`Browser` wraps the WebDriver session of one test. Every page a test opens goes through :meth:`Browser.visit` (or :meth:`Browser.check` after a click), which
fails the test, naming the page, on a console error, a failed request (an HTTP status of
400 or more, a network error) or, at phone width, a page wider than the screen.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TASKLEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TASKLEDGER_CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)
#: Set to 1 to write the screenshots into docs/img (``make screenshots``); otherwise they
#: go to a temporary folder, so a test run never changes the checkout.
SCREENSHOTS_ENV = "TASKLEDGER_SCREENSHOTS"
DOCS_IMG = ROOT / "docs" / "img"
WAIT_S = 30.0
MAX_SHOT_HEIGHT = 2000  # px: long pages are cut in the screenshots


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing (scripts/ensure_browser.sh installs it)"
    return None


def start_chromium() -> webdriver.Chrome:
    """A headless Chromium at desktop size, logging the console and the network."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: no network, no download, ever
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # runs as root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        "--hide-scrollbars",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    return driver


@dataclass
class Browser:
    """One test's Chromium session; ``base`` is the console's server."""

    driver: webdriver.Chrome
    shots: Path
    base: str = ""
    allowed_statuses: set[int] = field(default_factory=set)
    phone: bool = False

    # --- viewport --------------------------------------------------------------------------

    def desktop(self) -> None:
        """The laptop viewport (1280x900)."""
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.driver.set_window_size(*DESKTOP)
        self.phone = False

    def mobile(self) -> None:
        """A 390-px-wide phone (a mobile viewport: the page's meta viewport applies)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True},
        )
        self.phone = True

    # --- pages -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def visit(self, path: str, *, page: str | None = None) -> None:
        """Open ``path`` and check it (see :meth:`check`); ``page`` is its expected
        ``data-testid="page-<name>"``."""
        self.driver.get(self.url(path))
        self.check(path, page=page)

    def check(self, what: str, *, page: str | None = None) -> None:
        """Fail on console errors or failed requests since the last check, on a page
        wider than the phone, or when the page is not ``page``."""
        if page is not None:
            main = self.testid("page-" + page, wait=True)
            assert main.is_displayed(), f"{what}: page-{page} is not shown"
        problems = self.problems()
        assert not problems, f"{what}: " + "; ".join(problems)
        if self.phone:
            widths = self.driver.execute_script(
                "const e = document.documentElement; return [e.scrollWidth, e.clientWidth];"
            )
            assert widths[0] <= widths[1], f"{what}: scrolls sideways at 390 px ({widths})"

    def problems(self) -> list[str]:
        """Console errors and failed requests logged since the previous call."""
        found = [
            f"console {entry['level']}: {entry['message']}"
            for entry in self.driver.get_log("browser")
            if entry["level"] in ("SEVERE", "WARNING") and not self._allowed(entry["message"])
        ]
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params: dict[str, Any] = message.get("params", {})
            if message.get("method") == "Network.responseReceived":
                response = params["response"]
                status = int(response["status"])
                if status >= 400 and status not in self.allowed_statuses:
                    found.append(f"request {response['url']} answered {status}")
            elif message.get("method") == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
        return found

    def _allowed(self, message: str) -> bool:
        return any(f"status of {s} " in message for s in self.allowed_statuses)

    @contextmanager
    def allowing(self, *statuses: int) -> Iterator[None]:
        """Pages answering these statuses on purpose (an error page under test)."""
        before = set(self.allowed_statuses)
        self.allowed_statuses |= set(statuses)
        try:
            yield
        finally:
            self.allowed_statuses = before

    # --- elements --------------------------------------------------------------------------

    def testid(self, name: str, *, wait: bool = False, within: Any = None) -> WebElement:
        """The element with ``data-testid=name`` (waiting for it, if asked)."""
        root = within or self.driver
        selector = f'[data-testid="{name}"]'
        if not wait:
            return root.find_element(By.CSS_SELECTOR, selector)
        return self.until(lambda: root.find_element(By.CSS_SELECTOR, selector), name)

    def testids(self, name: str, *, within: Any = None) -> list[WebElement]:
        """Every element with ``data-testid=name``."""
        root = within or self.driver
        return list(root.find_elements(By.CSS_SELECTOR, f'[data-testid="{name}"]'))

    def text(self, name: str, *, within: Any = None) -> str:
        """The visible text of the ``data-testid=name`` element."""
        return str(self.testid(name, within=within).text).strip()

    def has(self, name: str) -> bool:
        return bool(self.testids(name))

    def click(self, name: str, *, within: Any = None, page: str | None = None) -> None:
        """Click the ``data-testid=name`` element and check the page it leads to."""
        element = self.testid(name, within=within)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()
        self.check(f"after clicking {name}", page=page)

    def fill(self, name: str, value: str) -> None:
        """Type ``value`` into the ``data-testid=name`` input (cleared first)."""
        element = self.testid(name)
        element.clear()
        element.send_keys(value)

    def until(self, probe: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        """Call ``probe`` until it returns something truthy without raising."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                value = probe()
                if value:
                    return value
            except (NoSuchElementException, StaleElementReferenceException, AssertionError) as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} ({last})")

    def reload_until(
        self, path: str, probe: Callable[[], Any], what: str, *, page: str | None = None
    ) -> Any:
        """Open ``path`` again and again (checking each load) until ``probe`` holds."""

        def attempt() -> Any:
            self.visit(path, page=page)
            return probe()

        return self.until(attempt, what)

    # --- login and screenshots -------------------------------------------------------------

    def login(self, token: str, next_path: str = "/ui/") -> None:
        """Enter the API token on the login page; lands on ``next_path``."""
        self.visit(f"/ui/login?next={next_path}", page="login")
        self.fill("login-token", token)
        self.testid("login-submit").click()
        # The next page load must not race the cookie: wait until the login page is left.
        self.until(lambda: "/ui/login" not in self.driver.current_url, "the login to finish")
        self.check("after logging in")

    def download(self, name: str, folder: Path, *, within: Any = None) -> Path:
        """Click the ``data-testid=name`` button of a download and return the saved file
        (the page stays where it was)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
        )
        self.testid(name, within=within).click()

        def saved() -> Path | None:
            done = [p for p in folder.iterdir() if not p.name.endswith(".crdownload")]
            return done[0] if done else None

        path: Path = self.until(saved, f"the download of {name}")
        self.check(f"after downloading with {name}")
        return path

    def shoot(self, name: str) -> Path:
        """Save a screenshot as ``console-<name>.png`` (docs/img when asked, see
        ``SCREENSHOTS_ENV``); returns its path."""
        target = DOCS_IMG if os.environ.get(SCREENSHOTS_ENV) == "1" else self.shots
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"console-{name}.png"
        # The whole page (up to MAX_SHOT_HEIGHT), not only the viewport.
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        width = PHONE[0] if self.phone else DESKTOP[0]
        height = min(max(int(size["height"]), 1), MAX_SHOT_HEIGHT)
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.stat().st_size > 1000, f"screenshot {name} is empty"
        return path
