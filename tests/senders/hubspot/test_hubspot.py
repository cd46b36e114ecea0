from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.senders.conftest import (
    command_of,
    fixture_bytes,
    fixture_json,
    hubspot_legacy_headers,
    hubspot_v3_headers,
    post,
    queued,
    senders_config,
)
from tests.support import sim_calls

CONTACTS = [
    {
        "id": "1246965",
        "properties": {"email": "Ann@Example.com", "firstname": "Ann", "phone": "+1 617 555 0101"},
    },
    {
        "id": "1246978",
        "properties": {"email": "bob@example.com", "firstname": "Bob", "lastname": "Ray", "city": "Boston"},
    },
    {"id": "65059681032", "properties": {"email": "cy@example.com", "firstname": "Cy", "jobtitle": "CTO"}},
]
DEALS = [
    {"id": "8812345", "properties": {"dealstage": "closedwon", "amount": "900"}, "contacts": ["1246965"]},
    {
        "id": "8812346",
        "properties": {"dealstage": "appointmentscheduled", "amount": "1500.50"},
        "contacts": ["1246978"],
    },
]


def hubspot_service(make_service: Any, tmp_path: Path, hubspot_sim: Any, **settings: Any) -> Any:
    requests.post(f"{hubspot_sim.url}/_sim/contacts", json=CONTACTS, timeout=5).raise_for_status()
    requests.post(f"{hubspot_sim.url}/_sim/deals", json=DEALS, timeout=5).raise_for_status()
    return make_service(senders_config(tmp_path, {"hubspot": hubspot_sim.url}, hubspot=settings))


def send(service: Any, body: bytes, **kwargs: Any) -> requests.Response:
    url = f"{service.url}/webhooks/hubspot"
    return post(service, "/webhooks/hubspot", body, hubspot_v3_headers(url, body, **kwargs))


def test_documented_batch_becomes_one_command_per_event(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim, field_map={"lifecyclestage": "stage"})
    body = fixture_bytes("hubspot", "crm_batch_docs_example.json")
    response = send(service, body)
    assert response.status_code == 202, response.text
    ids = response.json()["command_ids"]
    assert ids == [
        "hubspot:33:25:3816279340:1246965:1462216307945",
        "hubspot:33:22:3816279480:1246978:1462216307945",
    ]
    change = command_of(service, ids[0])
    assert change["event_type"] == "contact.propertyChange"
    assert change["occurred_at"].startswith("2016-05-02T19:11:47.945")  # occurredAt, not arrival
    assert change["lead"] == {"id": None, "email": "ann@example.com", "phone": "+16175550101"}
    assert change["changes"] == {"stage": "subscriber"}
    created = command_of(service, ids[1])
    assert created["event_type"] == "contact.creation"
    assert created["changes"] == {
        "email": "bob@example.com",
        "first_name": "Bob",
        "last_name": "Ray",
        "city": "Boston",
    }
    # One batch read for both contacts, with the private app token.
    reads = sim_calls(hubspot_sim.url, "/crm/v3/objects/contacts/batch/read")
    assert len(reads) == 1
    assert sorted(i["id"] for i in reads[0]["json"]["inputs"]) == ["1246965", "1246978"]
    assert reads[0]["headers"]["authorization"].startswith("Bearer pat-")
    again = send(service, body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert queued(service) == 2


def test_real_delivery_shape_with_subscription_type(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim)
    response = send(service, fixture_bytes("hubspot", "contact_creation_delivery.json"))
    assert response.status_code == 202, response.text
    command = command_of(service, "hubspot:12345678:234567:567890123:65059681032:1708986598741")
    assert command["changes"] == {"email": "cy@example.com", "first_name": "Cy", "job_title": "CTO"}
    assert command["metadata"]["hubspot_object_id"] == "65059681032"


def test_a_single_event_object_is_a_batch_of_one(make_service: Any, tmp_path: Path, hubspot_sim: Any) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim)
    response = send(service, fixture_bytes("hubspot", "contact_creation_single_event.json"))
    assert response.status_code == 202, response.text
    assert response.json()["command_id"] == "hubspot:12345678:234567:567890123:65059681032:1708986598741"
    command = command_of(service, response.json()["command_id"])
    assert command["changes"] == {"email": "cy@example.com", "first_name": "Cy", "job_title": "CTO"}
    # The same event in its batch shape is the same command: a duplicate.
    again = send(service, fixture_bytes("hubspot", "contact_creation_delivery.json"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_deal_stage_change_and_creation_use_the_associated_contact(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim)
    response = send(service, fixture_bytes("hubspot", "deal_stage_change.json"))
    assert response.status_code == 202, response.text
    won, created = response.json()["command_ids"]
    assert command_of(service, won)["changes"] == {"stage": "closedwon", "status": "won"}
    assert command_of(service, won)["lead"]["email"] == "ann@example.com"
    assert command_of(service, created)["changes"] == {"stage": "appointmentscheduled", "value": 1500.5}
    assert command_of(service, created)["lead"]["email"] == "bob@example.com"
    assert len(sim_calls(hubspot_sim.url, "/crm/v4/associations/deal/contact/batch/read")) == 1


def test_a_batch_of_100_events_is_100_commands_from_one_lookup(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim)
    template = fixture_json("hubspot", "crm_batch_docs_example.json")[1]
    contacts = [{"id": str(5000 + i), "properties": {"email": f"p{i}@example.com"}} for i in range(100)]
    requests.post(f"{hubspot_sim.url}/_sim/contacts", json=contacts, timeout=5).raise_for_status()
    # HubSpot's eventId is not unique: the same eventId on different objects is different events.
    events = [{**template, "objectId": 5000 + i, "eventId": 42} for i in range(100)]
    response = send(service, json.dumps(events).encode())
    assert response.status_code == 202, response.text
    assert len(set(response.json()["command_ids"])) == 100
    assert queued(service) == 100
    assert len(sim_calls(hubspot_sim.url, "/batch/read")) == 1


def test_signature_v3_failures_are_401(make_service: Any, tmp_path: Path, hubspot_sim: Any) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim)
    body = fixture_bytes("hubspot", "crm_batch_docs_example.json")
    url = f"{service.url}/webhooks/hubspot"
    stale = hubspot_v3_headers(url, body, ts_ms=int((time.time() - 301) * 1000))
    wrong = hubspot_v3_headers(url, body, secret="other-app-secret")
    other_url = hubspot_v3_headers("https://elsewhere.example/webhooks/hubspot", body)
    no_timestamp = hubspot_v3_headers(url, body)
    del no_timestamp["X-HubSpot-Request-Timestamp"]
    unsigned = {"Content-Type": "application/json"}
    for headers in (stale, wrong, other_url, no_timestamp, unsigned):
        response = post(service, "/webhooks/hubspot", body, headers)
        assert response.status_code == 401, response.text
    assert queued(service) == 0
    assert sim_calls(hubspot_sim.url) == []  # nothing is looked up for an unauthenticated request


def test_signature_covers_the_public_url_behind_a_proxy(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    requests.post(f"{hubspot_sim.url}/_sim/contacts", json=CONTACTS, timeout=5).raise_for_status()
    raw = senders_config(tmp_path, {"hubspot": hubspot_sim.url})
    raw["server"]["public_base_url"] = "https://hooks.example.com/leadrelay/"
    service = make_service(raw)
    body = fixture_bytes("hubspot", "contact_creation_delivery.json")
    public = "https://hooks.example.com/leadrelay/webhooks/hubspot"
    assert post(service, "/webhooks/hubspot", body, hubspot_v3_headers(public, body)).status_code == 202
    local = f"{service.url}/webhooks/hubspot"
    assert post(service, "/webhooks/hubspot", body, hubspot_v3_headers(local, body)).status_code == 401


def test_workflow_webhook_with_v2_and_v1_signatures(senders: Any) -> None:
    body = fixture_bytes("hubspot", "workflow_contact.json")
    url = f"{senders.url}/webhooks/hubspot"
    response = post(senders, "/webhooks/hubspot", body, hubspot_legacy_headers(url, body, "v2"))
    assert response.status_code == 202, response.text
    command = command_of(senders, response.json()["command_id"])
    assert command["event_type"] == "workflow.contact"
    assert command["lead"] == {"id": None, "email": "codey.huang@hubspot.com", "phone": "+15551222323"}
    assert command["changes"] == {
        "email": "codey.huang@hubspot.com",
        "first_name": "Codey",
        "last_name": "Huang",
        "company": "HubSpot",
        "phone": "555-122-2323",
        "city": "Cambridge",
    }
    assert command["occurred_at"].startswith("2017-01-10T05:36:25")  # the form submission's time
    again = post(senders, "/webhooks/hubspot", body, hubspot_legacy_headers(url, body, "v1"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    bad = post(senders, "/webhooks/hubspot", body, hubspot_legacy_headers(url, body, "v2", secret="nope"))
    assert bad.status_code == 401


def test_legacy_signatures_can_be_turned_off(make_service: Any, tmp_path: Path) -> None:
    service = make_service(senders_config(tmp_path, hubspot={"signature_versions": ["v3"]}))
    body = fixture_bytes("hubspot", "workflow_contact.json")
    url = f"{service.url}/webhooks/hubspot"
    assert (
        post(service, "/webhooks/hubspot", body, hubspot_legacy_headers(url, body, "v1")).status_code == 401
    )


def test_crm_rate_limit_is_retried_and_a_bad_token_is_503(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim)
    body = fixture_bytes("hubspot", "contact_creation_delivery.json")
    requests.post(
        f"{hubspot_sim.url}/_sim/faults", json={"path": "batch/read", "status": 429, "count": 1}, timeout=5
    )
    assert send(service, body).status_code == 202
    assert [c["status"] for c in sim_calls(hubspot_sim.url, "batch/read")] == [429, 200]

    other = make_service(
        senders_config(tmp_path / "b", {"hubspot": hubspot_sim.url}, hubspot={"access_token": "pat-wrong"})
    )
    response = send(other, fixture_bytes("hubspot", "crm_batch_docs_example.json"))
    assert response.status_code == 503, response.text
    assert "pat-wrong" not in response.text
    assert queued(other) == 0
    # A 401 is permanent for the call: asked once, not retried (HubSpot redelivers later).
    assert [c["status"] for c in sim_calls(hubspot_sim.url, "batch/read")][2:] == [401]


def test_unsupported_subscription_types_are_ignored(senders: Any) -> None:
    events = [{**fixture_json("hubspot", "crm_batch_docs_example.json")[1], "eventType": "company.creation"}]
    body = json.dumps(events).encode()
    response = send(senders, body)
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "ignored": ["company.creation"]}


def test_out_of_range_occurred_at_is_a_400(senders: Any) -> None:
    events = [{**fixture_json("hubspot", "crm_batch_docs_example.json")[1], "occurredAt": 2**70}]
    response = send(senders, json.dumps(events).encode())
    assert response.status_code == 400
    assert "0.occurredAt" in response.json()["details"]


@pytest.mark.slow
def test_a_slow_crm_answers_503_within_the_deadline(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    # HubSpot gives up on a webhook after 5 s: all look-ups of one request share one deadline.
    service = hubspot_service(
        make_service, tmp_path, hubspot_sim, api_timeout_seconds=0.5, api_deadline_seconds=1.2, api_attempts=5
    )
    slow = {"path": "batch/read", "status": 200, "count": 10, "delay_seconds": 2}
    requests.post(f"{hubspot_sim.url}/_sim/faults", json=slow, timeout=5)
    started = time.monotonic()
    response = send(service, fixture_bytes("hubspot", "deal_stage_change.json"))
    assert response.status_code == 503 and response.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert time.monotonic() - started < 2.0
    assert queued(service) == 0


def test_unmapped_property_changes_cost_no_api_call(
    make_service: Any, tmp_path: Path, hubspot_sim: Any
) -> None:
    service = hubspot_service(make_service, tmp_path, hubspot_sim)  # lifecyclestage is not mapped by default
    event = fixture_json("hubspot", "crm_batch_docs_example.json")[0]
    response = send(service, json.dumps([event]).encode())
    assert response.status_code == 200
    assert response.json()["ignored"] == ["contact.propertyChange:unmapped_property:lifecyclestage"]
    assert sim_calls(hubspot_sim.url) == []


def test_v3_decodes_only_the_documented_escapes() -> None:
    from service.sources.hubspot.adapter import v3_uri

    url = "https://h.example/webhooks/hubspot?a=%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B&b=%20%25"
    assert v3_uri(url) == "https://h.example/webhooks/hubspot?a=:/?@!$'()*,;&b=%20%25"
