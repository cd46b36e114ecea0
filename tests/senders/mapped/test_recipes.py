"""Each documented recipe (config/examples/mapped.yaml): the vendor's example payload, posted as
the vendor posts it, verified, mapped by configuration alone and delivered to the LeadSquared
simulator over real HTTP."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from handlers.simulation import ServedApp
from tests.senders.mapped.conftest import (
    API_KEY,
    PASSWORD,
    URL_TOKEN,
    fixture_bytes,
    lsq_updates,
    recipe_config,
    seed_lead,
)
from tests.support import wait_until

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
KEY = {"X-Api-Key": API_KEY}


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """The fields as Jotform posts them: multipart/form-data, one text part each."""
    prepared = requests.Request("POST", "http://x", files={k: (None, v) for k, v in fields.items()}).prepare()
    return prepared.body, prepared.headers["Content-Type"]


def jotform_body() -> tuple[bytes, str]:
    return multipart(json.loads(fixture_bytes("jotform_submission_fields.json")))


BASIC = {"Authorization": "Basic " + base64.b64encode(f"make:{PASSWORD}".encode()).decode()}

# recipe, path suffix, body, content type, auth headers, email, the LeadSquared attributes expected
CASES: list[tuple[str, str, Any, str, dict[str, str], str, dict[str, str]]] = [
    ("zapier", "", lambda: fixture_bytes("zapier_post_json.json"), JSON, KEY, "bryan.helmig@example.com",
     {"FirstName": "Bryan", "LastName": "Helmig", "EmailAddress": "bryan.helmig@example.com"}),
    ("zapier", "", lambda: fixture_bytes("zapier_post_form.txt"), FORM, KEY, "bryan.helmig@example.com",
     {"FirstName": "Bryan", "LastName": "Helmig"}),
    ("make", "", lambda: fixture_bytes("make_http_request.json"), JSON, BASIC, "ada.lovelace@example.com",
     {"FirstName": "Ada", "LastName": "Lovelace", "Company": "Analytical Engines Ltd",
      "ProspectStage": "Opportunity", "mx_Deal_Value": "12500", "Phone": "+44 20 7946 0958"}),
    ("jotform", f"/{URL_TOKEN}", jotform_body, "", {}, "john.smith@example.com",
     {"FirstName": "John", "LastName": "Smith", "Company": "Smith & Sons", "Notes": "Please call me back.",
      "Phone": "(555) 123-4567"}),
    ("gravity_forms", "", lambda: fixture_bytes("gravity_forms_all_fields.json"), JSON, KEY,
     "jane.doe@example.com", {"FirstName": "Jane", "LastName": "Doe", "Company": "Acme Corp"}),
    ("wpforms", "", lambda: fixture_bytes("wpforms_webhook_json.json"), JSON, KEY, "grace.hopper@example.com",
     {"FirstName": "Grace", "LastName": "Hopper", "Company": "COBOL Inc"}),
    ("elementor", f"/{URL_TOKEN}", lambda: fixture_bytes("elementor_webhook_advanced.txt"), FORM, {},
     "alan.turing@example.com", {"FirstName": "Alan", "LastName": "Turing", "Notes": "Hello"}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[3] or 'multipart'}" for c in CASES])
def test_recipe_lands_in_leadsquared(
    case: Any, make_service: Any, lsq_sim: ServedApp, tmp_path: Path
) -> None:
    recipe, suffix, make_body, content_type, auth, email, expected = case
    service = make_service(recipe_config(tmp_path, lsq_sim.url))
    seed_lead(lsq_sim.url, email)
    built = make_body()
    body, content_type = built if isinstance(built, tuple) else (built, content_type)
    url = f"{service.url}/webhooks/{recipe}{suffix}"
    response = requests.post(url, data=body, headers={"Content-Type": content_type, **auth}, timeout=10)
    assert response.status_code == 202, response.text
    service.drain()
    updates = wait_until(lambda: lsq_updates(lsq_sim.url), timeout=10, what="a Lead.Update")
    assert len(updates) == 1
    for attribute, value in expected.items():
        assert updates[0].get(attribute) == value, (attribute, updates[0])
    # The same post again is a duplicate (an event id, or the hash of the identical body).
    again = requests.post(url, data=body, headers={"Content-Type": content_type, **auth}, timeout=10)
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text


@pytest.mark.parametrize("recipe", ["zapier", "make", "jotform", "gravity_forms", "wpforms", "elementor"])
def test_recipe_refuses_a_request_without_its_secret(recipe: str, make_service: Any, tmp_path: Path) -> None:
    service = make_service(recipe_config(tmp_path, "http://127.0.0.1:9"))
    wrong = {"X-Api-Key": "not-the-key", "Authorization": "Basic " + base64.b64encode(b"make:nope").decode()}
    for path in (f"/webhooks/{recipe}", f"/webhooks/{recipe}/not-the-token"):
        response = requests.post(
            service.url + path, data=fixture_bytes("zapier_post_json.json"),
            headers={"Content-Type": JSON, **wrong}, timeout=10,
        )  # fmt: skip
        assert response.status_code == 401, response.text
    assert service.runtime.store.queue_stats()["depth"] == 0


def test_recipe_ids_and_times_come_from_the_payload(make_service: Any, tmp_path: Path) -> None:
    service = make_service(recipe_config(tmp_path, "http://127.0.0.1:9"))
    body, ctype = jotform_body()
    response = requests.post(f"{service.url}/webhooks/jotform/{URL_TOKEN}", data=body,
                             headers={"Content-Type": ctype}, timeout=10)  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json()["command_id"] == "jotform:5873948575123456789"
    gravity = requests.post(f"{service.url}/webhooks/gravity_forms", data=fixture_bytes("gravity_forms_all_fields.json"),
                            headers={"Content-Type": JSON, **KEY}, timeout=10)  # fmt: skip
    assert gravity.json()["command_id"] == "gravity_forms:1:42"
    from tests.senders.conftest import command_of

    assert command_of(service, "gravity_forms:1:42")["occurred_at"].startswith("2026-11-20T09:30:12")
    assert command_of(service, "jotform:5873948575123456789")["metadata"]["form_title"] == "Contact Us"
