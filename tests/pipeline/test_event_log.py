"""The event log's filters, cursor, bulk replay by filter (API and CLI), the overview and the
provider controls, over the real app and the LeadSquared simulator."""

from __future__ import annotations

import time

import requests

from service.domain.state import EventFilter, ProviderControl
from tests.support import ADMIN_TOKEN, admin_get, base_config, post_generic, write_config

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def seed(sim, *leads: dict) -> list[str]:
    return requests.post(f"{sim.url}/_sim/leads", json=list(leads), timeout=5).json()["ids"]


def ids(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [event["command_id"] for event in response.json()["events"]]


def bulk_replay(service, **body) -> requests.Response:
    return requests.post(f"{service.url}/v1/events/replay", json=body, headers=AUTH, timeout=5)


def test_filters_find_events_by_lead_identity_source_type_and_time(service, lsq_sim) -> None:
    [lead_id] = seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    post_generic(service.url, {"lead": {"email": "Jane@Example.com"}, "changes": {"city": "A"}}, "e1")
    post_generic(
        service.url,
        {"event_type": "deal.won", "lead": {"phone": "+14155550100"}, "changes": {"city": "B"}},
        "e2",
    )
    post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "C"}}, "e3")
    assert ids(admin_get(service.url, "/v1/events?lead=jane@example.com")) == ["generic:e1"]
    assert ids(admin_get(service.url, "/v1/events?lead=%2B14155550100")) == ["generic:e2"]
    assert ids(admin_get(service.url, f"/v1/events?lead={lead_id}")) == ["generic:e3"]
    assert ids(admin_get(service.url, "/v1/events?event_type=deal.won")) == ["generic:e2"]
    assert ids(admin_get(service.url, "/v1/events?source=generic&limit=2")) == ["generic:e1", "generic:e2"]
    assert ids(admin_get(service.url, "/v1/events?source=typeform")) == []
    assert len(ids(admin_get(service.url, f"/v1/events?since={time.time() - 60}"))) == 3
    assert ids(admin_get(service.url, "/v1/events?until=2000-01-01T00:00:00")) == []
    first = admin_get(service.url, "/v1/events?limit=1").json()
    after = admin_get(service.url, f"/v1/events?limit=5&after={first['next_after']}")
    assert ids(after) == ["generic:e2", "generic:e3"]
    [row] = admin_get(service.url, "/v1/events?lead=jane@example.com").json()["events"]
    assert row["lead"]["email"] == "jane@example.com"
    bad = admin_get(service.url, "/v1/events?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.json()["details"]


def test_bulk_replay_dry_run_counts_then_resets_only_what_the_filter_matches(service, lsq_sim) -> None:
    for n in (1, 2, 3):
        post_generic(
            service.url, {"lead": {"email": f"ghost{n}@example.com"}, "changes": {"city": "X"}}, f"g{n}"
        )
    service.drain()
    assert len(ids(admin_get(service.url, "/v1/events?status=dead_lettered"))) == 3

    dry = bulk_replay(service, lead="ghost1@example.com", dry_run=True)
    assert dry.status_code == 200 and dry.json() == {"dry_run": True, "events": 1, "deliveries": 1}
    assert len(ids(admin_get(service.url, "/v1/events?status=dead_lettered"))) == 3  # nothing reset

    seed(lsq_sim, {"EmailAddress": "ghost1@example.com"})
    done = bulk_replay(service, lead="ghost1@example.com", provider="leadsquared")
    assert done.status_code == 202 and done.json()["deliveries"] == 1
    service.drain()
    assert ids(admin_get(service.url, "/v1/events?status=delivered")) == ["generic:g1"]
    assert ids(admin_get(service.url, "/v1/events?status=dead_lettered")) == ["generic:g2", "generic:g3"]
    event = admin_get(service.url, "/v1/events/generic:g1").json()
    assert event["deliveries"][0]["replays"] == 1
    assert [entry["status"] for entry in event["timeline"]][0] == "received"
    assert "replayed" in [entry["status"] for entry in event["timeline"]]
    assert bulk_replay(service, status="weird").status_code == 400
    nothing = bulk_replay(service, status="delivered")
    assert nothing.status_code == 200 and nothing.json()["deliveries"] == 0


def test_events_cli_bulk_replays_by_filter_after_a_dry_run(service, lsq_sim, tmp_path, capsys) -> None:
    from service.cli import main

    post_generic(service.url, {"lead": {"email": "ghost@example.com"}, "changes": {"city": "X"}}, "c1")
    service.drain()
    config_path = str(write_config(tmp_path, base_config(tmp_path, lsq_sim.url)))
    flags = ["--config", config_path, "events", "replay", "--url", service.url, "--token", ADMIN_TOKEN]
    filters = ["--status", "dead_lettered", "--provider", "leadsquared", "--source", "generic"]
    assert main([*flags, *filters, "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "would reset 1 dead-lettered deliveries of 1 events"
    assert ids(admin_get(service.url, "/v1/events?status=dead_lettered")) == ["generic:c1"]
    assert main([*flags, *filters]) == 0
    assert capsys.readouterr().out.strip() == "reset 1 dead-lettered deliveries of 1 events"
    assert ids(admin_get(service.url, "/v1/events?status=dead_lettered")) == []
    assert main(flags) == 2  # neither a command id nor a filter


def test_overview_counts_per_provider_and_source(service, lsq_sim) -> None:
    seed(lsq_sim, {"EmailAddress": "jane@example.com"})
    post_generic(service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "A"}}, "o1")
    post_generic(service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "A"}}, "o1")
    post_generic(service.url, {"lead": {"email": "ghost@example.com"}, "changes": {"city": "A"}}, "o2")
    service.drain()
    post_generic(service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "B"}}, "o3")
    response = admin_get(service.url, "/v1/overview")
    assert response.status_code == 200, response.text
    body = response.json()
    lsq = body["providers"]["leadsquared"]
    assert lsq["delivered_last_hour"] == 1 and lsq["dead_letters"] == 1 and lsq["pending"] == 1
    assert lsq["failures_by_stage"] == {"lookup": 1}
    assert lsq["oldest_pending_age_seconds"] >= 0
    assert body["sources"]["generic"] == {"accepted": 3, "duplicates": 1}
    assert len(body["series"]) == 60
    assert sum(point["delivered"] for point in body["series"]) == 1
    assert sum(point["failed"] for point in body["series"]) == 1


def test_overview_reports_the_rate_limit_budget_the_dispatcher_used(
    make_service, lsq_sim, tmp_path, capsys
) -> None:
    from prometheus_client import REGISTRY

    from service.cli import main
    from service.web.api_schemas import OverviewSchema

    # A minute's window: the calls are still in it when the sample is taken, however slow the machine.
    raw = base_config(
        tmp_path, lsq_sim.url, providers={"leadsquared": {"rate_limit": {"calls": 25, "per_seconds": 60}}}
    )
    service = make_service(raw)
    assert admin_get(service.url, "/v1/overview").json()["providers"] == {}  # nothing sampled yet
    seed(lsq_sim, *({"EmailAddress": f"b{n}@example.com"} for n in range(3)))
    for n in range(3):
        post_generic(service.url, {"lead": {"email": f"b{n}@example.com"}, "changes": {"city": "A"}}, f"b{n}")
    service.drain()
    made = len(requests.get(f"{lsq_sim.url}/_sim/calls", timeout=5).json()["calls"])
    assert made == 6  # a lead-id look-up and an update per event, each with a slot of its own
    service.dispatcher().update_gauges()  # the dispatcher loop's periodic step (every 5 s)

    body = admin_get(service.url, "/v1/overview").json()
    assert OverviewSchema().validate(body) == {}
    budget = body["providers"]["leadsquared"]["rate_limit"]
    assert budget["calls"] == 25 and budget["per_seconds"] == 60.0
    assert [sample["used"] for sample in budget["samples"]] == [made]
    assert (
        REGISTRY.get_sample_value("leadrelay_rate_limit_used_ratio", {"provider": "leadsquared"}) == made / 25
    )
    config_path = str(write_config(tmp_path, raw))
    flags = ["--url", service.url, "--token", ADMIN_TOKEN]
    assert main(["--config", config_path, "providers", "status", "leadsquared", *flags]) == 0
    assert capsys.readouterr().out == f"leadsquared\tclosed\trate limit {made}/25 per 60 s\t\n"


def test_provider_controls_round_trip_and_list_filters_in_the_store(service) -> None:
    store = service.runtime.store
    assert store.provider_controls() == {}
    store.put_provider_control(ProviderControl(provider="leadsquared", paused=True, reason="maintenance"))
    store.put_provider_control(
        ProviderControl(provider="octanist", breaker="open", reason="5 failures", opened_at=1.0, probes=2)
    )
    controls = store.provider_controls()
    assert controls["leadsquared"].paused and controls["leadsquared"].reason == "maintenance"
    assert controls["leadsquared"].updated_at > 0
    assert controls["octanist"].breaker == "open" and controls["octanist"].probes == 2
    store.put_provider_control(ProviderControl(provider="leadsquared", paused=False, updated_at=5.0))
    assert store.provider_controls()["leadsquared"] == ProviderControl(provider="leadsquared", updated_at=5.0)
    assert store.list_events(EventFilter(lead="nobody@example.com")) == []


def test_a_page_ends_on_a_whole_event_so_the_cursor_loses_no_row() -> None:
    from service.web.event_filters import whole_events

    rows = [{"seq": seq, "provider": p} for seq, p in [(1, "a"), (2, "a"), (2, "b"), (2, "c"), (3, "a")]]
    page, more = whole_events(rows[:4], 3)  # the store was asked for limit + 1 rows
    assert more and [(r["seq"], r["provider"]) for r in page] == [(1, "a")]
    page, more = whole_events(rows, 5)
    assert not more and page == rows
    page, more = whole_events(rows[1:], 2)  # one event wider than a page: the page is not empty
    assert more and len(page) == 2
