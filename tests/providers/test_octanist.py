"""Octanist (seed 004): the exact request, and where each documented answer ends."""

from __future__ import annotations

import pytest

from handlers.base import Outcome
from tests.providers.helpers import (
    OCTANIST_KEY,
    build_handler,
    fault,
    provider_entry,
    routed_config,
    seed,
    update,
)
from tests.support import admin_get, post_generic, sim_calls


@pytest.fixture
def octanist(tmp_path, octanist_sim):
    seed(
        octanist_sim.url,
        [
            {"id": "lead_abc123", "email": "john@example.com", "phone": "+14155550100"},
            {"id": "lead_twin1", "email": "twin@example.com"},
            {"id": "lead_twin2", "email": "TWIN@example.com"},
        ],
    )
    return build_handler(tmp_path, "octanist", provider_entry("octanist", octanist_sim.url))


def test_patch_carries_identifier_and_fields_exactly(octanist, octanist_sim) -> None:
    result = octanist.deliver(update(lead_email="john@example.com", status="won", value=5000, note="Signed"))
    assert result.outcome is Outcome.DELIVERED, result.reason
    [call] = sim_calls(octanist_sim.url, "/api/leads")
    assert call["method"] == "PATCH"
    assert call["path"] == "/api/leads"
    assert call["query"] == {}
    assert call["headers"]["x-api-key"] == OCTANIST_KEY
    assert call["headers"]["content-type"] == "application/json"
    assert call["json"] == {"email": "john@example.com", "status": "won", "value": 5000, "note": "Signed"}
    assert "changedTo" not in call["json"]


def test_identifier_priority_sends_only_the_strongest(octanist, octanist_sim) -> None:
    assert octanist.deliver(
        update(
            lead_id="lead_abc123",
            lead_email="nobody@example.com",
            lead_phone="+100",
            status="qualified",
            value=10,
        )
    ).ok
    assert octanist.deliver(update(lead_email="john@example.com", lead_phone="+14155550100", note="n")).ok
    assert octanist.deliver(update(lead_phone="+14155550100", note="by phone")).ok
    bodies = [c["json"] for c in sim_calls(octanist_sim.url, "/api/leads")]
    assert bodies == [
        {"id": "lead_abc123", "status": "qualified", "value": 10},
        {"email": "john@example.com", "note": "n"},
        {"phone": "+14155550100", "note": "by phone"},
    ]


def test_loss_reason_only_with_lost(octanist, octanist_sim) -> None:
    assert octanist.deliver(
        update(lead_email="john@example.com", status="lost", loss_reason="Too expensive")
    ).ok
    assert octanist.deliver(
        update(lead_email="john@example.com", status="won", value=1, loss_reason="stale")
    ).ok
    assert octanist.deliver(update(lead_email="john@example.com", note="x", loss_reason="no status")).ok
    bodies = [c["json"] for c in sim_calls(octanist_sim.url, "/api/leads")]
    assert bodies[0] == {"email": "john@example.com", "status": "lost", "lossReason": "Too expensive"}
    assert "lossReason" not in bodies[1] and "lossReason" not in bodies[2]


def test_unmappable_status_is_permanent_and_sends_nothing(octanist, octanist_sim) -> None:
    result = octanist.deliver(update(lead_email="john@example.com", status="contacted"))
    assert result.outcome is Outcome.PERMANENT
    assert result.stage == "mapping" and "'contacted' has no mapping" in result.reason
    assert sim_calls(octanist_sim.url, "/api/leads") == []


def test_nothing_octanist_knows_is_not_sent(octanist, octanist_sim) -> None:
    result = octanist.deliver(update(lead_email="john@example.com", city="London"))
    assert result.outcome is Outcome.DELIVERED and "nothing sent" in result.reason
    assert sim_calls(octanist_sim.url) == []


@pytest.mark.parametrize(
    ("lead", "outcome", "stage", "words"),
    [
        ({"lead_email": "twin@example.com"}, Outcome.PERMANENT, "provider", "CONFLICT"),
        ({"lead_email": "ghost@example.com"}, Outcome.PERMANENT, "provider", "NOT_FOUND"),
    ],
)
def test_conflict_and_not_found_are_permanent(octanist, lead, outcome, stage, words) -> None:
    result = octanist.deliver(update(**lead, status="won", value=1))
    assert result.outcome is outcome and result.stage == stage
    assert words in result.reason and result.details["code"] == words


def test_bad_key_is_a_configuration_problem(tmp_path, octanist_sim) -> None:
    handler = build_handler(
        tmp_path, "octanist", provider_entry("octanist", octanist_sim.url, api_key="wrong-key-123")
    )
    result = handler.deliver(update(lead_email="john@example.com", status="won", value=1))
    assert result.outcome is Outcome.PERMANENT and result.stage == "config"
    assert result.status_code == 401 and "UNAUTHORIZED" in result.reason
    assert "wrong-key-123" not in result.reason + str(result.response)


def test_server_error_is_transient(octanist, octanist_sim) -> None:
    fault(octanist_sim.url, "/api/leads", 500)
    result = octanist.deliver(update(lead_email="john@example.com", status="won", value=1))
    assert result.outcome is Outcome.TRANSIENT and result.status_code == 500


def test_errors_end_in_the_right_state_in_the_event_log(tmp_path, make_service, octanist_sim) -> None:
    seed(
        octanist_sim.url,
        [{"email": "a@example.com"}, {"email": "dup@example.com"}, {"email": "dup@example.com"}],
    )
    fault(octanist_sim.url, "/api/leads", 500, count=1)
    service = make_service(
        routed_config(tmp_path, {"octanist": provider_entry("octanist", octanist_sim.url)})
    )
    events = {
        "ok": {"lead": {"email": "a@example.com"}, "changes": {"status": "won", "value": 100}},
        "conflict": {"lead": {"email": "dup@example.com"}, "changes": {"status": "lost"}},
        "missing": {"lead": {"email": "none@example.com"}, "changes": {"note": "hi"}},
    }
    for name, event in events.items():
        assert post_generic(service.url, event, f"msg_{name}").status_code == 202
        service.drain()  # one at a time: the armed 500 must hit "ok"
    logged = {name: admin_get(service.url, f"/v1/events/generic:msg_{name}").json() for name in events}
    ok = logged["ok"]["deliveries"][0]
    assert ok["status"] == "delivered" and ok["attempts"] == 2  # the 500 was retried
    conflict = logged["conflict"]["deliveries"][0]
    assert conflict["status"] == "dead_lettered" and "CONFLICT" in conflict["last_error"]
    assert conflict["response"]["status_code"] == 409 and conflict["attempts"] == 1
    missing = logged["missing"]["deliveries"][0]
    assert missing["status"] == "dead_lettered" and "NOT_FOUND" in missing["last_error"]
