"""Delivery through the dispatcher to the LeadSquared simulator over real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.support import (
    ADMIN_TOKEN,
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    admin_get,
    admin_post,
    base_config,
    post_generic,
    sim_calls,
)


def seed(sim, *leads: dict) -> list[str]:
    return requests.post(f"{sim.url}/_sim/leads", json=list(leads), timeout=5).json()["ids"]


def fault(sim, path: str, status: int, count: int = 1, **extra) -> None:
    requests.post(
        f"{sim.url}/_sim/faults", json={"path": path, "status": status, "count": count, **extra}, timeout=5
    )


def event_of(service, command_id: str) -> dict:
    response = admin_get(service.url, f"/v1/events/{command_id}")
    assert response.status_code == 200, response.text
    return response.json()


def sim_lead(sim, lead_id: str) -> dict:
    url = f"{sim.url}/v2/LeadManagement.svc/Leads.GetById"
    params = {"accessKey": LSQ_ACCESS_KEY, "secretKey": LSQ_SECRET_KEY, "id": lead_id}
    return requests.get(url, params=params, timeout=5).json()[0]


def test_lead_known_by_email_is_resolved_then_updated_and_cached(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com", "FirstName": "J"})
    post_generic(
        service.url, {"lead": {"email": "JANE@example.com"}, "changes": {"first_name": "Jane"}}, "m1"
    )
    service.drain()
    post_generic(service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "Leeds"}}, "m2")
    service.drain()
    assert len(sim_calls(lsq_sim.url, "GetByEmailaddress")) == 1  # the second used the cache
    updates = sim_calls(lsq_sim.url, "Lead.Update")
    assert [u["query"]["leadId"] for u in updates] == [lead_id, lead_id]
    assert all(u["query"]["postUpdatedLead"] == "true" for u in updates)
    assert sim_lead(lsq_sim, lead_id)["FirstName"] == "Jane"
    assert sim_lead(lsq_sim, lead_id)["mx_City"] == "Leeds"


def test_lead_known_by_phone_is_resolved(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "raj@example.com", "Phone": "+91-9999999999"})
    post_generic(service.url, {"lead": {"phone": "+91 99999 99999"}, "changes": {"company": "Acme"}}, "m1")
    service.drain()
    lookups = sim_calls(lsq_sim.url, "RetrieveLeadByPhoneNumber")
    assert lookups[0]["query"]["phone"] == "919999999999"
    assert sim_lead(lsq_sim, lead_id)["Company"] == "Acme"


def test_lead_id_in_the_command_skips_the_lookup(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "x@example.com"})
    post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"status": "won", "value": 5000}}, "m1")
    service.drain()
    [update] = sim_calls(lsq_sim.url)
    assert update["path"].endswith("/Lead.Update")
    assert update["json"] == [
        {"Attribute": "ProspectStage", "Value": "Customer"},
        {"Attribute": "mx_Deal_Value", "Value": "5000"},
    ]


def test_two_500s_then_success_ends_delivered(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    fault(lsq_sim, "Lead.Update", 500, count=2)
    post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "Oslo"}}, "m1")
    service.drain()
    event = event_of(service, "generic:m1")
    assert event["status"] == "delivered"
    assert event["deliveries"][0]["attempts"] == 3
    assert [c["status"] for c in sim_calls(lsq_sim.url, "Lead.Update")] == [500, 500, 200]


@pytest.mark.slow
def test_transient_failures_give_up_into_the_dead_letters(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    fault(lsq_sim, "Lead.Update", 503, count=50)
    post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "Oslo"}}, "m1")
    service.drain(seconds=10)
    delivery = event_of(service, "generic:m1")["deliveries"][0]
    assert delivery["status"] == "dead_lettered"
    assert delivery["attempts"] == 5  # dispatcher.max_attempts in the test config
    assert "gave up after 5 attempts" in delivery["last_error"]


@pytest.mark.slow
def test_429_reschedules_without_spending_the_retry_budget(make_service, lsq_sim, tmp_path) -> None:
    # A short window so the test waits out 429s quickly; LeadSquared documents no Retry-After,
    # so after a 429 the limiter treats the whole window as used.
    service = make_service(
        base_config(
            tmp_path,
            lsq_sim.url,
            providers={"leadsquared": {"rate_limit": {"calls": 25, "per_seconds": 0.3}}},
        )
    )
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    fault(lsq_sim, "Lead.Update", 429, count=6)  # more 429s than max_attempts (5)
    post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "Oslo"}}, "m1")
    service.drain(seconds=15)
    delivery = event_of(service, "generic:m1")["deliveries"][0]
    assert [c["status"] for c in sim_calls(lsq_sim.url, "Lead.Update")] == [429] * 6 + [200]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1  # the 429s did not count against the retry budget


def test_400_is_dead_lettered_and_replay_after_a_config_fix_delivers(make_service, lsq_sim, tmp_path) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    broken = base_config(tmp_path, lsq_sim.url, providers={"leadsquared": {"field_map": {"city": "mx_Town"}}})
    service = make_service(broken)
    post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "Oslo"}}, "m1")
    service.drain()
    delivery = event_of(service, "generic:m1")["deliveries"][0]
    assert delivery["status"] == "dead_lettered"
    assert delivery["attempts"] == 1  # permanent: not retried
    assert "mx_Town" in delivery["last_error"] and "400" in delivery["last_error"]
    listed = admin_get(service.url, "/v1/events?status=dead_lettered").json()["events"]
    assert [e["command_id"] for e in listed] == ["generic:m1"]

    fixed = make_service(base_config(tmp_path, lsq_sim.url))  # same queue file, mapping fixed
    replay = admin_post(fixed.url, "/v1/events/generic:m1/replay")
    assert replay.status_code == 202 and replay.json()["providers"] == ["leadsquared"]
    fixed.drain()
    event = event_of(fixed, "generic:m1")
    assert event["status"] == "delivered"
    assert event["deliveries"][0]["replays"] == 1
    assert sim_lead(lsq_sim, lead_id)["mx_City"] == "Oslo"
    assert admin_post(fixed.url, "/v1/events/generic:m1/replay").json()["status"] == "nothing_to_replay"


def test_unknown_lead_and_wrong_keys_are_permanent_with_their_stage(make_service, lsq_sim, tmp_path) -> None:
    service = make_service(base_config(tmp_path, lsq_sim.url))
    post_generic(service.url, {"lead": {"email": "ghost@example.com"}, "changes": {"city": "Oslo"}}, "m1")
    post_generic(service.url, {"lead": {"id": "no-such-lead"}, "changes": {"city": "Oslo"}}, "m2")
    service.drain()
    ghost = event_of(service, "generic:m1")["deliveries"][0]
    assert ghost["status"] == "dead_lettered" and ghost["error_stage"] == "lookup"
    missing = event_of(service, "generic:m2")["deliveries"][0]
    assert (
        missing["status"] == "dead_lettered" and "MXInvalidEntityReferenceException" in missing["last_error"]
    )

    wrong = make_service(
        base_config(tmp_path / "w", lsq_sim.url, providers={"leadsquared": {"secret_key": "wrong-key-1"}})
    )
    post_generic(wrong.url, {"lead": {"id": "x"}, "changes": {"city": "Oslo"}}, "m3")
    wrong.drain()
    denied = event_of(wrong, "generic:m3")["deliveries"][0]
    assert (
        denied["status"] == "dead_lettered" and denied["error_stage"] == "config" and denied["attempts"] == 1
    )
    assert "401" in denied["last_error"]


def test_commands_for_one_lead_apply_in_order_and_stale_values_never_win(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    now = datetime.now(UTC)
    newer = {"lead": {"id": lead_id}, "changes": {"city": "Paris"}, "occurred_at": now.isoformat()}
    older = {
        "lead": {"id": lead_id},
        "changes": {"city": "Rome", "company": "Acme"},
        "occurred_at": (now - timedelta(hours=1)).isoformat(),
    }
    post_generic(service.url, newer, "m-new")
    service.drain()
    post_generic(service.url, older, "m-old")  # arrives late: its city is stale, its company is not
    service.drain()
    lead = sim_lead(lsq_sim, lead_id)
    assert lead["mx_City"] == "Paris" and lead["Company"] == "Acme"
    assert sim_calls(lsq_sim.url, "Lead.Update")[-1]["json"] == [{"Attribute": "Company", "Value": "Acme"}]


def test_waiting_commands_for_one_lead_are_coalesced_into_one_call(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    for index, city in enumerate(["A", "B", "C"]):
        post_generic(
            service.url,
            {
                "lead": {"id": lead_id},
                "changes": {"city": city, f"{'first_name' if index == 0 else 'last_name'}": city},
            },
            f"m{index}",
        )
    service.drain()
    [call] = sim_calls(lsq_sim.url, "Lead.Update")
    assert {item["Attribute"]: item["Value"] for item in call["json"]} == {
        "mx_City": "C",
        "FirstName": "A",
        "LastName": "C",
    }
    for index in range(3):
        assert event_of(service, f"generic:m{index}")["status"] == "delivered"


@pytest.mark.slow
def test_a_misconfigured_provider_keeps_events_waiting_visibly(make_service, tmp_path) -> None:
    # LeadSquared without its keys is refused at start-up (config); Octanist without its
    # api_key starts and waits, visibly.
    raw = base_config(tmp_path)
    raw["providers"] = {"octanist": {"type": "octanist", "base_url": "http://127.0.0.1:9"}}
    raw["routes"] = [{"source": "generic", "providers": ["octanist"]}]
    service = make_service(raw)
    assert (
        post_generic(service.url, {"lead": {"id": "L1"}, "changes": {"city": "Oslo"}}, "m1").status_code
        == 202
    )
    service.drain(seconds=1)
    delivery = event_of(service, "generic:m1")["deliveries"][0]
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert "api_key not configured" in delivery["last_error"]


def test_stored_events_never_hold_the_provider_keys(service, lsq_sim) -> None:
    fault(lsq_sim, "Lead.Update", 500, count=1)
    post_generic(service.url, {"lead": {"email": "ghost@example.com"}, "changes": {"city": "Oslo"}}, "m1")
    post_generic(service.url, {"lead": {"id": "nope"}, "changes": {"city": "Oslo"}}, "m2")
    service.drain()
    dump = json.dumps([event_of(service, "generic:m1"), event_of(service, "generic:m2")])
    dump += json.dumps(admin_get(service.url, "/v1/events").json())
    assert LSQ_ACCESS_KEY not in dump and LSQ_SECRET_KEY not in dump and ADMIN_TOKEN not in dump


def test_admin_api_needs_the_token(service) -> None:
    assert requests.get(f"{service.url}/v1/events", timeout=5).status_code == 401
    bad = requests.get(f"{service.url}/v1/events", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert bad.status_code == 401
    assert admin_get(service.url, "/v1/events/generic:none").status_code == 404
    assert admin_get(service.url, "/v1/events?status=weird").status_code == 400


def test_events_cli_lists_shows_and_replays(make_service, lsq_sim, tmp_path, capsys) -> None:
    from service.cli import main

    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    raw = base_config(tmp_path, lsq_sim.url, providers={"leadsquared": {"field_map": {"city": "mx_Town"}}})
    service = make_service(raw)
    post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "Oslo"}}, "cli1")
    service.drain()
    from tests.support import write_config

    config_path = str(write_config(tmp_path, raw))
    common = ["--config", config_path]
    flags = ["--url", service.url, "--token", ADMIN_TOKEN]
    assert main([*common, "events", "list", "--status", "dead_lettered", *flags]) == 0
    listed = capsys.readouterr().out
    assert "generic:cli1\tleadsquared\tdead_lettered\tattempts=1" in listed
    assert main([*common, "events", "show", "generic:cli1", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["deliveries"][0]["error_stage"] == "provider"
    assert main([*common, "events", "replay", "generic:cli1", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "replaying"
    import pytest

    with pytest.raises(SystemExit):
        main([*common, "events", "list", "--url", service.url, "--token", "wrong"])
