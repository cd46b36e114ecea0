"""Fan-out, coalescing, stale protection and 429 handling, end to end: signed webhooks in,
the dispatcher, real simulators out."""

from __future__ import annotations

import pytest
import requests

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from tests.providers.helpers import fault, provider_entry, routed_config, seed
from tests.support import (
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    admin_get,
    admin_post,
    post_generic,
    sim_calls,
    wait_until,
)

JANE = "jane@example.com"


def event(changes: dict, occurred_at: str, lead: dict | None = None, metadata: dict | None = None) -> dict:
    return {
        "lead": lead or {"email": JANE},
        "changes": changes,
        "occurred_at": occurred_at,
        "metadata": metadata or {},
    }


def deliveries(service, msg_id: str) -> dict[str, dict]:
    found = admin_get(service.url, f"/v1/events/generic:{msg_id}").json()
    return {d["provider"]: d for d in found["deliveries"]}


def lsq_updates(sim_url: str) -> list[dict]:
    return sim_calls(sim_url, "Lead.Update")


def test_fan_out_each_provider_gets_exactly_one_successful_call(
    tmp_path, make_service, lsq_sim, octanist_sim
) -> None:
    seed(lsq_sim.url, [{"EmailAddress": JANE}])
    seed(octanist_sim.url, [{"email": JANE}])
    fault(lsq_sim.url, "Lead.Update", 500, count=2)
    providers = {
        "leadsquared": provider_entry("leadsquared", lsq_sim.url),
        "octanist": provider_entry("octanist", octanist_sim.url),
    }
    service = make_service(routed_config(tmp_path, providers))
    post_generic(
        service.url, event({"city": "London", "status": "won", "value": 5000}, "2026-11-22T10:00:00Z"), "f1"
    )
    service.drain()
    assert [c["status"] for c in lsq_updates(lsq_sim.url)] == [500, 500, 200]
    octanist_calls = sim_calls(octanist_sim.url, "/api/leads")
    assert [c["status"] for c in octanist_calls] == [200]  # never re-sent while LeadSquared retried
    assert octanist_calls[0]["json"] == {"email": JANE, "status": "won", "value": 5000}
    ledger = deliveries(service, "f1")
    assert ledger["leadsquared"]["status"] == "delivered" and ledger["leadsquared"]["attempts"] == 3
    assert ledger["octanist"]["status"] == "delivered" and ledger["octanist"]["attempts"] == 1


def test_replay_resends_only_to_the_provider_that_failed(
    tmp_path, make_service, lsq_sim, octanist_sim
) -> None:
    seed(lsq_sim.url, [{"EmailAddress": JANE}])
    seed(octanist_sim.url, [{"email": JANE}])
    fault(lsq_sim.url, "Lead.Update", 400, count=1)  # permanent: dead-lettered at once
    providers = {
        "leadsquared": provider_entry("leadsquared", lsq_sim.url),
        "octanist": provider_entry("octanist", octanist_sim.url),
    }
    service = make_service(routed_config(tmp_path, providers))
    post_generic(service.url, event({"note": "hello"}, "2026-11-22T10:00:00Z"), "r1")
    service.drain()
    assert deliveries(service, "r1")["leadsquared"]["status"] == "dead_lettered"
    assert admin_post(service.url, "/v1/events/generic:r1/replay").status_code == 202
    service.drain()
    ledger = deliveries(service, "r1")
    assert ledger["leadsquared"]["status"] == "delivered" and ledger["leadsquared"]["replays"] == 1
    assert [c["status"] for c in lsq_updates(lsq_sim.url)] == [400, 200]
    assert len(sim_calls(octanist_sim.url, "/api/leads")) == 1


def test_pending_commands_for_one_lead_go_out_as_one_call(tmp_path, make_service, lsq_sim) -> None:
    seed(lsq_sim.url, [{"EmailAddress": JANE}])
    service = make_service(
        routed_config(tmp_path, {"leadsquared": provider_entry("leadsquared", lsq_sim.url)})
    )
    # Arrival order differs from event order: occurred_at decides which value wins.
    post_generic(service.url, event({"city": "London", "first_name": "Jane"}, "2026-11-22T10:00:01Z"), "c1")
    post_generic(service.url, event({"city": "Paris"}, "2026-11-22T10:00:03Z"), "c2")
    post_generic(service.url, event({"city": "Berlin", "last_name": "Doe"}, "2026-11-22T10:00:02Z"), "c3")
    service.drain()
    [call] = lsq_updates(lsq_sim.url)
    assert sorted(call["json"], key=lambda item: item["Attribute"]) == [
        {"Attribute": "FirstName", "Value": "Jane"},
        {"Attribute": "LastName", "Value": "Doe"},
        {"Attribute": "mx_City", "Value": "Paris"},
    ]
    for msg in ("c1", "c2", "c3"):
        assert deliveries(service, msg)["leadsquared"]["status"] == "delivered"


def test_coalesced_metadata_merges_keys_and_replaces_arrays(tmp_path, make_service, pollybot_sim) -> None:
    seed(pollybot_sim.url, [{"id": "lead_jane", "email": JANE, "metadata": {"keep": 1}}])
    service = make_service(
        routed_config(tmp_path, {"pollybot": provider_entry("pollybot", pollybot_sim.url)})
    )
    post_generic(
        service.url,
        event(
            {"status": "contacted"}, "2026-11-22T10:00:01Z", metadata={"a": 1, "tags": ["x", "y"], "gone": 5}
        ),
        "p1",
    )
    post_generic(
        service.url,
        event(
            {"status": "qualified"}, "2026-11-22T10:00:02Z", metadata={"b": 2, "tags": ["z"], "gone": None}
        ),
        "p2",
    )
    service.drain()
    [call] = [c for c in sim_calls(pollybot_sim.url, "/api/v1/leads") if c["method"] == "PUT"]
    assert call["json"] == {"status": "qualified", "metadata": {"a": 1, "b": 2, "tags": ["z"], "gone": None}}
    lead = requests.get(
        f"{pollybot_sim.url}/api/v1/leads/lead_jane",
        headers={"Authorization": call["headers"]["authorization"]},
        timeout=5,
    ).json()["data"]
    assert lead["metadata"] == {"keep": 1, "a": 1, "b": 2, "tags": ["z"]}


def test_without_coalescing_each_command_is_its_own_call_in_order(tmp_path, make_service, lsq_sim) -> None:
    seed(lsq_sim.url, [{"EmailAddress": JANE}])
    service = make_service(
        routed_config(
            tmp_path,
            {"leadsquared": provider_entry("leadsquared", lsq_sim.url)},
            dispatcher={"coalesce": False},
        )
    )
    for n, city in enumerate(("A", "B", "C")):
        post_generic(service.url, event({"city": city}, f"2026-11-22T10:00:0{n}Z"), f"n{n}")
    service.drain()
    assert [c["json"] for c in lsq_updates(lsq_sim.url)] == [
        [{"Attribute": "mx_City", "Value": city}] for city in ("A", "B", "C")
    ]


def test_an_older_event_never_overwrites_a_newer_field(tmp_path, make_service, lsq_sim) -> None:
    seed(lsq_sim.url, [{"EmailAddress": JANE}])
    service = make_service(
        routed_config(tmp_path, {"leadsquared": provider_entry("leadsquared", lsq_sim.url)})
    )
    post_generic(service.url, event({"city": "Paris"}, "2026-11-22T10:00:00Z"), "s1")
    service.drain()
    # Older (09:30Z written with a +02:00 offset) and late: city is stale, first_name is not.
    post_generic(service.url, event({"city": "Berlin", "first_name": "J"}, "2026-11-22T11:30:00+02:00"), "s2")
    service.drain()
    # Older and nothing else: no call at all, and the command still ends delivered (superseded).
    post_generic(service.url, event({"city": "Rome"}, "2026-11-22T09:00:00Z"), "s3")
    service.drain()
    bodies = [c["json"] for c in lsq_updates(lsq_sim.url)]
    assert bodies == [
        [{"Attribute": "mx_City", "Value": "Paris"}],
        [{"Attribute": "FirstName", "Value": "J"}],
    ]
    s3 = deliveries(service, "s3")["leadsquared"]
    assert s3["status"] == "delivered" and "superseded" in s3["last_error"]
    # A newer event for the same field goes through.
    post_generic(service.url, event({"city": "Oslo"}, "2026-11-22T10:00:00.500Z"), "s4")
    service.drain()
    assert lsq_updates(lsq_sim.url)[-1]["json"] == [{"Attribute": "mx_City", "Value": "Oslo"}]


@pytest.mark.slow
def test_429_waits_retry_after_without_using_the_retry_budget(tmp_path, make_service, lsq_sim) -> None:
    seed(lsq_sim.url, [{"EmailAddress": JANE}])
    fault(lsq_sim.url, "Lead.Update", 429, count=2, headers={"Retry-After": "1"})
    providers = {"leadsquared": provider_entry("leadsquared", lsq_sim.url)}
    service = make_service(routed_config(tmp_path, providers, dispatcher={"max_attempts": 1}))
    post_generic(service.url, event({"city": "Lima"}, "2026-11-22T10:00:00Z"), "t1")
    service.drain(seconds=8)
    calls = lsq_updates(lsq_sim.url)
    assert [c["status"] for c in calls] == [429, 429, 200]
    assert calls[1]["at"] - calls[0]["at"] >= 0.95 and calls[2]["at"] - calls[1]["at"] >= 0.95
    ledger = deliveries(service, "t1")["leadsquared"]
    assert ledger["status"] == "delivered" and ledger["attempts"] == 1


@pytest.mark.slow
def test_commands_arriving_behind_the_limiter_join_the_waiting_call(tmp_path, make_service, lsq_sim) -> None:
    ids = seed(lsq_sim.url, [{"EmailAddress": "a@example.com"}, {"EmailAddress": "b@example.com"}])
    providers = {
        "leadsquared": provider_entry("leadsquared", lsq_sim.url, rate_limit={"calls": 1, "per_seconds": 2})
    }
    service = make_service(routed_config(tmp_path, providers))
    dispatcher = service.dispatcher()
    try:
        post_generic(service.url, event({"city": "A1"}, "2026-11-22T10:00:00Z", lead={"id": ids[0]}), "a1")
        dispatcher.tick()
        wait_until(lambda: deliveries(service, "a1")["leadsquared"]["status"] == "delivered", timeout=5)
        post_generic(service.url, event({"city": "B1"}, "2026-11-22T10:00:01Z", lead={"id": ids[1]}), "b1")
        dispatcher.tick()  # b's group meets the limiter (a took the only slot) and is rescheduled
        wait_until(lambda: not dispatcher._busy, timeout=5)
        assert deliveries(service, "b1")["leadsquared"]["status"] == "pending"
        assert len(lsq_updates(lsq_sim.url)) == 1
        post_generic(
            service.url, event({"first_name": "Bea"}, "2026-11-22T10:00:02Z", lead={"id": ids[1]}), "b2"
        )
        post_generic(service.url, event({"city": "B3"}, "2026-11-22T10:00:03Z", lead={"id": ids[1]}), "b3")
        wait_until(
            lambda: (
                dispatcher.tick() is not None
                and deliveries(service, "b3")["leadsquared"]["status"] == "delivered"
            ),
            timeout=5,
        )
    finally:
        dispatcher.pool.shutdown(wait=True)
    calls = lsq_updates(lsq_sim.url)
    assert len(calls) == 2 and calls[1]["at"] - calls[0]["at"] >= 2
    assert calls[1]["query"]["leadId"] == ids[1]
    assert sorted(calls[1]["json"], key=lambda item: item["Attribute"]) == [
        {"Attribute": "FirstName", "Value": "Bea"},
        {"Attribute": "mx_City", "Value": "B3"},
    ]
    assert all(deliveries(service, m)["leadsquared"]["status"] == "delivered" for m in ("b1", "b2", "b3"))


@pytest.mark.slow
def test_lead_lookups_take_rate_limit_slots_of_their_own(tmp_path, make_service) -> None:
    sim = ServedApp(create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=(4, 1.0))).start()
    try:
        emails = [f"lead{n}@example.com" for n in range(6)]
        seed(sim.url, [{"EmailAddress": email} for email in emails])
        providers = {
            "leadsquared": provider_entry("leadsquared", sim.url, rate_limit={"calls": 4, "per_seconds": 1})
        }
        service = make_service(routed_config(tmp_path, providers))
        for n, email in enumerate(emails):
            post_generic(
                service.url, event({"city": f"C{n}"}, "2026-11-22T10:00:00Z", lead={"email": email}), f"l{n}"
            )
        service.drain(seconds=10)
        calls = sim_calls(sim.url)
        assert [c for c in calls if c["status"] == 429] == []
        assert len([c for c in calls if "GetByEmailaddress" in c["path"]]) == 6
        assert len([c for c in calls if "Lead.Update" in c["path"]]) == 6
        assert all(deliveries(service, f"l{n}")["leadsquared"]["status"] == "delivered" for n in range(6))
    finally:
        sim.stop()


def test_an_older_full_name_never_overwrites_newer_first_and_last_names(
    tmp_path, make_service, lsq_sim
) -> None:
    """Names are completed per command before stale protection: the older event's full name
    becomes first/last names with the older event's version, so they are superseded."""
    seed(lsq_sim.url, [{"EmailAddress": JANE}])
    service = make_service(
        routed_config(tmp_path, {"leadsquared": provider_entry("leadsquared", lsq_sim.url)})
    )
    post_generic(
        service.url, event({"first_name": "Jane", "last_name": "Doe"}, "2026-11-22T10:00:02Z"), "new"
    )
    service.drain()
    post_generic(service.url, event({"full_name": "Janet Old"}, "2026-11-22T10:00:01Z"), "old")
    service.drain()
    assert [call["json"] for call in lsq_updates(lsq_sim.url)] == [
        [{"Attribute": "FirstName", "Value": "Jane"}, {"Attribute": "LastName", "Value": "Doe"}]
    ]
    assert deliveries(service, "old")["leadsquared"]["last_error"].startswith("superseded")
