"""PollyBot (seed 003): the exact request, merge semantics, lead lookup, and where each
documented answer ends."""

from __future__ import annotations

import time

import pytest
import requests

from handlers.base import Outcome
from handlers.pollybot.simulator import create_pollybot_simulator
from handlers.simulation import ServedApp
from tests.providers.helpers import (
    POLLYBOT_KEY,
    build_handler,
    fault,
    provider_entry,
    routed_config,
    seed,
    update,
)
from tests.support import admin_get, post_generic, sim_calls


@pytest.fixture
def leads(pollybot_sim) -> dict[str, str]:
    ids = seed(
        pollybot_sim.url,
        [
            {
                "id": "lead_jane",
                "name": "Jane Doe",
                "email": "Jane@Example.com",
                "status": "new",
                "metadata": {"utm_source": "google", "interests": ["a", "b"], "budget": "$10k"},
            },
            # The fuzzy search for "jane@example.com" finds this one too; it must not be chosen.
            {"id": "lead_mary", "name": "Mary Jane", "email": "mary.jane@example.com.au"},
            {"id": "lead_twin1", "name": "Twin", "email": "twin@example.com"},
            {"id": "lead_twin2", "name": "Twin Two", "email": "TWIN@example.com"},
        ],
    )
    return dict(zip(["jane", "mary", "twin1", "twin2"], ids, strict=True))


@pytest.fixture
def pollybot(tmp_path, pollybot_sim):
    return build_handler(tmp_path, "pollybot", provider_entry("pollybot", pollybot_sim.url))


def lead_state(sim_url: str, lead_id: str) -> dict:
    return requests.get(
        f"{sim_url}/api/v1/leads/{lead_id}", headers={"Authorization": f"Bearer {POLLYBOT_KEY}"}, timeout=5
    ).json()["data"]


def test_put_sends_only_changed_fields_with_bearer(pollybot, pollybot_sim, leads) -> None:
    result = pollybot.deliver(update(lead_id="lead_jane", status="contacted", phone="+1-555-123-9999"))
    assert result.outcome is Outcome.DELIVERED, result.reason
    [call] = sim_calls(pollybot_sim.url, "/api/v1/leads/")
    assert call["method"] == "PUT"
    assert call["path"] == "/api/v1/leads/lead_jane"
    assert call["query"] == {}
    assert call["headers"]["authorization"] == f"Bearer {POLLYBOT_KEY}"
    assert call["headers"]["content-type"] == "application/json"
    assert call["json"] == {"status": "contacted", "phone": "+1-555-123-9999"}


def test_status_map_and_metadata_merge_give_the_intended_lead(pollybot, pollybot_sim, leads) -> None:
    result = pollybot.deliver(
        update(
            lead_id="lead_jane",
            status="won",
            company="New Tech Corp",
            metadata={"interests": ["enterprise_solution"], "budget": None, "timeline": "Q2"},
        )
    )
    assert result.ok, result.reason
    [call] = sim_calls(pollybot_sim.url, "/api/v1/leads/")
    assert call["json"] == {
        "status": "converted",
        "metadata": {
            "company": "New Tech Corp",
            "interests": ["enterprise_solution"],
            "budget": None,
            "timeline": "Q2",
        },
    }
    lead = lead_state(pollybot_sim.url, "lead_jane")
    assert lead["status"] == "converted"
    assert lead["metadata"] == {
        "utm_source": "google",  # untouched key kept
        "interests": ["enterprise_solution"],  # array replaced, not merged
        "company": "New Tech Corp",
        "timeline": "Q2",
    }  # "budget" cleared by null


def test_both_names_compose_the_name_field(pollybot, pollybot_sim, leads) -> None:
    assert pollybot.deliver(update(lead_id="lead_jane", first_name="John", last_name="Smith")).ok
    [call] = sim_calls(pollybot_sim.url, "/api/v1/leads/")
    assert call["json"] == {"name": "John Smith", "metadata": {"first_name": "John", "last_name": "Smith"}}


def test_lead_found_by_exact_case_insensitive_email(pollybot, pollybot_sim, leads) -> None:
    assert pollybot.deliver(update(lead_email="jane@example.com", status="qualified")).ok
    assert pollybot.deliver(update(lead_email="jane@example.com", status="follow_up")).ok
    searches = sim_calls(pollybot_sim.url, "/api/v1/leads")
    lookups = [c for c in searches if c["method"] == "GET"]
    assert len(lookups) == 1  # the second delivery used the cached id
    assert lookups[0]["query"]["search"] == "jane@example.com"
    puts = [c["path"] for c in searches if c["method"] == "PUT"]
    assert puts == ["/api/v1/leads/lead_jane", "/api/v1/leads/lead_jane"]


@pytest.mark.parametrize(
    ("lead", "words"),
    [
        ({"lead_email": "twin@example.com"}, "2 PollyBot leads have email"),
        ({"lead_email": "nobody@example.com"}, "no PollyBot lead with email"),
        ({"lead_phone": "+14155550100"}, "only find a lead by id or email"),
    ],
)
def test_ambiguous_or_missing_lead_is_permanent(pollybot, pollybot_sim, leads, lead, words) -> None:
    result = pollybot.deliver(update(**lead, status="qualified"))
    assert result.outcome is Outcome.PERMANENT and result.stage == "lookup"
    assert words in result.reason
    assert [c for c in sim_calls(pollybot_sim.url) if c["method"] == "PUT"] == []


def test_unmappable_status_is_permanent_with_a_clear_reason(pollybot, pollybot_sim, leads) -> None:
    result = pollybot.deliver(update(lead_id="lead_jane", status="unqualified"))
    assert result.outcome is Outcome.PERMANENT and result.stage == "mapping"
    assert "status 'unqualified' has no mapping" in result.reason
    assert sim_calls(pollybot_sim.url) == []


def test_deleted_lead_is_permanent(pollybot, leads) -> None:
    result = pollybot.deliver(update(lead_id="lead_gone", status="qualified"))
    assert result.outcome is Outcome.PERMANENT and result.status_code == 404
    assert "lead not found" in result.reason


def test_validation_error_keeps_its_details(tmp_path, pollybot_sim, leads) -> None:
    # A field_map pointing at a field PollyBot does not have: PollyBot says which.
    handler = build_handler(
        tmp_path, "pollybot", provider_entry("pollybot", pollybot_sim.url, field_map={"company": "company"})
    )
    result = handler.deliver(update(lead_id="lead_jane", company="Acme"))
    assert result.outcome is Outcome.PERMANENT and result.status_code == 400
    assert result.details["code"] == "VALIDATION_ERROR"
    assert result.details["error_details"]["field"] == "company"


def test_duplicate_email_names_the_existing_lead(pollybot, leads) -> None:
    result = pollybot.deliver(update(lead_id="lead_jane", email="twin@example.com"))
    assert result.outcome is Outcome.PERMANENT and result.status_code == 409
    assert "DUPLICATE_EMAIL" in result.reason
    assert result.details["existing_lead_id"] in ("lead_twin1", "lead_twin2")


def test_bad_key_is_a_configuration_problem(tmp_path, pollybot_sim, leads) -> None:
    handler = build_handler(
        tmp_path, "pollybot", provider_entry("pollybot", pollybot_sim.url, api_key="sk-workspace_wrong")
    )
    result = handler.deliver(update(lead_id="lead_jane", status="new"))
    assert result.outcome is Outcome.PERMANENT and result.stage == "config" and result.status_code == 401


def test_429_honours_the_rate_limit_headers(tmp_path) -> None:
    served = ServedApp(create_pollybot_simulator(POLLYBOT_KEY, rate_limit=(2, 60.0))).start()
    try:
        seed(served.url, [{"id": "lead_x", "email": "x@example.com"}])
        handler = build_handler(tmp_path, "pollybot", provider_entry("pollybot", served.url))
        assert handler.deliver(update(lead_id="lead_x", status="new")).ok
        assert handler.deliver(update(lead_id="lead_x", status="contacted")).ok
        result = handler.deliver(update(lead_id="lead_x", status="qualified"))
        assert result.outcome is Outcome.RATE_LIMITED
        assert 55 <= result.retry_after <= 60
        assert result.details["rate_limit"]["X-RateLimit-Remaining"] == "0"
        assert int(result.details["rate_limit"]["X-RateLimit-Reset"]) >= time.time() + 55
    finally:
        served.stop()


def test_reset_header_alone_sets_the_wait(pollybot, pollybot_sim, leads) -> None:
    reset_at = int(time.time()) + 30
    fault(pollybot_sim.url, "/api/v1/leads/", 429, headers={"X-RateLimit-Reset": str(reset_at)})
    result = pollybot.deliver(update(lead_id="lead_jane", status="new"))
    assert result.outcome is Outcome.RATE_LIMITED
    assert 28 <= result.retry_after <= 30


def test_permanent_errors_reach_the_event_log_with_details(
    tmp_path, make_service, pollybot_sim, leads
) -> None:
    service = make_service(
        routed_config(tmp_path, {"pollybot": provider_entry("pollybot", pollybot_sim.url)})
    )
    post_generic(service.url, {"lead": {"id": "lead_jane"}, "changes": {"email": "twin@example.com"}}, "dup")
    post_generic(service.url, {"lead": {"id": "lead_mary"}, "changes": {"status": "won"}}, "won")
    service.drain()
    dup = admin_get(service.url, "/v1/events/generic:dup").json()["deliveries"][0]
    assert dup["status"] == "dead_lettered" and "DUPLICATE_EMAIL" in dup["last_error"]
    assert dup["response"]["existing_lead_id"] in ("lead_twin1", "lead_twin2")
    assert dup["response"]["error_details"]["existingLeadId"] == dup["response"]["existing_lead_id"]
    won = admin_get(service.url, "/v1/events/generic:won").json()["deliveries"][0]
    assert won["status"] == "delivered"
    assert lead_state(pollybot_sim.url, "lead_mary")["status"] == "converted"


def test_chatbot_scoped_path_template(tmp_path, pollybot_sim, leads) -> None:
    template = "/api/v1/chatbots/{chatbotId}/leads/{leadId}"
    unready = build_handler(
        tmp_path, "pollybot", provider_entry("pollybot", pollybot_sim.url, update_path=template)
    )
    assert "chatbot_id is not configured" in unready.configuration_problem()
    handler = build_handler(
        tmp_path,
        "pollybot",
        provider_entry("pollybot", pollybot_sim.url, update_path=template, chatbot_id="bot 1"),
    )
    assert handler.configuration_problem() is None
    assert handler.deliver(update(lead_id="lead_jane", status="lost")).ok
    [call] = sim_calls(pollybot_sim.url, "/leads/")
    assert call["method"] == "PUT" and call["path"] == "/api/v1/chatbots/bot 1/leads/lead_jane"


def test_bad_status_map_target_makes_deliveries_wait(tmp_path, pollybot_sim) -> None:
    handler = build_handler(
        tmp_path, "pollybot", provider_entry("pollybot", pollybot_sim.url, status_map={"unqualified": "junk"})
    )
    assert "not PollyBot statuses" in handler.configuration_problem()
