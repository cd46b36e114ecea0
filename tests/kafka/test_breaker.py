"""Two Kafka dispatchers share one breaker and one operator pause per provider (through the
Redis provider controls): a pause set in the web process holds both; an outage opens one
breaker that holds both, and recovery ends with every lead delivered once, no dead letter."""

from __future__ import annotations

import time

import requests

from tests.kafka.conftest import wait_delivered
from tests.support import admin_get, admin_post, post_generic, wait_until


def provider_state(service) -> dict:
    return admin_get(service.url, "/v1/providers").json()["providers"]["leadsquared"]


def post_leads(service, first: int, count: int) -> None:
    for n in range(first, first + count):
        event = {"lead": {"id": f"lead-{n}"}, "changes": {"note": f"n{n}"}}
        assert post_generic(service.url, event, f"m{n}").status_code == 202


def test_two_dispatchers_share_the_pause_and_the_breaker(
    broker, make_sim, kafka_config, make_service, spawn
) -> None:
    sim = make_sim(leads=80)
    raw = kafka_config(
        sim.url,
        dispatcher={
            "max_attempts": 0,
            "breaker": {"window_seconds": 3, "probe_initial_seconds": 0.5, "probe_max_seconds": 4},
        },
    )
    service = make_service(raw)
    first = spawn(["kafka-dispatch"], raw, "dispatcher-1")
    second = spawn(["kafka-dispatch"], raw, "dispatcher-2")

    # An operator pause, written by the web process, holds both dispatchers.
    assert admin_post(service.url, "/v1/providers/leadsquared/pause").json()["paused"] is True
    post_leads(service, 0, 20)

    def held() -> int:
        events = admin_get(service.url, "/v1/events?status=pending&limit=100").json()["events"]
        return len([e for e in events if e["error_stage"] == "breaker"])

    wait_until(lambda: held() == 20, timeout=60, what="20 deliveries held, visibly, by the pause")
    assert sim.calls() == []
    admin_post(service.url, "/v1/providers/leadsquared/resume")
    assert wait_delivered(sim, 20, timeout=60) == {f"lead-{n}": 1 for n in range(20)}

    # An outage: the breaker opens once for both, probes alone go out, recovery delivers all.
    requests.post(
        f"{sim.url}/_sim/faults", json={"path": "Lead.Update", "status": 500, "count": 10**9}, timeout=5
    )
    post_leads(service, 20, 40)
    wait_until(lambda: provider_state(service)["breaker"] != "closed", timeout=30, what="breaker open")
    opened = time.time()
    wait_until(lambda: time.time() - opened >= 8, timeout=20)
    # Past the calls in flight at opening and the other dispatcher's next read of the controls (1 s).
    after_open = [c for c in sim.calls() if c["at"] > opened + 1.5]
    requests.delete(f"{sim.url}/_sim/faults", timeout=5)
    # Probes only: each dispatcher at most one per interval (0.5, 1, 2, 4 s), not every
    # delivery's own backoff (0.05 s to 0.5 s: hundreds of calls in 8 s).
    assert len(after_open) <= 2 * 6, len(after_open)
    counts = wait_delivered(sim, 60, timeout=90)
    assert counts == {f"lead-{n}": 1 for n in range(60)}
    assert admin_get(service.url, "/v1/events?status=dead_lettered").json()["events"] == []
    logs = first.output() + second.output()
    assert "circuit opened for leadsquared" in logs
