"""Fault runs of the whole distributed pipeline (web, two dispatchers, broker, PostgreSQL,
Redis, the strict LeadSquared simulator with its 25 calls / 5 s limit). Each asserts: nothing
accepted lost, no duplicate provider call beyond those the dispatchers name in their
"may be delivered twice" warning, no 429, and every lead's final value is its newest event's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.kafka.conftest import wait_settled
from tests.support import admin_get, post_generic, wait_until

BASE = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
TWICE = "may be delivered twice"


class Events:
    """Posts updates of one field for a few leads, each newer than the last."""

    def __init__(self, service: Any, leads: int) -> None:
        self.service = service
        self.leads = leads
        self.serial = 0
        self.newest: dict[str, str] = {}

    def post(self, count: int) -> None:
        for _ in range(count):
            self.serial += 1
            lead = f"lead-{self.serial % self.leads}"
            city = f"city-{self.serial}"
            event = {
                "lead": {"id": lead},
                "changes": {"city": city},
                "occurred_at": (BASE + timedelta(seconds=self.serial)).isoformat(),
            }
            answer = post_generic(self.service.url, event, f"f{self.serial}")
            assert answer.status_code == 202, answer.text
            self.newest[lead] = city


def check_outcome(sim: Any, events: Events, logs: str) -> None:
    applied: dict[str, str] = {}
    seen: dict[tuple[str, str], int] = {}
    for call in sim.calls():
        if call["status"] != 200:
            continue
        lead = call["query"]["leadId"]
        city = next(a["Value"] for a in call["json"] if a["Attribute"] == "mx_City")
        applied[lead] = city  # the simulator applies calls in this order
        seen[(lead, city)] = seen.get((lead, city), 0) + 1
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates <= logs.count(TWICE), (duplicates, logs.count(TWICE))
    assert sim.rejected_429 == 0
    assert applied == events.newest
    listed = admin_get(events.service.url, "/v1/events?limit=1000").json()["events"]
    assert len(listed) == events.serial
    assert {e["status"] for e in listed} == {"delivered"}


def test_two_dispatchers_one_killed_three_times(broker, make_sim, kafka_config, make_service, spawn) -> None:
    sim = make_sim(rate_limit=(25, 5.0), leads=12)
    raw = kafka_config(sim.url)
    raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 25, "per_seconds": 5}
    service = make_service(raw)
    started = [spawn(["kafka-dispatch"], raw, f"dispatcher-{n}") for n in range(2)]
    running = list(started)
    events = Events(service, leads=12)
    for round_ in range(3):
        before = len(sim.calls())
        events.post(24)
        wait_until(lambda b=before: len(sim.calls()) > b + 3, timeout=30, what="this round's calls under way")
        victim = running.pop(0)
        victim.kill9()  # mid-run: its claims and lead claims are left behind
        replacement = spawn(["kafka-dispatch"], raw, f"dispatcher-{round_ + 2}")
        running.append(replacement)
        started.append(replacement)
    wait_settled(service.runtime.store, broker.bootstrap, timeout=120)
    check_outcome(sim, events, "".join(p.output() for p in started))
