from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.senders.conftest import command_of, fixture_bytes, post, queued, senders_config, typeform_headers

BODY = fixture_bytes("typeform", "form_response_docs_example.json")
MAPPING = {
    "field_map": {
        "readable_ref_short_text": "first_name",
        "readable_ref_multiple_choice": "city",
        "calculated.score": "score",
        "readable_ref_not_in_this_form": "company",
    }
}


def test_documented_form_response_becomes_one_command(make_service: Any, tmp_path: Path) -> None:
    service = make_service(senders_config(tmp_path, typeform=MAPPING))
    response = post(service, "/webhooks/typeform", BODY, typeform_headers(BODY))
    assert response.status_code == 202, response.text
    assert response.json()["command_id"] == "typeform:LtWXD3crgy"
    command = command_of(service, "typeform:LtWXD3crgy")
    assert command["event_type"] == "form_response"
    assert command["occurred_at"].startswith("2018-01-18T18:17:02")
    assert command["lead"] == {"id": None, "email": "laura@example.com", "phone": "+14155550199"}
    assert command["changes"] == {
        "email": "laura@example.com",
        "phone": "+14155550199",
        "first_name": "Laura",
        "city": "London",
        "score": 9,
    }
    assert command["metadata"]["form_id"] == "lT4Z3j"
    # The configured ref that this form does not have was skipped and counted, not an error.
    again = post(service, "/webhooks/typeform", BODY, typeform_headers(BODY))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert queued(service) == 1


def test_signature_problems_are_401_and_queue_nothing(senders: Any) -> None:
    wrong = typeform_headers(BODY, secret="not-the-secret")
    missing = {"Content-Type": "application/json"}
    tampered = typeform_headers(BODY)
    for headers, body in ((wrong, BODY), (missing, BODY), (tampered, BODY.replace(b"Laura", b"Mallory"))):
        response = post(senders, "/webhooks/typeform", body, headers)
        assert response.status_code == 401, response.text
    assert queued(senders) == 0


def test_partial_responses_are_acknowledged_and_ignored(senders: Any) -> None:
    body = BODY.replace(b'"event_type": "form_response"', b'"event_type": "form_response_partial"')
    response = post(senders, "/webhooks/typeform", body, typeform_headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "ignored": ["form_response_partial"]}
    assert queued(senders) == 0


def test_skipped_mapping_is_counted(make_service: Any, tmp_path: Path) -> None:
    from service import metrics

    service = make_service(senders_config(tmp_path, typeform=MAPPING))
    before = metrics.MAPPINGS_SKIPPED.labels(source="typeform")._value.get()
    assert post(service, "/webhooks/typeform", BODY, typeform_headers(BODY)).status_code == 202
    assert metrics.MAPPINGS_SKIPPED.labels(source="typeform")._value.get() == before + 1


def test_refs_are_resolved_through_the_form_definition(make_service: Any, tmp_path: Path) -> None:
    # Typeform's documented payload: answers carry `field.id`, the refs live in the definition.
    body = fixture_bytes("typeform", "form_response_answers_by_id.json")
    service = make_service(
        senders_config(tmp_path, typeform={"field_map": {**MAPPING["field_map"], "KoJxDM3c6x8h": "note"}})
    )
    response = post(service, "/webhooks/typeform", body, typeform_headers(body))
    assert response.status_code == 202, response.text
    command = command_of(service, "typeform:LtWXD3crgy")
    assert command["changes"] == {
        "email": "laura@example.com",
        "phone": "+14155550199",
        "first_name": "Laura",  # readable_ref_short_text, found through definition.fields
        "city": "London",  # readable_ref_multiple_choice
        "score": 9,
        "note": "2005-10-15",  # a question id works as a key too
    }
    # The response token is data, not a credential: stored as sent.
    assert command["metadata"]["response_token"] == "a3a12ec67a1365927098a606107fac15"
