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
    command = command_of(service, f"google_ads:{LEAD_ID}")
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
