"""Take the PNG screenshots of every console page shown in docs/console.md (`make screenshots`).

A demo dataset on a throw-away SQLite file: the app and the LeadSquared simulator on loopback,
a few signed webhooks (delivered, one dead letter for a lead the CRM does not know), the
embedded dispatcher, then Debian's Chromium through Playwright at 1280 px and at phone width.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from handlers.leadsquared.simulator import create_leadsquared_simulator  # noqa: E402
from handlers.simulation import ServedApp  # noqa: E402
from service.pipeline.embedded import EmbeddedDispatcher  # noqa: E402
from service.runtime import build_runtime  # noqa: E402
from service.web.app import create_app  # noqa: E402
from tests.console.conftest import CHROMIUM_ARGS, ensure_chromium  # noqa: E402
from tests.support import (  # noqa: E402
    ADMIN_TOKEN,
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    base_config,
    load,
    post_generic,
)

OUT = ROOT / "docs" / "console"


def drain(dispatcher: EmbeddedDispatcher, store, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dispatcher.tick()
        time.sleep(0.05)
        if store.queue_stats()["depth"] == 0 and not dispatcher._busy:
            return


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
    print(f"docs/console/{name}.png")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sim = ServedApp(create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY)).start()
        config = load(base_config(Path(tmp), sim.url))
        runtime = build_runtime(config)
        web = ServedApp(create_app(config, runtime)).start()
        requests.post(
            f"{sim.url}/_sim/leads",
            json=[{"EmailAddress": f"lead{n}@example.com"} for n in range(6)],
            timeout=5,
        )
        for n in range(6):
            event = {
                "lead": {"email": f"lead{n}@example.com"},
                "changes": {"city": "London", "value": 100 * n},
            }
            post_generic(web.url, event, f"demo{n}")
        post_generic(
            web.url, {"lead": {"email": "jane@webinar.example"}, "changes": {"city": "Oslo"}}, "webinar1"
        )
        dispatcher = EmbeddedDispatcher(config, runtime.store)
        drain(dispatcher, runtime.store)
        dispatcher.update_gauges()  # the periodic step: samples the rate-limit budget for the overview
        post_generic(web.url, {"lead": {"email": "lead1@example.com"}, "changes": {"city": "Paris"}}, "late1")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{web.url}/console/login")
            shot(page, "login")
            page.get_by_label("Admin token").fill(ADMIN_TOKEN)
            page.get_by_role("button", name="Sign in").click()
            shot(page, "overview")
            page.goto(f"{web.url}/console/events")
            shot(page, "events")
            page.goto(f"{web.url}/console/events/generic:webinar1")
            shot(page, "event")
            page.goto(f"{web.url}/console/dead-letters")
            shot(page, "dead-letters")
            page.get_by_role("button", name="Replay matching (dry run first)").click()
            shot(page, "replay-confirm")
            requests.post(f"{sim.url}/_sim/leads", json=[{"EmailAddress": "jane@webinar.example"}], timeout=5)
            page.get_by_role("button", name="Replay 1 deliveries").click()
            shot(page, "replay-progress")
            page.goto(f"{web.url}/console/providers")
            page.get_by_label("Reason").fill("CRM maintenance until 18:00")
            page.get_by_role("button", name="Pause leadsquared").click()
            shot(page, "providers")
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.context.add_cookies(page.context.cookies())
            phone.goto(f"{web.url}/console/events?lead=jane@webinar.example")
            shot(phone, "events-phone")
            browser.close()
        dispatcher.pool.shutdown(wait=True)
        web.stop()
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
