"""The dispatcher's per-chunk ledger calls on both engines: many groups claimed in one
transaction (a lead held elsewhere claims nothing of its group), their delivered outcomes
written in one, and claims of groups that did not run given back so that nothing in flight
without an outcome is ever resent unconfirmed."""

from __future__ import annotations

import time

from service.domain.state import Delivery, DeliveryGroup
from service.state import SqlStateStore
from service.state.dispatch_ledger import (
    BUSY,
    CLAIMED,
    DONE,
    ORPHAN,
    UNRECORDED,
    DeliveredGroup,
    GroupRequest,
)
from tests.state.conftest import make_command

TTL = 5.0
LSQ = "leadsquared"


def request(command_ids: list[str], lead_key: str, kind: str = "deliver") -> GroupRequest:
    return GroupRequest(LSQ, lead_key, command_ids, kind, "acct")


def verdicts(found: tuple | None) -> list[str] | None:
    return None if found is None else [c.verdict for c in found[0]]


def test_claim_groups_claims_every_group_whose_lead_it_wins(store: SqlStateStore) -> None:
    commands = [make_command(n, lead_id=f"L{n}") for n in range(4)]
    store.register([(c, 1.0) for c in commands])
    now = time.time()
    assert store.claim_lead("acct", commands[1].lead_key, "other", TTL)  # held elsewhere
    store.record(
        DeliveryGroup(
            LSQ, commands[2].lead_key, [Delivery(command=commands[2], provider=LSQ, seq=2, attempts=0)]
        ),
        "delivered",
        now=now,
        field_versions={"city": "2026-11-22T10:00:00+00:00"},
    )
    found = store.claim_groups([request([c.command_id], c.lead_key) for c in commands], "a", now, TTL)
    assert [verdicts(f) for f in found] == [[CLAIMED], None, [DONE], [CLAIMED]]
    assert found[2] is not None and found[2][1] == {"city": "2026-11-22T10:00:00+00:00"}
    # Nothing of the group whose lead was held was claimed: its row is still open.
    again = store.claim_deliveries([commands[1].command_id], LSQ, "b", "deliver", now, now - TTL)
    assert [c.verdict for c in again] == [CLAIMED]
    # The leads it won are its own now.
    assert not store.claim_lead("acct", commands[0].lead_key, "b", TTL)


def test_claim_groups_keeps_the_slow_verdicts_and_reads_a_record_twice_as_unrecorded(
    store: SqlStateStore,
) -> None:
    first, second = make_command(1, lead_id="L1"), make_command(2, lead_id="L2")
    store.register([(first, 1.0), (second, 1.0)])
    now = time.time()
    store.claim_deliveries([second.command_id], LSQ, "dead", "deliver", now - 3 * TTL, now - 4 * TTL)
    found = store.claim_groups(
        [
            request([first.command_id, first.command_id], first.lead_key),
            request([second.command_id], second.lead_key),
        ],
        "a",
        now,
        TTL,
    )
    assert [verdicts(f) for f in found] == [[CLAIMED, UNRECORDED], [ORPHAN]]
    assert [
        c.verdict for c in store.claim_deliveries([second.command_id], LSQ, "b", "deliver", now, now - TTL)
    ] == [BUSY]


def test_record_delivered_writes_every_group_and_releases_its_lead(store: SqlStateStore) -> None:
    commands = [make_command(n, lead_id=f"L{n}") for n in range(3)]
    store.register([(c, 1.0) for c in commands])
    now = time.time()
    store.claim_groups([request([c.command_id], c.lead_key) for c in commands], "a", now, TTL)
    store.record_delivered(
        [
            DeliveredGroup(
                DeliveryGroup(LSQ, c.lead_key, [Delivery(command=c, provider=LSQ, seq=n, attempts=0)]),
                "acct",
                None,
                None,
                {"status_code": 200},
                True,
                {"note": f"2026-11-22T10:00:0{n}+00:00"},
            )
            for n, c in enumerate(commands)
        ],
        "a",
        now + 1,
    )
    for n, c in enumerate(commands):
        event = store.get_event(c.command_id)
        assert event is not None
        (delivery,) = event["deliveries"]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1
        assert store.applied_versions(c.lead_key, LSQ) == {"note": f"2026-11-22T10:00:0{n}+00:00"}
        assert store.claim_lead("acct", c.lead_key, "b", TTL)  # released with the outcome
    claims = store.claim_deliveries([c.command_id for c in commands], LSQ, "b", "deliver", now + 2, now - TTL)
    assert [c.verdict for c in claims] == [DONE] * 3


def test_hand_back_reopens_what_it_claimed_and_leaves_the_unconfirmed_to_be_confirmed(
    store: SqlStateStore,
) -> None:
    fresh, orphan, poll = (
        make_command(1, lead_id="L1"),
        make_command(2, lead_id="L2"),
        make_command(3, lead_id="L3"),
    )
    store.register([(c, 1.0) for c in (fresh, orphan, poll)])
    now = time.time()
    store.claim_deliveries([orphan.command_id], LSQ, "dead", "deliver", now - 3 * TTL, now - 4 * TTL)
    with store.transaction() as db:  # an accepted async call waits for its status poll
        db.execute("UPDATE deliveries SET status = 'polling' WHERE command_id = ?", (poll.command_id,))
    found = store.claim_groups(
        [
            request([fresh.command_id], fresh.lead_key),
            request([orphan.command_id], orphan.lead_key),
            request([poll.command_id], poll.lead_key, kind="poll"),
        ],
        "a",
        now,
        TTL,
    )
    assert [verdicts(f) for f in found] == [[CLAIMED], [ORPHAN], [CLAIMED]]
    store.hand_back(
        [
            (fresh.command_id, LSQ, "deliver", CLAIMED),
            (orphan.command_id, LSQ, "deliver", ORPHAN),
            (poll.command_id, LSQ, "poll", CLAIMED),
        ],
        [("acct", c.lead_key) for c in (fresh, orphan, poll)],
        "a",
        now,
    )
    # Even its own dispatcher, running the orphan again, must confirm it first.
    found = store.claim_groups(
        [
            request([fresh.command_id], fresh.lead_key),
            request([orphan.command_id], orphan.lead_key),
            request([poll.command_id], poll.lead_key, kind="poll"),
        ],
        "a",
        now + 1,
        TTL,
    )
    assert [verdicts(f) for f in found] == [[CLAIMED], [ORPHAN], [CLAIMED]]


def test_register_writes_a_batch_once_each_with_its_deliveries_and_history(store: SqlStateStore) -> None:
    on_record = make_command(0)
    store.enqueue(on_record)  # the web wrote it: left as it is
    batch = [make_command(n, providers=("leadsquared", "octanist")) for n in range(1, 251)]
    store.register([(on_record, 5.0), *((c, 1.0) for c in batch), (batch[0], 9.0)])
    events = store.list_events(limit=1000)
    rows = sorted((e["command_id"], e["provider"]) for e in events)
    assert rows == sorted(
        [(on_record.command_id, "leadsquared")]
        + [(c.command_id, p) for c in batch for p in ("leadsquared", "octanist")]
    )
    first = store.get_event(batch[0].command_id)
    assert first is not None
    assert sorted(d["provider"] for d in first["deliveries"]) == ["leadsquared", "octanist"]
    assert all(d["status"] == "pending" for d in first["deliveries"])
    assert [h["status"] for h in first["timeline"]] == ["received"]
    assert first["received_at"] == store.get_event(batch[1].command_id)["received_at"]  # the first read's
    kept = store.get_event(on_record.command_id)
    assert kept is not None and [d["provider"] for d in kept["deliveries"]] == ["leadsquared"]
