"""Browser fixtures: Debian's Chromium driven by Playwright through `executable_path` (nothing is
downloaded), the app on loopback with the LeadSquared simulator, and a dispatcher thread."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support import ADMIN_TOKEN, base_config

CHROMIUM = os.environ.get("LEADRELAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium() -> str:
    """The Chromium binary; installed with apt when missing and we may (root), else a failure
    that says what is missing. Never a skip."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=False, env=env, timeout=1200)
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: run `make browser` as root"
            " (apt-get install chromium) or set LEADRELAY_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    csp_violations: list[str] = []
    opened.on(
        "console",
        lambda message: (
            csp_violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield opened
    context.close()
    assert not csp_violations, f"the page broke its own Content-Security-Policy: {csp_violations}"


class RunningDispatcher:
    """The embedded dispatcher's real loop on a thread, for as long as the test runs."""

    def __init__(self, service: Any) -> None:
        self.dispatcher = service.dispatcher()
        self.thread = threading.Thread(target=self.dispatcher.run, name="test-dispatcher", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.thread.join(timeout=30)


@pytest.fixture
def console_service(make_service: Any, lsq_sim: Any, tmp_path: Path) -> Any:
    return make_service(base_config(tmp_path, lsq_sim.url))


@pytest.fixture
def dispatcher(console_service: Any) -> Iterator[RunningDispatcher]:
    running = RunningDispatcher(console_service)
    yield running
    running.stop()


def sign_in(page: Page, base_url: str, token: str = ADMIN_TOKEN) -> None:
    """Keyboard only: the token field has focus on load, Enter submits."""
    page.goto(f"{base_url}/console/")
    page.get_by_label("Admin token").wait_for()
    page.keyboard.type(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
