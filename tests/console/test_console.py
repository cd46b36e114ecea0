"""The operator console in a real browser: sign-in, finding an event by its lead, replaying a dead
letter until it is delivered, bulk replay after a dry run, pausing a provider, CSRF refusals."""

from __future__ import annotations

import re
import time

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.console.conftest import RunningDispatcher, sign_in
from tests.support import (
    ADMIN_TOKEN,
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    admin_get,
    base_config,
    post_generic,
    wait_until,
)

pytestmark = pytest.mark.browser


def seed(sim, *leads: dict) -> list[str]:
    return requests.post(f"{sim.url}/_sim/leads", json=list(leads), timeout=5).json()["ids"]


def dead_letter(service, email: str, msg_id: str) -> str:
    """A webhook for a lead LeadSquared does not know: dead-lettered at the lookup stage."""
    response = post_generic(service.url, {"lead": {"email": email}, "changes": {"city": "Oslo"}}, msg_id)
    assert response.status_code == 202, response.text
    command_id = response.json()["command_id"]
    wait_until(
        lambda: admin_get(service.url, f"/v1/events/{command_id}").json()["status"] == "dead_lettered",
        what=f"{command_id} dead-lettered",
    )
    return command_id


def test_sign_in_refuses_a_wrong_token_then_sets_a_strict_expiring_cookie(
    page: Page, console_service
) -> None:
    sign_in(page, console_service.url, token="not-the-token")
    expect(page.get_by_role("alert")).to_have_text("That token is not the admin token.")
    assert not [c for c in page.context.cookies() if c["name"] == "leadrelay_console"]
    response = page.goto(f"{console_service.url}/console/events")
    assert response and "/console/login" in page.url  # still signed out

    sign_in(page, console_service.url)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    [cookie] = [c for c in page.context.cookies() if c["name"] == "leadrelay_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert time.time() < cookie["expires"] <= time.time() + 8 * 3600 + 5
    response = page.goto(f"{console_service.url}/console/")
    assert response is not None
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert ADMIN_TOKEN not in page.content()

    # Keyboard only: the skip link comes first, then the navigation, in document order.
    focused = "document.activeElement.textContent.trim()"
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "Events"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Events")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{console_service.url}/console/providers")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_find_a_dead_letter_by_email_replay_it_and_watch_it_delivered(
    page: Page, console_service, lsq_sim, dispatcher
) -> None:
    post_generic(
        console_service.url, {"lead": {"email": "other@example.com"}, "changes": {"city": "X"}}, "m0"
    )
    command_id = dead_letter(console_service, "ghost@example.com", "m1")
    sign_in(page, console_service.url)
    page.get_by_role("link", name="Events", exact=True).click()
    page.get_by_label("Lead (email, phone or id)").fill("Ghost@Example.com ")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("ghost@example.com")
    rows.first.get_by_role("link", name=command_id).click()

    expect(page.locator("#event-status")).to_have_text("dead_lettered")
    reason = page.locator(".delivery .reason")
    expect(reason).to_contain_text("lookup")
    expect(page.locator(".timeline")).to_contain_text("received")
    html = page.content()
    assert LSQ_ACCESS_KEY not in html and LSQ_SECRET_KEY not in html and ADMIN_TOKEN not in html

    seed(lsq_sim, {"EmailAddress": "ghost@example.com"})  # the lead now exists in the CRM
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#replayed")).to_have_text("Replaying to leadsquared.")
    for _ in range(100):  # the operator reloads until the dispatcher has delivered it
        if page.locator("#event-status").inner_text() == "delivered":
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(page.locator("#event-status")).to_have_text("delivered")
    expect(page.locator(".timeline")).to_contain_text("replayed")


def test_bulk_replay_shows_a_dry_run_then_progress_until_delivered(
    page: Page, console_service, lsq_sim, dispatcher
) -> None:
    for n in (1, 2):
        dead_letter(console_service, f"ghost{n}@example.com", f"b{n}")
    sign_in(page, console_service.url)
    page.get_by_role("link", name="Dead letters").click()
    expect(page.locator("tbody tr")).to_have_count(2)
    page.get_by_label("Provider").select_option("leadsquared")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("button", name="Replay matching (dry run first)").click()
    expect(page.locator("#dry-run-result")).to_have_text(
        re.compile(r"reset 2 dead-lettered deliveries of 2 events")
    )
    # The dry run reset nothing.
    assert admin_get(console_service.url, "/v1/events?status=dead_lettered").json()["events"][1]

    seed(lsq_sim, {"EmailAddress": "ghost1@example.com"}, {"EmailAddress": "ghost2@example.com"})
    page.get_by_role("button", name="Replay 2 deliveries").click()
    expect(page.locator("#progress-summary")).to_contain_text("Replayed 2 deliveries of 2 events")
    expect(page.locator("#progress-delivered")).to_have_text("2", timeout=30_000)  # the page refreshes itself
    expect(page.locator("#progress-dead_lettered")).to_have_text("0")


def test_pause_and_resume_a_provider(page: Page, console_service) -> None:
    store = console_service.runtime.store
    sign_in(page, console_service.url)
    page.get_by_role("link", name="Providers").click()
    expect(page.locator("#state-leadsquared")).to_have_text("running")
    page.get_by_label("Reason").fill("CRM maintenance window")
    page.get_by_role("button", name="Pause leadsquared").click()
    expect(page.locator("#state-leadsquared")).to_have_text("paused")
    expect(page.get_by_text("CRM maintenance window")).to_be_visible()
    control = store.provider_controls()["leadsquared"]
    assert control.paused and control.reason == "CRM maintenance window"

    page.get_by_role("button", name="Resume leadsquared").click()
    expect(page.locator("#state-leadsquared")).to_have_text("running")
    assert not store.provider_controls()["leadsquared"].paused


def test_state_changing_requests_without_the_csrf_token_are_refused(
    page: Page, console_service, dispatcher
) -> None:
    command_id = dead_letter(console_service, "ghost@example.com", "c1")
    sign_in(page, console_service.url)
    base = console_service.url
    # The browser's own session cookie rides along; only the CSRF token is missing or wrong.
    for form in ({}, {"csrf_token": "forged"}):
        paused = page.request.post(f"{base}/console/providers/leadsquared/pause", form=form, max_redirects=0)
        assert paused.status == 403, paused.text()
        replayed = page.request.post(f"{base}/console/events/{command_id}/replay", form=form, max_redirects=0)
        assert replayed.status == 403
        bulk = page.request.post(
            f"{base}/console/dead-letters/replay", form={**form, "confirm": "yes"}, max_redirects=0
        )
        assert bulk.status == 403
    assert "leadsquared" not in console_service.runtime.store.provider_controls()
    assert admin_get(base, f"/v1/events/{command_id}").json()["status"] == "dead_lettered"
    # Signing in needs the sign-in form's token too.
    login = page.request.post(f"{base}/console/login", form={"token": ADMIN_TOKEN}, max_redirects=0)
    assert login.status == 403


def test_pages_fit_a_phone_width_screen(browser, console_service, dispatcher) -> None:
    dead_letter(console_service, "ghost@example.com", "p1")
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, console_service.url)
        for path in ("/console/", "/console/events", "/console/dead-letters", "/console/providers"):
            page.goto(console_service.url + path)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a phone screen"
    finally:
        context.close()


def test_overview_draws_the_charts_and_counts_rejections_by_reason(
    page: Page, console_service, dispatcher
) -> None:
    dead_letter(console_service, "ghost@example.com", "v1")
    forged = post_generic(
        console_service.url,
        {"lead": {"email": "x@example.com"}, "changes": {}},
        "v2",
        secret="whsec_Zm9yZ2VkLXNlY3JldA==",
    )
    assert forged.status_code == 401
    sign_in(page, console_service.url)
    failures = page.get_by_role("img", name=re.compile(r"^Failures: 1 in the last hour"))
    expect(failures.locator("rect")).to_have_count(60)
    assert [
        h for h in failures.locator("rect").evaluate_all("rs => rs.map(r => +r.getAttribute('height'))") if h
    ] != []
    rejected = page.locator("tr", has=page.get_by_role("rowheader", name="generic")).locator("td").last
    expect(rejected).to_contain_text(re.compile(r"401 unauthorized: [1-9]"))


def test_overview_shows_the_rate_limit_budget_the_running_dispatcher_sampled(
    page: Page, make_service, lsq_sim, tmp_path
) -> None:
    # A minute's window: the call is still in it at the loop's next sample (5 s on).
    service = make_service(
        base_config(
            tmp_path, lsq_sim.url, providers={"leadsquared": {"rate_limit": {"calls": 25, "per_seconds": 60}}}
        )
    )
    running = RunningDispatcher(service)
    try:
        dead_letter(service, "ghost@example.com", "rl1")  # one look-up call, answered "not found"

        def sampled() -> bool:
            budget = admin_get(service.url, "/v1/overview").json()["providers"]["leadsquared"]["rate_limit"]
            return bool(budget and budget["samples"][-1]["used"] == 1)

        wait_until(sampled, timeout=15, interval=0.2, what="the dispatcher's next budget sample")
    finally:
        running.stop()
    sign_in(page, service.url)
    row = page.locator("tr", has=page.get_by_role("rowheader", name="leadsquared"))
    expect(row).to_contain_text("1 / 25 per 60 s")
    figure = row.get_by_role("img", name=re.compile(r"^leadsquared rate-limit budget used, last 5 minutes"))
    heights = figure.locator("rect").evaluate_all("rs => rs.map(r => +r.getAttribute('height'))")
    assert heights and heights[-1] > 0  # the latest bar: 1 of 25
