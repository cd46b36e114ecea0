"""Correctly signed but mangled payloads (every documented fixture with a value replaced by
random JSON, or a key removed) never produce a server error, and whatever is accepted can
be read back by the dispatcher: the stored command passes its own wire schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.command import LeadUpdateCommand
from tests.senders.conftest import (
    UNBOUNCE_TOKEN,
    calendly_headers,
    fixture_json,
    hubspot_v3_headers,
    meta_headers,
    pipedrive_headers,
    senders_config,
    typeform_headers,
    webflow_headers,
)
from tests.senders.hubspot.test_hubspot import CONTACTS, DEALS

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
ALLOWED = {200, 202, 400, 401, 415}


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += paths(child, (*prefix, index))
    return out


def mutate(document: Any, data: Any) -> Any:
    document = json.loads(json.dumps(document))
    path = data.draw(st.sampled_from(paths(document)))
    if not path:
        return data.draw(JSON_VALUES)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES)
    return document


def senders_under_test(url: str) -> dict[str, tuple[str, str, Any]]:
    """source -> (path, fixture, signer(body) -> headers)."""
    return {
        "hubspot": ("/webhooks/hubspot", "hubspot/crm_batch_docs_example.json",
                    lambda b: hubspot_v3_headers(f"{url}/webhooks/hubspot", b)),
        "hubspot-deals": ("/webhooks/hubspot", "hubspot/deal_stage_change.json",
                          lambda b: hubspot_v3_headers(f"{url}/webhooks/hubspot", b)),
        "typeform": ("/webhooks/typeform", "typeform/form_response_docs_example.json", typeform_headers),
        "meta": ("/webhooks/meta", "meta/leadgen_notification_docs_example.json", meta_headers),
        "pipedrive": ("/webhooks/pipedrive", "pipedrive/deal_won.json", lambda b: pipedrive_headers()),
        "calendly": ("/webhooks/calendly", "calendly/invitee_created_docs_example.json", calendly_headers),
        "webflow": ("/webhooks/webflow", "webflow/form_submission_docs_example.json", webflow_headers),
        "google_ads": ("/webhooks/google_ads", "google_ads/lead_docs_example.json",
                       lambda b: {"Content-Type": "application/json"}),
    }  # fmt: skip


@pytest.mark.slow
def test_signed_mangled_payloads_never_break_the_service(
    make_service: Any, tmp_path: Path, hubspot_sim: Any, graph_sim: Any, pipedrive_sim: Any
) -> None:
    requests.post(f"{hubspot_sim.url}/_sim/contacts", json=CONTACTS, timeout=5).raise_for_status()
    requests.post(f"{hubspot_sim.url}/_sim/deals", json=DEALS, timeout=5).raise_for_status()
    lead = fixture_json("meta", "graph_lead_docs_example.json")
    requests.post(f"{graph_sim.url}/_sim/leads", json=[lead], timeout=5).raise_for_status()
    person = {"id": 1, "name": "Jane", "emails": [{"value": "jane@example.com", "primary": True}]}
    requests.post(f"{pipedrive_sim.url}/_sim/leads", json=[person], timeout=5).raise_for_status()
    sims = {"hubspot": hubspot_sim.url, "graph": graph_sim.url, "pipedrive": pipedrive_sim.url}
    service = make_service(senders_config(tmp_path, sims, google_ads={"accept_test_leads": True}))
    accepted: list[str] = []

    def check(response: requests.Response) -> None:
        assert response.status_code in ALLOWED, (response.status_code, response.text)
        if response.status_code == 202:
            accepted.extend([response.json().get("command_id")] + response.json().get("command_ids", []))

    def fuzz(path: str, original: Any, signer: Any) -> Any:
        @given(data=st.data())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(data: Any) -> None:
            body = json.dumps(mutate(original, data)).encode()
            check(requests.post(service.url + path, data=body, headers=signer(body), timeout=15))

        return run

    for path, fixture, signer in senders_under_test(service.url).values():
        sender, file = fixture.split("/")
        fuzz(path, fixture_json(sender, file), signer)()

    form = fixture_json("unbounce", "form_post_docs_example.json")

    @given(data=st.data())
    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run_unbounce(data: Any) -> None:
        fields = mutate(json.loads(form["data.json"]), data)
        body = urlencode({**form, "data.json": json.dumps(fields)}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        check(
            requests.post(
                f"{service.url}/webhooks/unbounce/{UNBOUNCE_TOKEN}", data=body, headers=headers, timeout=15
            )
        )

    run_unbounce()

    # Everything accepted is readable by the dispatcher (the stored body passes its schema).
    service.runtime.store.drain_inbox()  # accepted commands join the queue tables here
    with service.runtime.store.read() as db:
        rows = db.execute("SELECT body FROM commands").fetchall()
    assert len(rows) >= 8
    for row in rows:
        LeadUpdateCommand.from_json(row["body"])
