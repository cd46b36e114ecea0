"""The delivery ledger on both engines: due groups in lead order, double claims, owners and
orphans, polling leases, and field versions that only move forward under concurrency."""

from __future__ import annotations

import random
import threading
import time

from service.domain.statuses import DeliveryStatus
from service.state import SqlStateStore
from tests.state.conftest import StoreSpec, make_command


def test_due_groups_keep_lead_order_and_a_busy_lead_waits(store: SqlStateStore) -> None:
    for number, email in enumerate(["a@x.io", "b@x.io", "a@x.io"]):
        store.enqueue(make_command(number, email=email))
    now = time.time() + 1
    groups = store.claim_due_groups(now, limit=10, per_group=1)
    assert sorted(g.lead_key for g in groups) == ["email:a@x.io", "email:b@x.io"]
    first_a = next(g for g in groups if g.lead_key == "email:a@x.io")
    assert first_a.command_ids == ["generic:0"]
    # a@x.io's second command waits while its first is in flight.
    assert store.claim_due_groups(now, limit=10) == []
    store.record(first_a, DeliveryStatus.DELIVERED, now=now)
    assert [g.command_ids for g in store.claim_due_groups(now, limit=10)] == [["generic:2"]]


def test_a_delivery_is_never_claimed_twice_by_concurrent_dispatchers(store_spec: StoreSpec) -> None:
    writer = store_spec.open()
    for number in range(200):
        writer.enqueue(make_command(number))
    writer.close()
    stores = [store_spec.open(pool_size=2) for _ in range(4)]
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores))

    def dispatch(store: SqlStateStore, owner: str) -> None:
        barrier.wait()
        for _ in range(20):
            for group in store.claim_due_groups(time.time() + 1, limit=15, owner=owner):
                with lock:
                    claimed.extend(group.command_ids)

    threads = [threading.Thread(target=dispatch, args=(s, f"d{i}")) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert len(claimed) == len(set(claimed)) == 200


def test_orphans_are_another_owners_claims_without_a_recent_heartbeat(store: SqlStateStore) -> None:
    store.enqueue(make_command(1))
    start = time.time()
    [group] = store.claim_due_groups(start + 1, limit=10, owner="alive")
    # Its own claim is never an orphan to a live dispatcher, whatever the heartbeat says.
    assert store.orphaned_in_flight(owner="alive", dead_before=start + 100) == []
    store.heartbeat("alive", start + 50)
    assert store.orphaned_in_flight(owner="other", dead_before=start + 40) == []
    # The owner died: no heartbeat after start + 50.
    [orphan] = store.orphaned_in_flight(owner="other", dead_before=start + 60)
    assert orphan.command_ids == group.command_ids and orphan.deliveries[0].status == "in_flight"
    # Embedded start-up (one dispatcher per file): every in-flight row is an orphan.
    assert [g.command_ids for g in store.orphaned_in_flight()] == [group.command_ids]
    store.record(group, DeliveryStatus.DELIVERED, now=start + 61)
    assert store.orphaned_in_flight() == []


def test_retry_outcome_counts_attempts_and_waits_for_its_time(store: SqlStateStore) -> None:
    store.enqueue(make_command(1))
    now = time.time() + 1
    [group] = store.claim_due_groups(now, limit=10)
    store.record(
        group, DeliveryStatus.PENDING, now=now, error="HTTP 503", stage="provider", next_attempt_at=now + 60
    )
    assert store.claim_due_groups(now + 30, limit=10) == []
    [again] = store.claim_due_groups(now + 61, limit=10)
    assert again.deliveries[0].attempts == 1
    event = store.get_event("generic:1")
    assert event["deliveries"][0]["last_error"] == "HTTP 503"
    assert [t["status"] for t in event["timeline"]] == ["received", "pending"]


def test_polling_is_leased_to_one_poller(store: SqlStateStore) -> None:
    store.enqueue(make_command(1))
    now = time.time() + 1
    [group] = store.claim_due_groups(now, limit=10)
    store.record(group, DeliveryStatus.POLLING, now=now, request_id="req-1", next_attempt_at=now)
    [polled] = store.polling_deliveries(now + 1, limit=10)
    assert polled.deliveries[0].request_id == "req-1"
    assert store.polling_deliveries(now + 2, limit=10) == []  # leased
    store.record(
        polled,
        DeliveryStatus.POLLING,
        now=now + 2,
        count_attempt=False,
        count_poll=True,
        next_attempt_at=now + 2,
    )
    [again] = store.polling_deliveries(now + 3, limit=10)
    assert again.deliveries[0].polls == 1


def test_field_versions_only_move_forward_under_concurrency(store_spec: StoreSpec) -> None:
    stores = [store_spec.open(pool_size=2) for _ in range(6)]
    stamps = [f"2026-11-22T10:{minute:02d}:00.000000Z" for minute in range(60)]
    barrier = threading.Barrier(len(stores))

    def write(store: SqlStateStore, seed: int) -> None:
        from service.domain.state import DeliveryGroup

        shuffled = random.Random(seed).sample(stamps, len(stamps))
        barrier.wait()
        for stamp in shuffled:
            store.record(
                DeliveryGroup(provider="leadsquared", lead_key="email:v@x.io"),
                DeliveryStatus.DELIVERED,
                now=time.time(),
                field_versions={"city": stamp, "status": stamp},
            )

    threads = [threading.Thread(target=write, args=(s, i)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[0].applied_versions("email:v@x.io", "leadsquared") == {
        "city": stamps[-1],
        "status": stamps[-1],
    }
    for store in stores:
        store.close()


def test_queue_stats_count_open_deliveries(store: SqlStateStore) -> None:
    store.enqueue(make_command(1, providers=("leadsquared", "octanist")))
    stats = store.queue_stats()
    assert stats["depth"] == 2.0 and stats["oldest_age_seconds"] >= 0
