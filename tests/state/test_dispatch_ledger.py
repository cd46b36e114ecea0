"""The Kafka dispatcher's ledger claims on both engines: owner and heartbeat decide, never a
process-local guess; registering a command twice changes nothing."""

from __future__ import annotations

import threading
import time

from service.domain.state import Delivery, DeliveryGroup
from service.state import SqlStateStore
from service.state.dispatch_ledger import BUSY, CLAIMED, DONE, ORPHAN, UNRECORDED
from tests.state.conftest import StoreSpec, make_command

TTL = 5.0


def verdicts(
    store: SqlStateStore, ids: list[str], owner: str, now: float, kind: str = "deliver"
) -> list[str]:
    claims = store.claim_deliveries(ids, "leadsquared", owner, kind, now, stale_before=now - TTL)
    return [c.verdict for c in claims]


def test_register_is_idempotent_and_keeps_what_the_web_wrote(store: SqlStateStore) -> None:
    first = make_command(1)
    store.enqueue(first)
    store.register([(first, 1.0), (make_command(2), 2.0)])
    store.register([(make_command(2), 3.0)])
    assert [e["command_id"] for e in store.list_events()] == ["generic:1", "generic:2"]
    assert store.get_event("generic:1")["deliveries"][0]["status"] == "pending"


def test_claims_decide_by_owner_and_heartbeat(store: SqlStateStore) -> None:
    store.register([(make_command(n), 1.0) for n in range(3)])
    now = time.time()
    assert verdicts(store, ["generic:0", "generic:1"], "a", now) == [CLAIMED, CLAIMED]
    # Another live owner's claim is busy; our own, found again, is an unrecorded attempt of ours.
    assert verdicts(store, ["generic:0"], "b", now + 1) == [BUSY]
    assert verdicts(store, ["generic:0"], "a", now + 1) == [UNRECORDED]
    store.renew_owner("a", [], now + TTL, TTL)  # a's heartbeat keeps its claims its own
    assert verdicts(store, ["generic:1"], "b", now + TTL + 1) == [BUSY]
    # a stops beating: its claim becomes b's orphan, exactly once.
    assert verdicts(store, ["generic:1"], "b", now + 2 * TTL + 1) == [ORPHAN]
    assert verdicts(store, ["generic:1"], "c", now + 2 * TTL + 2) == [BUSY]
    # A poll record for a delivery waiting to be sent, and any record for a settled one, have
    # nothing to do.
    assert verdicts(store, ["generic:2"], "a", now, kind="poll") == [DONE]
    group = store.claim_due_groups(now + 10, 10)
    assert [d.command.command_id for g in group for d in g.deliveries] == ["generic:2"]
    store.record(group[0], "delivered", now=now + 10)
    assert verdicts(store, ["generic:2"], "a", now + 11) == [DONE]


def test_two_dispatchers_racing_for_one_delivery_claim_it_once(store_spec: StoreSpec) -> None:
    setup = store_spec.open()
    setup.register([(make_command(n), 1.0) for n in range(50)])
    setup.close()
    ids = [f"generic:{n}" for n in range(50)]
    won: dict[str, list[str]] = {}

    def race(owner: str) -> None:
        store = store_spec.open(pool_size=2)
        try:
            now = time.time()
            claims = store.claim_deliveries(ids, "leadsquared", owner, "deliver", now, now - TTL)
            won[owner] = [i for i, c in zip(ids, claims, strict=True) if c.verdict == CLAIMED]
        finally:
            store.close()

    threads = [threading.Thread(target=race, args=(owner,)) for owner in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [i for owner in won for i in won[owner]]
    assert sorted(taken) == sorted(ids)  # each exactly once


def test_a_lead_claim_is_held_by_one_owner_renewed_by_its_heartbeat(store: SqlStateStore) -> None:
    assert store.claim_lead("leadsquared", "email:a@example.com", "a", 0.5)
    assert not store.claim_lead("leadsquared", "email:a@example.com", "b", 0.5)
    store.renew_owner("a", [("leadsquared", "email:a@example.com")], time.time(), 60.0)
    time.sleep(0.6)  # past the first expiry: the renewal is what keeps it
    assert not store.claim_lead("leadsquared", "email:a@example.com", "b", 0.5)
    store.forget_owner("a")
    assert store.claim_lead("leadsquared", "email:a@example.com", "b", 0.5)


def test_claim_group_takes_lead_deliveries_and_versions_together_or_nothing(store: SqlStateStore) -> None:
    first, second = make_command(1, lead_id="L1"), make_command(2, lead_id="L1")
    store.register([(first, 1.0), (second, 2.0)])
    now = time.time()
    found = store.claim_group("leadsquared", first.lead_key, [first.command_id], "a", "deliver", now, TTL)
    assert found is not None
    claims, applied = found
    assert [c.verdict for c in claims] == [CLAIMED] and applied == {}
    # Another owner finds the lead held: it claims nothing, not even a delivery.
    ids = [second.command_id]
    assert store.claim_group("leadsquared", first.lead_key, ids, "b", "deliver", now, TTL) is None
    assert verdicts(store, ids, "c", now) == [CLAIMED]  # b's attempt left the row pending
    store.renew_owner("c", [], now, TTL)
    # The outcome and the lead's release in one transaction; the next claim reads the versions.
    with store.transaction():
        delivery = Delivery(command=first, provider="leadsquared", seq=1, attempts=0)
        store.record(
            DeliveryGroup("leadsquared", first.lead_key, [delivery]),
            "delivered",
            now=now,
            field_versions={"city": "2026-11-22T10:00:00+00:00"},
        )
        store.release_lead("leadsquared", first.lead_key, "a")
    found = store.claim_group("leadsquared", first.lead_key, ids, "b", "deliver", now, TTL)
    assert found is not None
    claims, applied = found
    assert [c.verdict for c in claims] == [BUSY]  # c holds it, alive
    assert applied == {"city": "2026-11-22T10:00:00+00:00"}


def test_a_lead_claim_on_an_account_serialises_the_providers_that_share_it(store: SqlStateStore) -> None:
    """LeadSquared sync and async with one set of keys update the same CRM record: a group of
    one holds the lead for the other too when both claim on the account."""
    command = make_command(3, lead_id="L3")
    store.register([(command, 1.0)])
    now = time.time()
    ids = [command.command_id]
    held = store.claim_group(
        "leadsquared", command.lead_key, ids, "a", "deliver", now, TTL, lead_scope="acct-1"
    )
    assert held is not None
    other = store.claim_group(
        "lsq_async", command.lead_key, ids, "b", "deliver", now, TTL, lead_scope="acct-1"
    )
    assert other is None  # same account, same lead: it waits
    elsewhere = store.claim_group(
        "octanist", command.lead_key, ids, "b", "deliver", now, TTL, lead_scope="acct-2"
    )
    assert elsewhere is not None  # another account is not held up
    store.release_lead("acct-1", command.lead_key, "a")
    assert store.claim_group(
        "lsq_async", command.lead_key, ids, "b", "deliver", now, TTL, lead_scope="acct-1"
    )
