from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.senders.conftest import (
    calendly_headers,
    command_of,
    fixture_bytes,
    post,
    queued,
    senders_config,
)

CREATED = fixture_bytes("calendly", "invitee_created_docs_example.json")
CANCELED = fixture_bytes("calendly", "invitee_canceled.json")
INVITEE = "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/AAAAAAAAAAAAAAAA"
CONFIG = {"field_map": {"question:Company": "company"}, "status_map": {"invitee.created": "follow_up"}}


def test_created_and_canceled_are_two_commands(make_service: Any, tmp_path: Path) -> None:
    service = make_service(senders_config(tmp_path, calendly=CONFIG))
    first = post(service, "/webhooks/calendly", CREATED, calendly_headers(CREATED))
    assert first.status_code == 202, first.text
    command = command_of(service, f"calendly:invitee.created:{INVITEE}")
    assert command["lead"] == {"id": None, "email": "test@example.com", "phone": "+14045551234"}
    assert command["changes"] == {
        "email": "test@example.com",
        "first_name": "John",
        "last_name": "Doe",
        "full_name": "John Doe",
        "phone": "+1 404-555-1234",
        "company": "Acme Inc",
        "status": "follow_up",
    }
    assert command["metadata"]["utm_source"] == "google"
    assert command["occurred_at"].startswith("2020-11-23T17:51:19")
    canceled = post(service, "/webhooks/calendly", CANCELED, calendly_headers(CANCELED))
    assert canceled.status_code == 202
    assert command_of(service, f"calendly:invitee.canceled:{INVITEE}")["event_type"] == "invitee.canceled"
    redelivered = post(service, "/webhooks/calendly", CREATED, calendly_headers(CREATED))
    assert redelivered.status_code == 200 and redelivered.json()["status"] == "duplicate"
    assert queued(service) == 2


def test_signature_older_than_three_minutes_wrong_or_missing_is_401(senders: Any) -> None:
    stale = calendly_headers(CREATED, ts=int(time.time()) - 181)
    wrong = calendly_headers(CREATED, key="not-the-key")
    no_v1 = {"Content-Type": "application/json", "Calendly-Webhook-Signature": f"t={int(time.time())}"}
    missing = {"Content-Type": "application/json"}
    for headers in (stale, wrong, no_v1, missing):
        response = post(senders, "/webhooks/calendly", CREATED, headers)
        assert response.status_code == 401, response.text
    assert queued(senders) == 0
    fresh = calendly_headers(CREATED, ts=int(time.time()) - 150)  # inside the window
    assert post(senders, "/webhooks/calendly", CREATED, fresh).status_code == 202


def test_other_calendly_events_are_ignored(senders: Any) -> None:
    body = (
        b'{"event": "routing_form_submission.created", "created_at": "2020-11-23T17:51:19Z", "payload": {}}'
    )
    response = post(senders, "/webhooks/calendly", body, calendly_headers(body))
    assert response.status_code == 200
    assert response.json()["ignored"] == ["routing_form_submission.created"]
