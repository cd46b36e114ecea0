"""One conversion step per provider, driven by the field types its contract declares: what
the sender sent as a number reaches a string field as a string; what cannot be converted is
refused at ingest (400 naming the field) or dead-lettered at `mapping`; `status` is checked
against the canonical vocabulary at ingest and `status: null` is never sent."""

from __future__ import annotations

import pytest
import requests

from handlers.base import Outcome
from tests.providers.helpers import build_handler, provider_entry, routed_config, seed, update
from tests.support import admin_get, post_generic, sim_calls


@pytest.fixture
def polly_lead(pollybot_sim) -> str:
    [lead_id] = seed(pollybot_sim.url, [{"id": "lead_ann", "name": "Ann Lee", "email": "ann@example.com"}])
    return lead_id


def polly_service(tmp_path, make_service, sim_url: str, **extra):
    return make_service(routed_config(tmp_path, {"pollybot": provider_entry("pollybot", sim_url, **extra)}))


def test_numbers_reach_pollybot_string_fields_as_strings(
    tmp_path, make_service, pollybot_sim, polly_lead
) -> None:
    service = polly_service(tmp_path, make_service, pollybot_sim.url)
    event = {"lead": {"email": "ann@example.com"}, "changes": {"lead_source": 42, "phone": 15551234567}}
    assert post_generic(service.url, event, "numbers").status_code == 202
    service.drain()
    [delivery] = admin_get(service.url, "/v1/events/generic:numbers").json()["deliveries"]
    assert delivery["status"] == "delivered", delivery
    [call] = sim_calls(pollybot_sim.url, "/api/v1/leads/lead_ann")
    assert call["json"] == {"source": "42", "phone": "15551234567"}


def test_a_status_outside_the_vocabulary_is_400_listing_the_allowed_values(
    tmp_path, make_service, pollybot_sim
) -> None:
    service = polly_service(tmp_path, make_service, pollybot_sim.url)
    response = post_generic(
        service.url, {"lead": {"email": "ann@example.com"}, "changes": {"status": "hot"}}, "s"
    )
    assert response.status_code == 400, response.text
    [message] = response.json()["details"]["changes"]
    assert "'hot'" in message and "new, contacted, qualified, unqualified, follow_up, won, lost" in message
    assert admin_get(service.url, "/v1/events/generic:s").status_code == 404


def test_null_status_is_never_sent_to_pollybot(tmp_path, make_service, pollybot_sim, polly_lead) -> None:
    service = polly_service(tmp_path, make_service, pollybot_sim.url)
    event = {"lead": {"email": "ann@example.com"}, "changes": {"status": None, "company": "Acme"}}
    assert post_generic(service.url, event, "null-status").status_code == 202
    service.drain()
    [delivery] = admin_get(service.url, "/v1/events/generic:null-status").json()["deliveries"]
    assert delivery["status"] == "delivered", delivery
    [call] = sim_calls(pollybot_sim.url, "/api/v1/leads/lead_ann")
    assert call["json"] == {"metadata": {"company": "Acme"}}


def test_a_value_that_cannot_take_its_declared_type_is_refused_at_ingest(
    tmp_path, make_service, octanist_sim
) -> None:
    # The operator maps the canonical `score` onto Octanist's `value`, a number.
    entry = provider_entry("octanist", octanist_sim.url, field_map={"score": "value"})
    service = make_service(routed_config(tmp_path, {"octanist": entry}))
    event = {"lead": {"email": "ann@example.com"}, "changes": {"score": "high"}}
    response = post_generic(service.url, event, "bad-score")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert "'high' is not a number" in body["details"]["changes.score"][0]
    assert admin_get(service.url, "/v1/events/generic:bad-score").status_code == 404
    ok = post_generic(service.url, {"lead": {"email": "ann@example.com"}, "changes": {"score": "12"}}, "ok")
    assert ok.status_code == 202, ok.text


def test_without_a_route_the_dispatcher_dead_letters_it_at_mapping(tmp_path, octanist_sim) -> None:
    handler = build_handler(
        tmp_path, "octanist", provider_entry("octanist", octanist_sim.url, field_map={"score": "value"})
    )
    result = handler.deliver(update(lead_email="ann@example.com", score="high"))
    assert result.outcome is Outcome.PERMANENT and result.stage == "mapping"
    assert "score" in result.reason and "not a number" in result.reason
    assert sim_calls(octanist_sim.url, "/api/leads") == []


def test_each_provider_converts_with_its_own_declarations(
    tmp_path, pollybot_sim, octanist_sim, lsq_sim
) -> None:
    changes = {"value": "1,250.50", "note": 7, "lead_source": 42, "status": "lost", "loss_reason": 3}
    octanist = build_handler(tmp_path, "octanist", provider_entry("octanist", octanist_sim.url))
    assert octanist.map_fields(changes) == {"value": 1250.5, "note": "7", "status": "lost", "lossReason": "3"}
    pollybot = build_handler(tmp_path, "pollybot", provider_entry("pollybot", pollybot_sim.url))
    assert pollybot.map_fields({"lead_source": 42, "value": 5000, "status": None}) == {
        "source": "42",
        "metadata.value": 5000,  # metadata is free JSON: kept as the sender had it
    }
    lsq = build_handler(tmp_path, "leadsquared", provider_entry("leadsquared", lsq_sim.url))
    assert lsq.map_fields({"value": 5000.0, "score": 7, "city": None}) == {
        "mx_Deal_Value": "5000",
        "Score": "7",
        "mx_City": None,
    }


def test_a_sender_mapping_free_text_onto_status_is_400(make_service, tmp_path) -> None:
    """Unbounce's example with its interest field mapped onto `status`: "Pricing, Demo" is no
    canonical status, so the post is refused naming the field, not dead-lettered later."""
    from urllib.parse import urlencode

    from tests.senders.conftest import UNBOUNCE_TOKEN, fixture_json, senders_config

    raw = senders_config(tmp_path, unbounce={"field_map": {"what_are_you_interested_in": "status"}})
    service = make_service(raw)
    body = urlencode(fixture_json("unbounce", "form_post_docs_example.json")).encode()
    response = requests.post(
        f"{service.url}/webhooks/unbounce/{UNBOUNCE_TOKEN}",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    [message] = response.json()["details"]["changes.status"]
    assert "'Pricing, Demo' is not a canonical status" in message and "follow_up, won, lost" in message
