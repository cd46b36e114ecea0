from __future__ import annotations

import time
from typing import Any

from tests.senders.conftest import command_of, fixture_bytes, post, queued, webflow_headers

BODY = fixture_bytes("webflow", "form_submission_docs_example.json")


def test_documented_form_submission_becomes_one_command(senders: Any) -> None:
    response = post(senders, "/webhooks/webflow", BODY, webflow_headers(BODY))
    assert response.status_code == 202, response.text
    command = command_of(senders, "webflow:6321ca84df3949bfc6752327")
    assert command["event_type"] == "form_submission"
    assert command["occurred_at"].startswith("2022-09-14T12:35:16")
    assert command["lead"]["email"] == "zaphod@heartofgold.ai"
    assert command["changes"] == {
        "email": "zaphod@heartofgold.ai",
        "first_name": "Zaphod",
        "last_name": "Beeblebrox",
        "phone": 15550000000,
    }
    assert command["metadata"]["form_name"] == "Contact Us"
    again = post(senders, "/webhooks/webflow", BODY, webflow_headers(BODY))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert queued(senders) == 1


def test_bad_signature_stale_timestamp_or_missing_header_is_401(senders: Any) -> None:
    stale = webflow_headers(BODY, ts_ms=int((time.time() - 6 * 60) * 1000))
    wrong = webflow_headers(BODY, secret="wrong")
    missing = webflow_headers(BODY)
    del missing["x-webflow-timestamp"]
    for headers in (stale, wrong, missing):
        response = post(senders, "/webhooks/webflow", BODY, headers)
        assert response.status_code == 401, response.text
    assert queued(senders) == 0


def test_other_trigger_types_are_ignored(senders: Any) -> None:
    body = BODY.replace(b'"triggerType": "form_submission"', b'"triggerType": "site_publish"')
    response = post(senders, "/webhooks/webflow", body, webflow_headers(body))
    assert response.status_code == 200 and response.json()["status"] == "ignored"


def test_field_names_are_matched_normalised_and_the_answer_says_which(senders: Any) -> None:
    body = fixture_bytes("webflow", "form_submission_email_2.json")
    response = post(senders, "/webhooks/webflow", body, webflow_headers(body))
    assert response.status_code == 202, response.text
    assert response.json()["matched_fields"] == {"email": "Email 2"}
    command = command_of(senders, "webflow:6321ca84df3949bfc6752328")
    assert command["lead"]["email"] == "arthur@earth.example"
    assert command["changes"]["email"] == "arthur@earth.example"


def test_site_made_labels_and_an_email_found_by_its_shape(senders: Any) -> None:
    body = fixture_bytes("webflow", "form_submission_site_made_labels.json")
    response = post(senders, "/webhooks/webflow", body, webflow_headers(body))
    assert response.status_code == 202, response.text
    assert response.json()["matched_fields"] == {
        "first_name": "FIRST-NAME",
        "last_name": "last_name",
        "phone": "PHONE NUMBER 1",
        "email": "Your contact",
    }
    command = command_of(senders, "webflow:6321ca84df3949bfc6752329")
    assert command["lead"] == {"id": None, "email": "ford@betelgeuse.example", "phone": "+15550000001"}
    assert command["changes"]["first_name"] == "Ford" and command["changes"]["last_name"] == "Prefect"
    # The documented example's labels match exactly: nothing inferred, nothing said.
    exact = post(senders, "/webhooks/webflow", BODY, webflow_headers(BODY))
    assert exact.status_code == 202 and "matched_fields" not in exact.json()
