"""The event log on both engines: filters (status, provider, source, event type, lead by id,
email or phone, time), cursor pagination, show with its timeline, replay and replay by filter,
and the overview."""

from __future__ import annotations

import time

from service.domain.state import EventFilter
from service.domain.statuses import DeliveryStatus
from service.state import SqlStateStore
from tests.state.conftest import make_command


def _dead_letter(store: SqlStateStore, command_id: str, provider: str = "leadsquared") -> None:
    now = time.time()
    for group in store.claim_due_groups(now + 1, limit=1000):
        if command_id in group.command_ids and group.provider == provider:
            store.record(group, DeliveryStatus.DEAD_LETTERED, now=now, error="HTTP 400", stage="provider")
        else:
            store.record(group, DeliveryStatus.PENDING, now=now, count_attempt=False)


def test_filters_match_each_field_and_the_lead_by_any_identity(store: SqlStateStore) -> None:
    store.enqueue(make_command(1, email="Jane@Example.com", phone="+14155550100"))
    store.enqueue(make_command(2, lead_id="LEAD-7", source="typeform", event_type="form.updated"))
    store.enqueue(make_command(3, phone="+442071838750", providers=("leadsquared", "octanist")))

    def ids(**kwargs: object) -> list[tuple[str, str]]:
        return [(e["command_id"], e["provider"]) for e in store.list_events(EventFilter(**kwargs))]  # type: ignore[arg-type]

    assert ids(lead="jane@example.com") == [("generic:1", "leadsquared")]
    assert ids(lead=" JANE@example.COM ") == [("generic:1", "leadsquared")]
    assert ids(lead="+14155550100") == [("generic:1", "leadsquared")]
    assert ids(lead="LEAD-7") == [("typeform:2", "leadsquared")]
    assert ids(source="typeform") == [("typeform:2", "leadsquared")]
    assert ids(event_type="form.updated") == [("typeform:2", "leadsquared")]
    assert ids(provider="octanist") == [("generic:3", "octanist")]
    assert ids(lead="nobody@example.com") == []
    assert len(ids(since=time.time() - 60, until=time.time() + 60)) == 4
    assert ids(since=time.time() + 60) == []
    _dead_letter(store, "generic:3", "octanist")
    assert ids(status="dead_lettered") == [("generic:3", "octanist")]
    event = store.list_events(EventFilter(lead="+14155550100"))[0]
    assert event["lead"] == {"id": None, "email": "jane@example.com", "phone": "+14155550100"}


def test_cursor_pagination_walks_every_row_once(store: SqlStateStore) -> None:
    for number in range(25):
        store.enqueue(make_command(number))
    seen: list[str] = []
    after = 0
    while True:
        page = store.list_events(EventFilter(), limit=10, after_seq=after)
        if not page:
            break
        seen.extend(e["command_id"] for e in page)
        after = page[-1]["seq"]
    assert seen == [f"generic:{n}" for n in range(25)]


def test_show_has_a_timeline_and_replay_resets_a_dead_letter(store: SqlStateStore) -> None:
    store.enqueue(make_command(1))
    _dead_letter(store, "generic:1")
    event = store.get_event("generic:1")
    assert event is not None and event["status"] == "dead_lettered"
    assert store.replay("generic:1") == ["leadsquared"]
    event = store.get_event("generic:1")
    assert event["status"] == "pending" and event["deliveries"][0]["attempts"] == 0
    assert event["deliveries"][0]["replays"] == 1
    assert [(t["status"], t["detail"]) for t in event["timeline"]] == [
        ("received", "generic"),
        ("dead_lettered", "provider: HTTP 400"),
        ("replayed", None),
    ]
    assert store.get_event("generic:404") is None


def test_replay_adds_routes_to_an_unrouted_command(store: SqlStateStore) -> None:
    store.enqueue(make_command(1, providers=()))
    assert store.get_event("generic:1")["status"] == "unrouted"
    assert store.replay("generic:1", routed=["octanist"]) == ["octanist"]


def test_replay_matching_dry_run_counts_and_the_real_run_resets(store: SqlStateStore) -> None:
    for number in range(6):
        store.enqueue(make_command(number, source="typeform" if number % 2 else "generic"))
    store.enqueue(make_command(99, providers=()))
    for command_id in ("generic:0", "typeform:1", "generic:2"):
        _dead_letter(store, command_id)
    wanted = EventFilter(source="generic")
    assert store.replay_matching(wanted, dry_run=True) == {"events": 2, "deliveries": 2}
    assert len(store.list_events(EventFilter(status="dead_lettered"))) == 3  # a dry run changes nothing
    routes = lambda source, event_type: ["octanist"]  # noqa: E731
    assert store.replay_matching(wanted, dry_run=False, routed_for=routes) == {"events": 3, "deliveries": 3}
    assert [e["command_id"] for e in store.list_events(EventFilter(status="dead_lettered"))] == ["typeform:1"]
    assert store.get_event("generic:99")["deliveries"][0]["provider"] == "octanist"


def test_overview_counts_per_provider_per_source_and_per_minute(store: SqlStateStore) -> None:
    for number in range(3):
        store.enqueue(make_command(number))
    store.note_duplicate("generic:0")
    now = time.time()
    groups = store.claim_due_groups(now + 1, limit=10)
    store.record(groups[0], DeliveryStatus.DELIVERED, now=now)
    store.record(groups[1], DeliveryStatus.DEAD_LETTERED, now=now, error="HTTP 400", stage="provider")
    store.record(
        groups[2],
        DeliveryStatus.PENDING,
        now=now,
        error="HTTP 503",
        stage="provider",
        next_attempt_at=now + 9,
    )
    overview = store.overview(now + 1)
    lsq = overview["providers"]["leadsquared"]
    assert lsq["delivered_last_hour"] == 1 and lsq["dead_letters"] == 1 and lsq["pending"] == 1
    assert lsq["failures_by_stage"] == {"provider": 2}
    assert lsq["oldest_pending_age_seconds"] >= 0 and lsq["polling"] == 0
    assert overview["sources"] == {"generic": {"accepted": 3, "duplicates": 1}}
    assert len(overview["series"]) == 60
    assert sum(m["delivered"] for m in overview["series"]) == 1
    assert sum(m["failed"] for m in overview["series"]) == 2
