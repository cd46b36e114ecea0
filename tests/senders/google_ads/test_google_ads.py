from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.senders.conftest import command_of, fixture_bytes, post, queued, senders_config

BODY = fixture_bytes("google_ads", "lead_docs_example.json")
LEAD_ID = json.loads(BODY)["lead_id"]
JSON = {"Content-Type": "application/json"}


def test_documented_test_lead_is_accepted_when_test_leads_are_on(make_service: Any, tmp_path: Path) -> None:
    service = make_service(senders_config(tmp_path, google_ads={"accept_test_leads": True}))
    response = post(service, "/webhooks/google_ads", BODY, JSON)
    assert response.status_code == 202, response.text
    assert response.json()["command_id"].startswith(f"google_ads:test:{LEAD_ID}:")
    command = command_of(service, response.json()["command_id"])
    assert command["lead"] == {"id": None, "email": "test@example.com", "phone": "+16505550123"}
    assert command["changes"] == {
        "full_name": "FirstName LastName",
        "email": "test@example.com",
        "phone": "+16505550123",
    }
    # int64 ids stay exact (2^53 + 1 would become ...992 through a float).
    assert command["metadata"]["form_id"] == "9007199254740993"
    assert command["metadata"]["is_test"] is True
    again = post(service, "/webhooks/google_ads", BODY, JSON)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert queued(service) == 1


def test_test_leads_are_ignored_by_default(senders: Any) -> None:
    response = post(senders, "/webhooks/google_ads", BODY, JSON)
    assert response.status_code == 200
    assert response.json()["ignored"] == ["lead_form:test_lead"]
    assert queued(senders) == 0


def test_wrong_or_missing_google_key_is_401(senders: Any) -> None:
    lead = json.loads(BODY)
    wrong = json.dumps({**lead, "google_key": "guess"}).encode()
    missing = json.dumps({k: v for k, v in lead.items() if k != "google_key"}).encode()
    for body in (wrong, missing):
        response = post(senders, "/webhooks/google_ads", body, JSON)
        assert response.status_code == 401, response.text
    assert queued(senders) == 0


def test_test_leads_do_not_block_each_other_but_real_leads_dedup_on_lead_id(
    make_service: Any, tmp_path: Path
) -> None:
    service = make_service(senders_config(tmp_path, google_ads={"accept_test_leads": True}))
    lead = json.loads(BODY)
    # "Send test data" from a second form: the same fixed test lead_id, another form and person.
    other_form = {**lead, "form_id": 9007199254740995, "user_column_data": [
        {"column_name": "User Email", "string_value": "tester@example.com", "column_id": "EMAIL"}]}  # fmt: skip
    first = post(service, "/webhooks/google_ads", BODY, JSON)
    second = post(service, "/webhooks/google_ads", json.dumps(other_form).encode(), JSON)
    assert (first.status_code, second.status_code) == (202, 202), second.text
    assert first.json()["command_id"] != second.json()["command_id"]
    # Google re-delivering the same test lead is still a duplicate.
    assert post(service, "/webhooks/google_ads", BODY, JSON).json()["status"] == "duplicate"
    # Real leads: lead_id is the key, whatever else differs.
    real = {**lead, "is_test": False, "lead_id": "real-lead-1"}
    assert post(service, "/webhooks/google_ads", json.dumps(real).encode(), JSON).status_code == 202
    resent = json.dumps({**real, "gcl_id": "another-click"}).encode()
    answer = post(service, "/webhooks/google_ads", resent, JSON)
    assert answer.status_code == 200 and answer.json() == {
        "status": "duplicate",
        "command_id": "google_ads:real-lead-1",
    }
    assert queued(service) == 3
