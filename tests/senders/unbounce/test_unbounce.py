from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from service.config import ConfigError
from tests.senders.conftest import UNBOUNCE_TOKEN, command_of, fixture_json, post, queued, senders_config
from tests.support import load

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BODY = urlencode(fixture_json("unbounce", "form_post_docs_example.json")).encode()


def test_documented_form_post_becomes_one_command(senders: Any) -> None:
    response = post(senders, f"/webhooks/unbounce/{UNBOUNCE_TOKEN}", BODY, FORM)
    assert response.status_code == 202, response.text
    command_id = response.json()["command_id"]
    assert command_id.startswith("unbounce:sha256:")  # no event id: a hash of the raw body
    command = command_of(senders, command_id)
    assert command["lead"] == {"id": None, "email": "stephen@example.com", "phone": "+16045550165"}
    assert command["changes"] == {
        "email": "stephen@example.com",
        "full_name": "Stephen Gilbert",
        "phone": "+1 (604) 555-0165",
    }
    assert command["metadata"]["page_name"] == "Changed My Mind"
    assert command["metadata"]["variant"] == "a"
    again = post(senders, f"/webhooks/unbounce/{UNBOUNCE_TOKEN}", BODY, FORM)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert queued(senders) == 1


def test_wrong_or_missing_url_token_is_401(senders: Any) -> None:
    for path in (
        "/webhooks/unbounce",
        "/webhooks/unbounce/not-the-token",
        f"/webhooks/unbounce/{UNBOUNCE_TOKEN}x",
    ):
        response = post(senders, path, BODY, FORM)
        assert response.status_code == 401, response.text
    assert queued(senders) == 0


def test_json_body_is_415(senders: Any) -> None:
    response = post(
        senders, f"/webhooks/unbounce/{UNBOUNCE_TOKEN}", b"{}", {"Content-Type": "application/json"}
    )
    assert response.status_code == 415


def test_renamed_fields_are_matched_by_normalised_name_and_shape(senders: Any) -> None:
    # The documented post, with the page builder's field names changed the way people do.
    form = fixture_json("unbounce", "form_post_docs_example.json")
    form["data.json"] = (
        form["data.json"].replace('"email"', '"Work_Contact"').replace('"phone_number"', '"Phone-Number"')
    )
    body = urlencode(form).encode()
    response = post(senders, f"/webhooks/unbounce/{UNBOUNCE_TOKEN}", body, FORM)
    assert response.status_code == 202, response.text
    assert response.json()["matched_fields"] == {"phone": "Phone-Number", "email": "Work_Contact"}
    command = command_of(senders, response.json()["command_id"])
    assert command["lead"] == {"id": None, "email": "stephen@example.com", "phone": "+16045550165"}


def test_unbounce_cannot_be_bound_to_a_kafka_topic(tmp_path: Path) -> None:
    """Its secret is the URL token: a Kafka record has none, so every record would fail."""
    raw = senders_config(tmp_path)
    raw["kafka"] = {"sources": [{"topic": "forms", "format": "unbounce"}]}
    with pytest.raises(ConfigError, match="'unbounce' senders are HTTP only"):
        load(raw)
