"""LeadSquared sync (seed 001) and Async (seeds 000, 002): the exact requests, the status
poller's end states, and the metrics API."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from handlers.base import Outcome
from service.cli import main as cli_main
from service.pipeline.delivery_core import DeliveryCore
from tests.providers.helpers import (
    LSQ_ASYNC_KEY,
    SECRETS,
    build_handler,
    fault,
    provider_entry,
    routed_config,
    script_async,
    seed,
    update,
)
from tests.support import (
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    admin_get,
    load,
    post_generic,
    sim_calls,
    write_config,
)

LEAD_ID = "9f1c2e3d-0000-4000-8000-00000000abcd"


@pytest.fixture
def lsq_lead(lsq_async_sim) -> str:
    [lead_id] = seed(
        lsq_async_sim.url, [{"ProspectID": LEAD_ID, "EmailAddress": "jane@example.com", "FirstName": "Jane"}]
    )
    return lead_id


def async_service(tmp_path, make_service, sim_url: str, **entry_extra):
    providers = {"lsq_async": provider_entry("leadsquared_async", sim_url, **entry_extra)}
    return make_service(routed_config(tmp_path, providers))


def test_sync_update_request_is_exact(tmp_path, lsq_async_sim, lsq_lead) -> None:
    handler = build_handler(tmp_path, "leadsquared", provider_entry("leadsquared", lsq_async_sim.url))
    result = handler.deliver(update(lead_id=lsq_lead, city="London", phone="9999999999"))
    assert result.outcome is Outcome.DELIVERED, result.reason
    [call] = sim_calls(lsq_async_sim.url, "Lead.Update")
    assert call["method"] == "POST"
    assert call["path"] == "/v2/LeadManagement.svc/Lead.Update"
    assert call["query"] == {
        "accessKey": LSQ_ACCESS_KEY,
        "secretKey": LSQ_SECRET_KEY,
        "leadId": lsq_lead,
        "postUpdatedLead": "true",
    }
    assert call["headers"]["content-type"] == "application/json"
    assert call["json"] == [
        {"Attribute": "mx_City", "Value": "London"},
        {"Attribute": "Phone", "Value": "9999999999"},
    ]


def test_async_update_request_is_exact(tmp_path, lsq_async_sim, lsq_lead) -> None:
    handler = build_handler(tmp_path, "lsq_async", provider_entry("leadsquared_async", lsq_async_sim.url))
    result = handler.deliver(update(lead_id=lsq_lead, city="London", phone="9999999999"))
    assert result.outcome is Outcome.ACCEPTED, result.reason
    [call] = sim_calls(lsq_async_sim.url, "/lead/update")
    assert call["method"] == "POST"
    assert call["path"] == "/lead/update"
    assert call["query"] == {
        "accessKey": LSQ_ACCESS_KEY,
        "secretKey": LSQ_SECRET_KEY,
        "leadId": lsq_lead,
        "postUpdatedLead": "true",
    }
    assert call["headers"]["x-api-key"] == LSQ_ASYNC_KEY
    assert call["headers"]["content-type"] == "application/json"
    assert call["json"] == [
        {"Attribute": "mx_City", "Value": "London"},
        {"Attribute": "Phone", "Value": "9999999999"},
    ]
    assert result.request_id
    # The status poll: the RequestID in the query, the x-api-key header, nothing else.
    handler.poll(result.request_id)
    [status_call] = sim_calls(lsq_async_sim.url, "/lead/update/status")
    assert status_call["method"] == "GET"
    assert status_call["query"] == {"RequestID": result.request_id}
    assert status_call["headers"]["x-api-key"] == LSQ_ASYNC_KEY


def test_async_lookup_by_email_uses_the_sync_host(tmp_path, lsq_async_sim, lsq_lead) -> None:
    handler = build_handler(
        tmp_path,
        "lsq_async",
        provider_entry("leadsquared_async", "http://127.0.0.1:9", lookup_base_url=lsq_async_sim.url),
    )
    # The async host is unreachable: the lookup must still happen on the sync host first.
    result = handler.deliver(update(lead_email="jane@example.com", city="Paris"))
    assert result.outcome is Outcome.TRANSIENT
    [lookup] = sim_calls(lsq_async_sim.url, "Leads.GetByEmailaddress")
    assert lookup["query"]["emailaddress"] == "jane@example.com"


def test_request_id_spellings(tmp_path, lsq_async_sim, lsq_lead) -> None:
    script_async(lsq_async_sim.url, scripts=[{"request_id_key": "RequestId", "process_seconds": 0}])
    handler = build_handler(tmp_path, "lsq_async", provider_entry("leadsquared_async", lsq_async_sim.url))
    result = handler.deliver(update(lead_id=lsq_lead, city="Pune"))
    assert result.outcome is Outcome.ACCEPTED and result.request_id


def test_in_queue_twice_then_success_ends_delivered(tmp_path, make_service, lsq_async_sim, lsq_lead) -> None:
    script_async(lsq_async_sim.url, scripts=[{"in_queue_polls": 2, "process_seconds": 0}])
    service = async_service(tmp_path, make_service, lsq_async_sim.url)
    post_generic(service.url, {"lead": {"id": lsq_lead}, "changes": {"city": "Bangalore"}}, "m1")
    service.drain()
    polls = sim_calls(lsq_async_sim.url, "/lead/update/status")
    assert len(polls) == 3
    event = admin_get(service.url, "/v1/events/generic:m1").json()
    [delivery] = event["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["request_id"] == polls[0]["query"]["RequestID"]
    assert delivery["attempts"] == 1  # one update call; polls are not delivery attempts
    assert delivery["polls"] == 3
    body = delivery["response"]["body"]
    assert body["Status"] == "Success"
    assert body["Message"] == {"Status": "Success", "Message": {"AffectedRows": 1}}  # parsed JSON string
    assert len(sim_calls(lsq_async_sim.url, "/lead/update")) - len(polls) == 1


def test_failure_ends_dead_lettered_with_the_reason(tmp_path, make_service, lsq_async_sim, lsq_lead) -> None:
    script_async(
        lsq_async_sim.url,
        scripts=[
            {
                "in_queue_polls": 1,
                "process_seconds": 0,
                "status": "FAILURE",
                "reason": "MXDuplicateEntryException: same email",
            }
        ],
    )
    service = async_service(tmp_path, make_service, lsq_async_sim.url)
    post_generic(service.url, {"lead": {"id": lsq_lead}, "changes": {"city": "Delhi"}}, "m2")
    service.drain()
    [delivery] = admin_get(service.url, "/v1/events/generic:m2").json()["deliveries"]
    assert delivery["status"] == "dead_lettered"
    assert "FAILURE: MXDuplicateEntryException: same email" in delivery["last_error"]
    assert len(sim_calls(lsq_async_sim.url, "/lead/update/status")) == 2


def test_unknown_lead_fails_in_processing(tmp_path, make_service, lsq_async_sim) -> None:
    service = async_service(tmp_path, make_service, lsq_async_sim.url)
    post_generic(service.url, {"lead": {"id": "no-such-lead"}, "changes": {"city": "Delhi"}}, "m3")
    service.drain()
    [delivery] = admin_get(service.url, "/v1/events/generic:m3").json()["deliveries"]
    assert delivery["status"] == "dead_lettered"
    assert "does not exist" in delivery["last_error"]


@pytest.mark.parametrize("spelling", ["success", "SUCCESS", "Success"])
def test_terminal_status_compared_case_insensitively(tmp_path, lsq_async_sim, lsq_lead, spelling) -> None:
    script_async(lsq_async_sim.url, scripts=[{"status": spelling, "process_seconds": 0}])
    handler = build_handler(tmp_path, "lsq_async", provider_entry("leadsquared_async", lsq_async_sim.url))
    accepted = handler.deliver(update(lead_id=lsq_lead, city="Goa"))
    assert handler.poll(accepted.request_id).outcome is Outcome.DELIVERED


def test_error_status_is_permanent(tmp_path, lsq_async_sim, lsq_lead) -> None:
    script_async(
        lsq_async_sim.url, scripts=[{"status": "ERROR", "reason": "system error", "process_seconds": 0}]
    )
    handler = build_handler(tmp_path, "lsq_async", provider_entry("leadsquared_async", lsq_async_sim.url))
    accepted = handler.deliver(update(lead_id=lsq_lead, city="Goa"))
    result = handler.poll(accepted.request_id)
    assert result.outcome is Outcome.PERMANENT and "ERROR: system error" in result.reason


def test_polling_is_bounded(tmp_path, make_service, lsq_async_sim, lsq_lead) -> None:
    script_async(lsq_async_sim.url, scripts=[{"in_queue_polls": 100}])
    providers = {"lsq_async": provider_entry("leadsquared_async", lsq_async_sim.url)}
    service = make_service(routed_config(tmp_path, providers, dispatcher={"poll_max_attempts": 3}))
    post_generic(service.url, {"lead": {"id": lsq_lead}, "changes": {"city": "Delhi"}}, "m4")
    service.drain()
    [delivery] = admin_get(service.url, "/v1/events/generic:m4").json()["deliveries"]
    assert delivery["status"] == "dead_lettered"
    assert "still not finished after 3 status polls" in delivery["last_error"]
    assert len(sim_calls(lsq_async_sim.url, "/lead/update/status")) == 3


def test_async_errors_end_in_the_right_state(tmp_path, lsq_async_sim, lsq_lead) -> None:
    handler = build_handler(tmp_path, "lsq_async", provider_entry("leadsquared_async", lsq_async_sim.url))
    fault(lsq_async_sim.url, "/lead/update", 500)
    assert handler.deliver(update(lead_id=lsq_lead, city="A")).outcome is Outcome.TRANSIENT
    fault(lsq_async_sim.url, "/lead/update", 429)
    assert handler.deliver(update(lead_id=lsq_lead, city="A")).outcome is Outcome.RATE_LIMITED
    bad_key = build_handler(
        tmp_path, "lsq_async", provider_entry("leadsquared_async", lsq_async_sim.url, api_key="nope-nope")
    )
    denied = bad_key.deliver(update(lead_id=lsq_lead, city="A"))
    assert denied.outcome is Outcome.PERMANENT and denied.stage == "config"
    wrong_path = build_handler(
        tmp_path,
        "lsq_async",
        provider_entry("leadsquared_async", lsq_async_sim.url, status_path="/lead/status/nope"),
    )
    accepted = wrong_path.deliver(update(lead_id=lsq_lead, city="A"))
    lost = wrong_path.poll(accepted.request_id)
    assert lost.outcome is Outcome.PERMANENT and "status_path" in lost.reason


@pytest.mark.parametrize("rate_key", ["ProcessingRatePerMinute", "ProcessingratePerMinute"])
def test_metrics_command_and_gauges(tmp_path, capsys, lsq_async_sim, lsq_lead, rate_key) -> None:
    script_async(lsq_async_sim.url, process_seconds=60, rate_key=rate_key)
    entry = provider_entry("leadsquared_async", lsq_async_sim.url)
    handler = build_handler(tmp_path, "lsq_async", entry)
    for city in ("A", "B"):
        assert handler.deliver(update(lead_id=lsq_lead, city=city)).outcome is Outcome.ACCEPTED
    raw = routed_config(tmp_path, {"lsq_async": entry})
    assert cli_main(["--config", str(write_config(tmp_path, raw)), "providers", "metrics", "lsq_async"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"]["pending_messages"] == 2
    assert printed["metrics"]["processing_rate_per_minute"] == 0
    [call] = sim_calls(lsq_async_sim.url, "/lead/update/metrics")
    assert call["headers"]["x-api-key"] == LSQ_ASYNC_KEY
    DeliveryCore(load(raw)).refresh_provider_metrics()
    gauge = REGISTRY.get_sample_value(
        "leadrelay_provider_async_metric", {"provider": "lsq_async", "metric": "pending_messages"}
    )
    assert gauge == 2


def test_metrics_command_for_a_provider_without_metrics(tmp_path, capsys, octanist_sim) -> None:
    raw = routed_config(tmp_path, {"octanist": provider_entry("octanist", octanist_sim.url)})
    assert cli_main(["--config", str(write_config(tmp_path, raw)), "providers", "metrics", "octanist"]) == 2
    assert "reports no metrics" in capsys.readouterr().err


def test_no_secret_in_the_event_log_or_logs(tmp_path, make_service, lsq_async_sim, lsq_lead, caplog) -> None:
    script_async(lsq_async_sim.url, scripts=[{"status": "FAILURE", "reason": "MXFail", "process_seconds": 0}])
    fault(
        lsq_async_sim.url,
        "/lead/update",
        401,
        body={"Status": "Error", "ExceptionMessage": f"bad {LSQ_ASYNC_KEY}"},
    )
    service = async_service(tmp_path, make_service, lsq_async_sim.url)
    post_generic(service.url, {"lead": {"id": lsq_lead}, "changes": {"city": "X"}}, "s1")
    post_generic(service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "Y"}}, "s2")
    service.drain()
    logged = json.dumps([admin_get(service.url, f"/v1/events/generic:{m}").json() for m in ("s1", "s2")])
    assert "dead_lettered" in logged
    # Our own log lines, message and structured fields (the simulator's access log is the provider's).
    ours = [r for r in caplog.records if r.name.startswith("leadrelay")]
    assert ours
    text = logged + "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    for secret in SECRETS:
        assert secret not in text


def test_failed_async_update_does_not_block_an_older_event(
    tmp_path, make_service, lsq_async_sim, lsq_lead
) -> None:
    """Field versions count only what LeadSquared applied: a task that ends in FAILURE
    leaves none behind, so an older event for the same field is sent, not "superseded"."""
    script_async(lsq_async_sim.url, scripts=[{"process_seconds": 0, "status": "FAILURE"}])
    service = async_service(tmp_path, make_service, lsq_async_sim.url)
    newer = {"lead": {"id": lsq_lead}, "changes": {"city": "Pune"}, "occurred_at": "2026-01-02T00:00:00Z"}
    post_generic(service.url, newer, "newer")
    service.drain()
    [failed] = admin_get(service.url, "/v1/events/generic:newer").json()["deliveries"]
    assert failed["status"] == "dead_lettered"
    older = {"lead": {"id": lsq_lead}, "changes": {"city": "Delhi"}, "occurred_at": "2026-01-01T00:00:00Z"}
    post_generic(service.url, older, "older")
    service.drain()
    [sent] = admin_get(service.url, "/v1/events/generic:older").json()["deliveries"]
    assert sent["status"] == "delivered"
    assert not (sent["last_error"] or "").startswith("superseded"), sent
    updates = [c for c in sim_calls(lsq_async_sim.url, "/lead/update") if "status" not in c["path"]]
    assert [c["json"] for c in updates][-1] == [{"Attribute": "mx_City", "Value": "Delhi"}]


def test_successful_async_update_protects_its_fields(tmp_path, make_service, lsq_async_sim, lsq_lead) -> None:
    """Once a poll reports Success the versions are recorded: an older event is superseded."""
    service = async_service(tmp_path, make_service, lsq_async_sim.url)
    newer = {"lead": {"id": lsq_lead}, "changes": {"city": "Pune"}, "occurred_at": "2026-01-02T00:00:00Z"}
    post_generic(service.url, newer, "newer")
    service.drain()
    older = {"lead": {"id": lsq_lead}, "changes": {"city": "Delhi"}, "occurred_at": "2026-01-01T00:00:00Z"}
    post_generic(service.url, older, "older")
    service.drain()
    [skipped] = admin_get(service.url, "/v1/events/generic:older").json()["deliveries"]
    assert skipped["status"] == "delivered"
    assert skipped["last_error"].startswith("superseded")
    assert len([c for c in sim_calls(lsq_async_sim.url, "/lead/update") if "status" not in c["path"]]) == 1
