"""Riding out a CRM outage, end to end: the LeadSquared simulator over real HTTP answering 500
(or 401) to every call for a while, the embedded dispatcher in a thread.

The issue's outside check, compressed ten times (every duration of the schedule, the
breaker and the rate limit divided by 10, the same counts): an outage of 150 s under 100
events for 50 leads must end with 0 dead letters, every lead current within 60 s of
recovery and at most 40 calls to the failing API during the outage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from service.pipeline.embedded import EmbeddedDispatcher
from tests.support import (
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    ThreadedDispatcher,
    admin_get,
    admin_post,
    base_config,
    post_generic,
    sim_calls,
    wait_until,
)

SCALE = 0.1  # every duration of the defaults times this


def compressed(scale: float) -> dict[str, Any]:
    """The defaults (config/leadrelay.yaml, service/config/sections.py) with every duration scaled."""
    return {
        "dispatcher": {
            "retry_horizon_seconds": 86400 * scale,
            "max_attempts": 0,
            "backoff_base_seconds": 1.0 * scale,
            "max_backoff_seconds": 900 * scale,
            "breaker": {
                "window_seconds": 30 * scale,
                "min_calls": 10,
                "failure_ratio": 0.5,
                "probe_initial_seconds": 5 * scale,
                "probe_max_seconds": 120 * scale,
            },
        },
        "providers": {"leadsquared": {"rate_limit": {"calls": 25, "per_seconds": 5 * scale}}},
    }


@pytest.fixture
def fast_sim() -> Any:
    served = ServedApp(
        create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=(25, 5 * SCALE))
    ).start()
    yield served
    served.stop()


def seed_leads(sim: ServedApp, count: int) -> dict[str, str]:
    emails = [f"lead{i}@example.com" for i in range(count)]
    leads = [{"EmailAddress": e, "FirstName": "Old"} for e in emails]
    ids = requests.post(f"{sim.url}/_sim/leads", json=leads, timeout=5).json()["ids"]
    return dict(zip(emails, ids, strict=True))


def outage(sim: ServedApp, status: int = 500) -> None:
    spec = {"path": "LeadManagement.svc", "status": status, "count": 10**9}
    requests.post(f"{sim.url}/_sim/faults", json=spec, timeout=5)


def recover(sim: ServedApp) -> None:
    requests.delete(f"{sim.url}/_sim/faults", timeout=5)


def current_cities(sim: ServedApp, ids: dict[str, str]) -> dict[str, str]:
    found = {}
    for email, lead_id in ids.items():
        params = {"accessKey": LSQ_ACCESS_KEY, "secretKey": LSQ_SECRET_KEY, "id": lead_id}
        url = f"{sim.url}/v2/LeadManagement.svc/Leads.GetById"
        # The simulator counts these reads against the account's limit too: wait out its 429s.
        answer = wait_until(
            lambda u=url, p=params: (r := requests.get(u, params=p, timeout=5)).status_code == 200 and r,
            timeout=30,
        )
        found[email] = answer.json()[0].get("mx_City")
    return found


def settled(service: Any) -> bool:
    """Nothing open: every delivery delivered or dead-lettered."""
    return service.runtime.store.queue_stats()["depth"] == 0


def events_with(service: Any, status: str) -> list[dict[str, Any]]:
    return admin_get(service.url, f"/v1/events?status={status}&limit=1000").json()["events"]


def send_two_per_lead(service: Any, emails: list[str]) -> dict[str, str]:
    """Per lead an older and a newer event; -> the newest city per lead."""
    newest = {}
    for round_ in ("first", "second"):
        for email in emails:
            city = f"{round_}-{email.split('@')[0]}"
            event = {"lead": {"email": email}, "changes": {"city": city}}
            assert post_generic(service.url, event, f"{round_}:{email}").status_code == 202
            newest[email] = city
    return newest


@pytest.mark.slow
def test_a_150_second_outage_compressed_ends_with_no_dead_letter_and_few_calls(
    make_service: Any, fast_sim: ServedApp, tmp_path: Path
) -> None:
    service = make_service(base_config(tmp_path, fast_sim.url, **compressed(SCALE)))
    ids = seed_leads(fast_sim, 50)
    outage(fast_sim)
    started = time.time()
    with ThreadedDispatcher(EmbeddedDispatcher(service.config, service.runtime.store, service.core)):
        newest = send_two_per_lead(service, list(ids))
        wait_until(lambda: time.time() - started >= 150 * SCALE, timeout=60)
        recover(fast_sim)
        recovered = time.time()
        during = [c for c in sim_calls(fast_sim.url) if c["at"] <= recovered]
        wait_until(lambda: settled(service), timeout=60 * SCALE + 10)
        current_at = time.time()
    assert events_with(service, "dead_lettered") == []
    print(f"outage: {len(during)} calls during it, current {current_at - recovered:.2f} s after recovery")
    assert len(during) <= 40, f"{len(during)} calls to the failing API during the outage"
    assert current_at - recovered <= 60 * SCALE
    assert current_cities(fast_sim, ids) == newest  # per-lead order kept: the newest value won
    providers = admin_get(service.url, "/v1/providers").json()["providers"]
    assert providers["leadsquared"]["breaker"] == "closed"


@pytest.mark.slow
def test_a_401_storm_opens_the_breaker_and_it_stays_open_until_resumed(
    make_service: Any, fast_sim: ServedApp, tmp_path: Path
) -> None:
    service = make_service(base_config(tmp_path, fast_sim.url, **compressed(SCALE)))
    ids = seed_leads(fast_sim, 30)
    outage(fast_sim, status=401)
    with ThreadedDispatcher(EmbeddedDispatcher(service.config, service.runtime.store, service.core)):
        for email in ids:
            post_generic(service.url, {"lead": {"email": email}, "changes": {"city": "X"}}, email)
        wait_until(
            lambda: (
                admin_get(service.url, "/v1/providers").json()["providers"]["leadsquared"]["breaker"]
                == "open"
            ),
            timeout=20,
        )
        recover(fast_sim)  # the keys work again, but nobody told us: no probe, it stays open
        calls_when_open = len(sim_calls(fast_sim.url))
        state = admin_get(service.url, "/v1/providers").json()["providers"]["leadsquared"]
        assert state["reason"].startswith("credentials rejected")
        # Open for a span that would hold several probes of a 5xx-opened breaker (0.5, 1, 2 s).
        wait_until(
            lambda: (
                admin_get(service.url, "/v1/providers").json()["providers"]["leadsquared"]["open_seconds"]
                >= 2.0
            ),
            timeout=10,
        )
        assert len(sim_calls(fast_sim.url)) == calls_when_open
        held = events_with(service, "pending")
        assert held and all(e["error_stage"] == "breaker" for e in held)  # waiting, visibly
        assert admin_post(service.url, "/v1/providers/leadsquared/resume").status_code == 200
        wait_until(lambda: settled(service), timeout=30)
    dead = events_with(service, "dead_lettered")
    delivered = events_with(service, "delivered")
    assert len(dead) <= 10 + service.config["dispatcher"]["concurrency"]  # those before it opened
    assert len(dead) + len(delivered) == len(ids)


@pytest.mark.slow
def test_one_failing_provider_does_not_delay_another(
    make_service: Any, fast_sim: ServedApp, lsq_sim: ServedApp, tmp_path: Path
) -> None:
    healthy = {
        "type": "leadsquared",
        "base_url": lsq_sim.url,
        "access_key": LSQ_ACCESS_KEY,
        "secret_key": LSQ_SECRET_KEY,
        "rate_limit": {"calls": 25, "per_seconds": 5},
    }
    raw = base_config(tmp_path, fast_sim.url, **compressed(SCALE))
    raw["providers"]["healthy"] = healthy
    raw["routes"] = [{"source": "generic", "providers": ["leadsquared", "healthy"]}]
    service = make_service(raw)
    seed_leads(fast_sim, 20)
    healthy_ids = seed_leads(lsq_sim, 10)  # a look-up and an update each: within one window
    outage(fast_sim)
    with ThreadedDispatcher(EmbeddedDispatcher(service.config, service.runtime.store, service.core)):
        sent = time.time()
        for email in healthy_ids:
            post_generic(service.url, {"lead": {"email": email}, "changes": {"city": "Y"}}, email)

        def healthy_done() -> bool:
            rows = admin_get(service.url, "/v1/events?provider=healthy&status=delivered&limit=100").json()
            return len(rows["events"]) == len(healthy_ids)

        wait_until(healthy_done, timeout=20)
        took = time.time() - sent
        assert (
            admin_get(service.url, "/v1/providers").json()["providers"]["leadsquared"]["breaker"] != "closed"
        )
        recover(fast_sim)
        wait_until(lambda: settled(service), timeout=20)
    assert took < 3.0  # not held by the other provider's outage (15 s here)
    assert set(current_cities(lsq_sim, healthy_ids).values()) == {"Y"}
    assert events_with(service, "dead_lettered") == []


@pytest.mark.slow
def test_real_time_outage_with_the_default_schedule_and_breaker(
    make_service: Any, lsq_sim: ServedApp, tmp_path: Path
) -> None:
    """No compression: the shipped defaults (1 s backoff, 24 h horizon, 10 calls / 30 s,
    probes from 5 s); an outage of 8 s for 10 leads, longer than the old attempt budget of
    the test config (5 attempts from 0.05 s)."""
    defaults = {"dispatcher": {"max_attempts": 0, "backoff_base_seconds": 1, "max_backoff_seconds": 900}}
    service = make_service(base_config(tmp_path, lsq_sim.url, **defaults))
    assert service.config["dispatcher"]["breaker"]["probe_initial_seconds"] == 5.0
    ids = seed_leads(lsq_sim, 10)
    outage(lsq_sim)
    started = time.time()
    with ThreadedDispatcher(EmbeddedDispatcher(service.config, service.runtime.store, service.core)):
        newest = send_two_per_lead(service, list(ids))
        wait_until(
            lambda: (
                admin_get(service.url, "/v1/providers").json()["providers"]["leadsquared"]["breaker"]
                == "open"
            ),
            timeout=10,
        )
        wait_until(lambda: time.time() - started >= 8, timeout=20)
        recover(lsq_sim)
        recovered = time.time()
        during = [c for c in sim_calls(lsq_sim.url) if c["at"] <= recovered]
        wait_until(lambda: settled(service), timeout=30)
    assert events_with(service, "dead_lettered") == []
    # Before it opened: at most the window's 10 plus what was in flight; then one probe at ~5 s.
    assert len(during) <= 10 + service.config["dispatcher"]["concurrency"] + 2
    assert current_cities(lsq_sim, ids) == newest
