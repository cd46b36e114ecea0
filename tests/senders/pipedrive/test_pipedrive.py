from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from tests.senders.conftest import (
    command_of,
    fixture_bytes,
    pipedrive_headers,
    post,
    queued,
    senders_config,
)
from tests.support import sim_calls

PERSON = {
    "id": 1,
    "name": "Jane Doe",
    "first_name": "Jane",
    "last_name": "Doe",
    "emails": [{"value": "jane.doe@example.com", "primary": True, "label": "work"}],
    "phones": [{"value": "+442071838750", "primary": True, "label": "work"}],
}


def service_with_person(make_service: Any, tmp_path: Path, pipedrive_sim: Any, **extra: Any) -> Any:
    requests.post(f"{pipedrive_sim.url}/_sim/leads", json=[PERSON], timeout=5).raise_for_status()
    return make_service(senders_config(tmp_path, {"pipedrive": pipedrive_sim.url}, pipedrive=extra))


def test_won_lost_and_stage_change_become_status_changes(
    make_service: Any, tmp_path: Path, pipedrive_sim: Any
) -> None:
    service = service_with_person(make_service, tmp_path, pipedrive_sim, stage_map={"2": "qualified"})
    for name, meta_id, expected in (
        ("deal_won.json", "4b5c1f0e-3f5b-4c1e-9c55-0b7e9d1fb0a1", {"status": "won", "value": 5000, "currency": "EUR"}),
        ("deal_lost.json", "9d0f8a4e-77c2-4b8e-8a3b-57b3b8a0e5d2",
         {"status": "lost", "loss_reason": "Went with a competitor"}),
        ("deal_stage_change.json", "a25c7a9a-2a22-4a40-a4a7-6f95b17bca4c", {"stage": "2", "status": "qualified"}),
    ):  # fmt: skip
        body = fixture_bytes("pipedrive", name)
        response = post(service, "/webhooks/pipedrive", body, pipedrive_headers())
        assert response.status_code == 202, response.text
        command = command_of(service, f"pipedrive:{meta_id}")
        assert command["event_type"] == "deal.change"
        assert command["changes"] == expected, name
        assert command["lead"] == {"id": None, "email": "jane.doe@example.com", "phone": "+442071838750"}
        assert command["metadata"]["pipedrive_deal_id"] == "1"
    # The person was looked up once and then served from the cache.
    lookups = sim_calls(pipedrive_sim.url, "/api/v2/persons/1")
    assert len(lookups) == 1 and lookups[0]["headers"]["x-api-token"]
    again = post(
        service, "/webhooks/pipedrive", fixture_bytes("pipedrive", "deal_won.json"), pipedrive_headers()
    )
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert queued(service) == 3


def test_person_change_needs_no_lookup(make_service: Any, tmp_path: Path, pipedrive_sim: Any) -> None:
    service = make_service(senders_config(tmp_path, {"pipedrive": pipedrive_sim.url}))
    body = fixture_bytes("pipedrive", "person_change.json")
    response = post(service, "/webhooks/pipedrive", body, pipedrive_headers())
    assert response.status_code == 202, response.text
    command = command_of(service, "pipedrive:e2c1f7a0-5f56-4c0e-9d1a-3c3b6f0a7b10")
    assert command["event_type"] == "person.change"
    assert command["changes"] == {
        "email": "jane.doe@example.com",
        "phone": "+442071838750",
        "first_name": "Jane",
        "last_name": "Doe",
        "full_name": "Jane Doe",
    }
    assert sim_calls(pipedrive_sim.url) == []


def test_basic_auth_is_required_and_checked(senders: Any) -> None:
    body = fixture_bytes("pipedrive", "deal_won.json")
    for headers in (
        {"Content-Type": "application/json"},
        pipedrive_headers(password="wrong"),
        pipedrive_headers(user="someone-else"),
        {"Content-Type": "application/json", "Authorization": "Basic !!notbase64"},
        {"Content-Type": "application/json", "Authorization": "Bearer x"},
    ):
        response = post(senders, "/webhooks/pipedrive", body, headers)
        assert response.status_code == 401, response.text
    assert queued(senders) == 0


def test_person_api_outage_answers_503_so_pipedrive_retries(
    make_service: Any, tmp_path: Path, pipedrive_sim: Any
) -> None:
    service = service_with_person(make_service, tmp_path, pipedrive_sim)
    requests.post(
        f"{pipedrive_sim.url}/_sim/faults", json={"path": "/persons", "status": 503, "count": 3}, timeout=5
    )
    body = fixture_bytes("pipedrive", "deal_won.json")
    response = post(service, "/webhooks/pipedrive", body, pipedrive_headers())
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert len(sim_calls(pipedrive_sim.url, "/persons")) == 3  # bounded retries
    assert queued(service) == 0
    assert post(service, "/webhooks/pipedrive", body, pipedrive_headers()).status_code == 202


def test_deletes_are_ignored(senders: Any) -> None:
    body = fixture_bytes("pipedrive", "deal_won.json").replace(b'"action": "change"', b'"action": "delete"')
    response = post(senders, "/webhooks/pipedrive", body, pipedrive_headers())
    assert response.status_code == 200 and response.json()["ignored"] == ["deal.delete"]
