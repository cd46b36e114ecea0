"""Every field arrives: each sender's documented example payload, end to end through the web
app and the dispatcher, reaches every provider simulator (LeadSquared, PollyBot, Octanist)
with the person's name (where the provider has a name field), email and phone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from handlers.octanist.simulator import create_octanist_simulator
from handlers.pollybot.simulator import create_pollybot_simulator
from handlers.simulation import ServedApp
from tests.senders.conftest import (
    UNBOUNCE_TOKEN,
    calendly_headers,
    fixture_bytes,
    fixture_json,
    hubspot_legacy_headers,
    meta_headers,
    pipedrive_headers,
    senders_config,
    typeform_headers,
    webflow_headers,
)
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY, admin_get, signed_headers, sim_calls

POLLYBOT_KEY = "sk-workspace_fidelity_0123456789"
OCTANIST_KEY = "octanist-fidelity-key-1a2b"


@dataclass
class Case:
    """A sender's documented example, how to send it, and the person it describes."""

    path: str
    body: bytes
    headers: Callable[[str, bytes], dict[str, str]]  # (service url, body) -> headers
    email: str
    phone: str  # as the sender wrote it (changes.phone)
    first_name: str
    last_name: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[dict[str, str]], None] = lambda sims: None
    look_ups: tuple[str, ...] = ()  # sender-API simulators the adapter needs

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


def _seed(url: str, items: list[dict[str, Any]]) -> None:
    requests.post(url, json=items, timeout=5).raise_for_status()


CASES: dict[str, Case] = {
    "generic": Case(
        "/webhooks/generic",
        fixture_bytes("generic", "lead_event_readme_example.json"),
        lambda url, body: signed_headers(body, "msg_fidelity"),
        "jane@example.com",
        "+14155550100",
        "Jane",
        "Doe",
    ),
    "hubspot": Case(
        "/webhooks/hubspot",
        fixture_bytes("hubspot", "workflow_contact.json"),
        lambda url, body: hubspot_legacy_headers(url + "/webhooks/hubspot", body, "v2"),
        "codey.huang@hubspot.com",
        "555-122-2323",
        "Codey",
        "Huang",
    ),
    "typeform": Case(
        "/webhooks/typeform",
        fixture_bytes("typeform", "form_response_docs_example.json"),
        lambda url, body: typeform_headers(body),
        "laura@example.com",
        "+14155550199",
        "Laura",
        None,
        # The form asks for the name in one short-text question.
        settings={"field_map": {"readable_ref_short_text": "full_name"}},
    ),
    "meta": Case(
        "/webhooks/meta",
        fixture_bytes("meta", "leadgen_notification_docs_example.json"),
        lambda url, body: meta_headers(body),
        "joe@example.com",
        "+14155550123",
        "Joe",
        "Example",
        prepare=lambda sims: _seed(
            f"{sims['graph']}/_sim/leads", [fixture_json("meta", "graph_lead_docs_example.json")]
        ),
        look_ups=("graph",),
    ),
    "pipedrive": Case(
        "/webhooks/pipedrive",
        fixture_bytes("pipedrive", "person_change.json"),
        lambda url, body: pipedrive_headers(),
        "jane.doe@example.com",
        "+442071838750",
        "Jane",
        "Doe",
    ),
    "calendly": Case(
        "/webhooks/calendly",
        fixture_bytes("calendly", "invitee_created_docs_example.json"),
        lambda url, body: calendly_headers(body),
        "test@example.com",
        "+1 404-555-1234",
        "John",
        "Doe",
    ),
    "webflow": Case(
        "/webhooks/webflow",
        fixture_bytes("webflow", "form_submission_docs_example.json"),
        lambda url, body: webflow_headers(body),
        "zaphod@heartofgold.ai",
        "15550000000",  # a JSON number in Webflow's example: a string for every provider
        "Zaphod",
        "Beeblebrox",
    ),
    "unbounce": Case(
        f"/webhooks/unbounce/{UNBOUNCE_TOKEN}",
        urlencode(fixture_json("unbounce", "form_post_docs_example.json")).encode(),
        lambda url, body: {"Content-Type": "application/x-www-form-urlencoded"},
        "stephen@example.com",
        "+1 (604) 555-0165",
        "Stephen",
        "Gilbert",
    ),
    "google_ads": Case(
        "/webhooks/google_ads",
        fixture_bytes("google_ads", "lead_docs_example.json"),
        lambda url, body: {"Content-Type": "application/json"},
        "test@example.com",
        "+16505550123",
        "FirstName",
        "LastName",
        settings={"accept_test_leads": True},
    ),
}


@pytest.fixture
def providers(lsq_sim: ServedApp) -> Iterator[dict[str, ServedApp]]:
    polly = ServedApp(create_pollybot_simulator(POLLYBOT_KEY)).start()
    octanist = ServedApp(create_octanist_simulator(OCTANIST_KEY)).start()
    yield {"leadsquared": lsq_sim, "pollybot": polly, "octanist": octanist}
    polly.stop()
    octanist.stop()


def fidelity_config(
    tmp_path: Path, sender: str, case: Case, sims: dict[str, str], urls: dict[str, str]
) -> Any:
    raw = senders_config(tmp_path, sims, **{sender: case.settings} if case.settings else {})
    raw["providers"] = {
        "leadsquared": {
            "type": "leadsquared",
            "base_url": urls["leadsquared"],
            "access_key": LSQ_ACCESS_KEY,
            "secret_key": LSQ_SECRET_KEY,
        },
        "pollybot": {"type": "pollybot", "base_url": urls["pollybot"], "api_key": POLLYBOT_KEY},
        "octanist": {"type": "octanist", "base_url": urls["octanist"], "api_key": OCTANIST_KEY},
    }
    raw["routes"] = [{"source": "*", "providers": ["leadsquared", "pollybot", "octanist"]}]
    return raw


@pytest.mark.parametrize("sender", sorted(CASES))
def test_documented_example_reaches_every_provider_with_name_email_and_phone(
    sender: str,
    make_service: Any,
    tmp_path: Path,
    providers: dict[str, ServedApp],
    hubspot_sim: ServedApp,
    graph_sim: ServedApp,
) -> None:
    case = CASES[sender]
    sims = {"hubspot": hubspot_sim.url, "graph": graph_sim.url}
    case.prepare(sims)
    urls = {name: served.url for name, served in providers.items()}
    _seed(f"{urls['leadsquared']}/_sim/leads", [{"EmailAddress": case.email, "FirstName": "Old"}])
    _seed(f"{urls['pollybot']}/_sim/leads", [{"id": "lead_fid", "name": "Old Name", "email": case.email}])
    _seed(f"{urls['octanist']}/_sim/leads", [{"id": "oct_fid", "email": case.email}])
    service = make_service(fidelity_config(tmp_path, sender, case, sims, urls))

    response = requests.post(
        service.url + case.path, data=case.body, headers=case.headers(service.url, case.body), timeout=15
    )
    assert response.status_code == 202, response.text
    command_id = response.json()["command_id"]
    service.drain()
    event = admin_get(service.url, f"/v1/events/{requests.utils.quote(command_id, safe='')}").json()
    assert {d["provider"]: d["status"] for d in event["deliveries"]} == {
        "leadsquared": "delivered",
        "octanist": "delivered",
        "pollybot": "delivered",
    }, event["deliveries"]

    [lsq] = sim_calls(urls["leadsquared"], "Lead.Update")
    sent = {item["Attribute"]: item["Value"] for item in lsq["json"]}
    assert sent["FirstName"] == case.first_name
    assert sent.get("LastName") == case.last_name
    assert sent["EmailAddress"] == case.email
    assert sent["Phone"] == case.phone
    assert all(isinstance(value, str) for value in sent.values())

    [polly] = sim_calls(urls["pollybot"], "/api/v1/leads/lead_fid")
    assert polly["status"] == 200, polly
    assert polly["json"]["name"] == case.full_name
    assert polly["json"]["email"] == case.email
    assert polly["json"]["phone"] == case.phone

    # Octanist's update has no name field; the lead is named by its email, and a call is made
    # only when the event changes something Octanist keeps (status, value, note).
    for call in sim_calls(urls["octanist"], "/api/leads"):
        assert call["status"] == 200, call
        assert call["json"]["email"] == case.email
        assert not {"name", "first_name", "last_name", "phone"} & set(call["json"])
