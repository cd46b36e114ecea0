"""Provider controls, lead claims across owners, retention and the unavailable database, on
both engines."""

from __future__ import annotations

import time

import pytest

from service.domain.state import ProviderControl, StateUnavailable
from service.domain.statuses import DeliveryStatus
from service.state import SqlStateStore
from service.state.engine import PostgresEngine, SQLiteEngine
from tests.state.conftest import make_command

DAY = 86400.0


@pytest.mark.slow
def test_provider_controls_round_trip_and_update_in_place(store: SqlStateStore) -> None:
    assert store.provider_controls() == {}
    store.put_provider_control(
        ProviderControl("leadsquared", paused=True, reason="maintenance", updated_at=10.0)
    )
    store.put_provider_control(
        ProviderControl(
            "octanist", breaker="open", opened_at=5.0, next_probe_at=35.0, probes=2, updated_at=6.0
        )
    )
    store.put_provider_control(ProviderControl("leadsquared", paused=False, updated_at=11.0))
    controls = store.provider_controls()
    assert controls["leadsquared"] == ProviderControl("leadsquared", updated_at=11.0)
    assert controls["octanist"] == ProviderControl(
        "octanist", breaker="open", opened_at=5.0, next_probe_at=35.0, probes=2, updated_at=6.0
    )


def test_lead_claims_are_exclusive_renewable_and_lapse(store: SqlStateStore) -> None:
    assert store.claim_lead("leadsquared", "email:a@x.io", "d1", ttl_seconds=30)
    assert not store.claim_lead("leadsquared", "email:a@x.io", "d2", ttl_seconds=30)
    assert store.claim_lead("leadsquared", "email:a@x.io", "d1", ttl_seconds=30)  # renewal
    assert store.claim_lead("octanist", "email:a@x.io", "d2", ttl_seconds=30)  # per provider
    store.release_lead("leadsquared", "email:a@x.io", "d2")  # not the owner: no effect
    assert not store.claim_lead("leadsquared", "email:a@x.io", "d2", ttl_seconds=30)
    store.release_lead("leadsquared", "email:a@x.io", "d1")
    assert store.claim_lead("leadsquared", "email:a@x.io", "d2", ttl_seconds=0.2)
    deadline = time.time() + 5
    while not store.claim_lead("leadsquared", "email:a@x.io", "d3", ttl_seconds=30):
        assert time.time() < deadline, "a dead owner's claim never lapsed"
        time.sleep(0.05)


def _finish(store: SqlStateStore, status: str, now: float) -> None:
    for group in store.claim_due_groups(now + 1, limit=1000, per_group=1):
        store.record(group, status, now=now)


def test_prune_removes_old_finished_commands_and_keeps_the_rest(store: SqlStateStore) -> None:
    now = time.time()
    for number in range(7):
        store.enqueue(make_command(number))
    _finish(store, DeliveryStatus.DELIVERED, now)  # 0..6 delivered now
    store.enqueue(make_command(10))
    store.enqueue(make_command(11))
    _finish(store, DeliveryStatus.DEAD_LETTERED, now)  # 10, 11 dead letters
    store.enqueue(make_command(20))  # pending forever: never pruned
    store.claim("cmd:old", 1)
    store.confirm("cmd:old", 1)
    store.claim("cmd:fresh", 60)
    store.confirm("cmd:fresh", int(30 * DAY))

    # 8 days on: delivered ones go (in batches of 3), dead letters and pending stay.
    removed = store.prune(now + 8 * DAY, delivered_days=7, dead_letter_days=30, batch=3)
    assert removed >= 7 * 3  # history, delivery and command row of each
    left = {e["command_id"] for e in store.list_events()}
    assert left == {"generic:10", "generic:11", "generic:20"}
    assert store.claim("cmd:old", 60) == "claimed"  # the expired key went
    assert store.claim("cmd:fresh", 60) == "duplicate"
    # 31 days on: dead letters go too; the pending command stays, with its timeline.
    store.prune(now + 31 * DAY, delivered_days=7, dead_letter_days=30, batch=3)
    assert {e["command_id"] for e in store.list_events()} == {"generic:20"}
    assert store.get_event("generic:20")["status"] == "pending"


@pytest.mark.slow
def test_an_unreachable_database_raises_state_unavailable(tmp_path: object) -> None:
    engine = PostgresEngine(
        "postgresql://postgres@127.0.0.1:1/none",
        pool_size=1,
        connect_timeout_seconds=1,
        statement_timeout_ms=500,
    )
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        SqlStateStore(engine).check_writable()
    assert time.monotonic() - started < 10
    engine.close()
    with pytest.raises(StateUnavailable):
        SqlStateStore(SQLiteEngine(str(tmp_path))).check_writable()  # a directory, not a database file


def test_a_statement_over_the_timeout_raises_state_unavailable(postgres_database: object) -> None:
    engine = PostgresEngine(postgres_database.conninfo, pool_size=1, statement_timeout_ms=200)  # type: ignore[attr-defined]
    with pytest.raises(StateUnavailable), engine.transaction() as db:
        db.execute("SELECT pg_sleep(2)")
    engine.close()


@pytest.mark.slow
def test_the_background_pruner_removes_expired_rows_on_its_own(store: SqlStateStore) -> None:
    from service.state.retention import RetentionPruner

    store.enqueue(make_command(1))
    _finish(store, DeliveryStatus.DELIVERED, time.time())
    store.enqueue(make_command(2))  # still pending: stays
    pruner = RetentionPruner(
        store,
        {"delivered_days": 0.5 / DAY, "dead_letter_days": 30, "prune_interval_seconds": 0.1, "batch": 10},
    )
    pruner.start()
    try:
        deadline = time.monotonic() + 10
        while store.get_event("generic:1") is not None:
            assert time.monotonic() < deadline, "the pruner never removed the delivered command"
            time.sleep(0.05)
    finally:
        pruner.stop()
    assert store.get_event("generic:2")["status"] == "pending"
