"""The double-submit guard: only a repeat of the lead's *latest accepted* change is withheld,
it is recorded (event log, metric), and senders whose events are real changes are exempt."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from prometheus_client import REGISTRY

from service.sources import SOURCE_KINDS
from tests.support import admin_get, base_config, canonical_event, load, post_generic, sim_calls


def guarded(make_service: Any, lsq_sim: Any, tmp_path: Any, **generic: Any) -> Any:
    raw = base_config(tmp_path, lsq_sim.url, dedup={"fingerprint_window_seconds": 600})
    raw["sources"]["generic"].update(generic)
    return make_service(raw)


def double_submits(source: str) -> float:
    return REGISTRY.get_sample_value("leadrelay_double_submits_total", {"source": source}) or 0.0


def test_a_change_back_and_forth_is_never_dropped(make_service, lsq_sim, tmp_path) -> None:
    """A -> B -> A: the third is a real change (B came in between), delivered in order."""
    seeded = requests.post(
        f"{lsq_sim.url}/_sim/leads",
        json=[{"EmailAddress": "jane@example.com", "FirstName": "Jane"}],
        timeout=5,
    )
    [lead_id] = seeded.json()["ids"]
    service = guarded(make_service, lsq_sim, tmp_path)
    for msg_id, city in (("m1", "London"), ("m2", "Paris"), ("m3", "London")):
        response = post_generic(service.url, canonical_event(city=city), msg_id)
        assert response.status_code == 202, response.text
        service.drain()
    updates = sim_calls(lsq_sim.url, "Lead.Update")
    assert [c["json"] for c in updates] == [
        [{"Attribute": "mx_City", "Value": city}] for city in ("London", "Paris", "London")
    ]
    assert all(c["query"]["leadId"] == lead_id for c in updates)


def test_a_repeat_of_the_latest_change_is_recorded_and_counted(make_service, lsq_sim, tmp_path) -> None:
    service = guarded(make_service, lsq_sim, tmp_path)
    before = double_submits("generic")
    assert post_generic(service.url, canonical_event(city="Rome"), "first").status_code == 202
    again = post_generic(service.url, canonical_event(city="Rome"), "second")
    assert again.status_code == 200, again.text
    assert again.json()["duplicate_of"] == "generic:first"
    assert double_submits("generic") == before + 1
    event = admin_get(service.url, "/v1/events/generic:second").json()
    assert event["status"] == "duplicate"
    [delivery] = event["deliveries"]
    assert delivery["status"] == "duplicate" and delivery["error_stage"] == "dedup"
    assert "generic:first" in delivery["last_error"]
    # A retry of the double submit itself is a plain redelivery.
    retry = post_generic(service.url, canonical_event(city="Rome"), "second")
    assert retry.status_code == 200 and "duplicate_of" not in retry.json()
    # The guard is per lead: the same change for another lead is new.
    other = post_generic(service.url, canonical_event(email="joe@example.com", city="Rome"), "third")
    assert other.status_code == 202


def test_the_guard_is_off_for_a_sender_that_turns_it_off(make_service, lsq_sim, tmp_path) -> None:
    service = guarded(make_service, lsq_sim, tmp_path, double_submit_guard=False)
    assert post_generic(service.url, canonical_event(city="Oslo"), "one").status_code == 202
    assert post_generic(service.url, canonical_event(city="Oslo"), "two").status_code == 202


def test_each_sender_declares_whether_the_guard_applies(tmp_path) -> None:
    """CRM changes with their own event ids are exempt; forms without one are guarded."""
    declared = {name: kind.double_submit_guard for name, kind in SOURCE_KINDS.items()}
    assert declared == {
        "generic": True,
        "hubspot": False,
        "typeform": True,
        "meta_lead_ads": True,
        "pipedrive": False,
        "calendly": False,
        "webflow": True,
        "unbounce": True,
        "google_ads": True,
        "mapped": True,
        "salesforce": False,
    }
    raw = base_config(tmp_path)
    raw["sources"]["deals"] = {"type": "pipedrive"}
    raw["sources"]["forms"] = {"type": "pipedrive", "double_submit_guard": True}
    config = load(raw)
    assert config.sources["deals"]["double_submit_guard"] is False
    assert config.sources["forms"]["double_submit_guard"] is True
    assert config.sources["generic"]["double_submit_guard"] is True


def test_a_pipedrive_stage_revert_ends_at_the_senders_latest_stage(make_service, lsq_sim, tmp_path) -> None:
    """427 -> 428, 428 -> 427, 427 -> 428: three real changes with their own `meta.id`; the
    CRM ends where Pipedrive is (the guard does not apply to Pipedrive)."""
    from handlers.simulation import ServedApp
    from tests.senders.conftest import PIPEDRIVE_TOKEN, fixture_json, pipedrive_headers, senders_config
    from tests.senders.pipedrive.api_simulator import create_pipedrive_simulator

    person = {
        "id": 1,
        "name": "Jane Doe",
        "emails": [{"value": "jane.doe@example.com", "primary": True}],
        "phones": [],
    }
    pipedrive = ServedApp(create_pipedrive_simulator(PIPEDRIVE_TOKEN)).start()
    try:
        requests.post(f"{pipedrive.url}/_sim/leads", json=[person], timeout=5).raise_for_status()
        requests.post(
            f"{lsq_sim.url}/_sim/leads", json=[{"EmailAddress": "jane.doe@example.com"}], timeout=5
        ).raise_for_status()
        raw = senders_config(
            tmp_path,
            {"pipedrive": pipedrive.url},
            pipedrive={"stage_map": {"427": "contacted", "428": "qualified"}},
        )
        raw["providers"]["leadsquared"]["base_url"] = lsq_sim.url
        raw["dedup"]["fingerprint_window_seconds"] = 600
        service = make_service(raw)
        for second, (before, after) in enumerate(((427, 428), (428, 427), (427, 428)), start=1):
            event = fixture_json("pipedrive", "deal_stage_change.json")
            event["data"]["stage_id"], event["previous"]["stage_id"] = after, before
            event["meta"]["id"] = f"move-{second}"
            event["meta"]["timestamp"] = f"2024-09-24T07:50:0{second}.000Z"
            body = json.dumps(event).encode()
            response = requests.post(
                f"{service.url}/webhooks/pipedrive", data=body, headers=pipedrive_headers(), timeout=10
            )
            assert response.status_code == 202, response.text
            service.drain()
    finally:
        pipedrive.stop()
    stages = [
        item["Value"]
        for call in sim_calls(lsq_sim.url, "Lead.Update")
        for item in call["json"]
        if item["Attribute"] == "ProspectStage"
    ]
    assert stages == ["Opportunity", "Contacted", "Opportunity"]


def test_a_command_that_was_not_queued_leaves_the_guard_as_it_was(tmp_path) -> None:
    """The guard records a command before queueing it; if queueing fails, the previous
    record comes back, so the sender's retry of that change is not taken for a repeat."""
    from dataclasses import replace

    from service.domain.command import LeadIdentity, LeadUpdateCommand, utcnow
    from service.domain.state import StateUnavailable
    from service.pipeline.ingest import Ingestor
    from service.state import SqlStateStore, migrate
    from service.state.engine import SQLiteEngine

    def store(name: str) -> SqlStateStore:
        engine = SQLiteEngine(tmp_path / name)
        migrate(engine)
        return SqlStateStore(engine)

    config = load(base_config(tmp_path, dedup={"fingerprint_window_seconds": 600}))
    dedup = store("dedup.db")  # apart from the queue: no shared transaction
    queue = store("queue.db")
    ingestor = Ingestor(config, dedup, queue)
    first = LeadUpdateCommand(
        command_id="generic:first",
        source="generic",
        event_type="lead.updated",
        occurred_at=utcnow(),
        lead=LeadIdentity(email="jane@example.com"),
        changes={"city": "Rome"},
    )
    assert ingestor.accept(first).status == "accepted"
    latest = dedup.get("fpl:generic:email:jane@example.com")
    # A real failure of the queue write: a table it writes is gone for a moment.
    with queue.transaction() as db:
        db.execute("ALTER TABLE history RENAME TO history_away")
    change = replace(first, command_id="generic:taken", changes={"city": "Oslo"})
    with pytest.raises(StateUnavailable):
        ingestor.accept(change)
    assert dedup.get("fpl:generic:email:jane@example.com") == latest
    with queue.transaction() as db:
        db.execute("ALTER TABLE history_away RENAME TO history")
    assert ingestor.accept(replace(change, command_id="generic:retry")).status == "accepted"
