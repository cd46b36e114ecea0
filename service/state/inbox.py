"""The inbox: where the embedded store takes an accepted command, as one row, before it is moved
on to the queue tables (command, deliveries, history, dedup key) in batches.

Why: an accept is answered only after its commit, and every row and index entry it writes is
paid for inside the write lock that every web worker takes in turn. The queue tables need
about seventeen index entries per command; the inbox needs two (its id and the command id).
Moving many commands at once shares pages and statements between them, so the same rows cost
a fraction of their per-accept price.

The inbox row is the command's dedup claim: its command id is unique there, and the move
writes the claim's dedup key. Anything that reads the queue tables moves the inbox first
(`drain_inbox`): the dispatcher before it claims, the event log before it answers, retention
before it prunes. An inbox row is durable like any other; a crash before the move loses
nothing, the next drain moves it.

SQLite only: there every writer takes the one write lock in turn, so a repeat of a command
cannot slip between its claim check and its inbox row. PostgreSQL writers run side by side,
and an accept there keeps taking its claim with one atomic upsert (the direct path).
"""

from __future__ import annotations

import json
import time
from typing import Any

from service.domain.command import LeadUpdateCommand
from service.state.dedup_keys import CONFIRM_CLAIM

DRAIN_CHUNK = 1000  # rows moved per transaction: bounds how long one move holds the write lock

# The queue's own statements, shared with the direct path (`SqlStateStore._queue`).
INSERT_PENDING_DELIVERY = (
    "INSERT INTO deliveries (command_id, provider, seq, lead_key, status, next_attempt_at, updated_at)"
    " VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (command_id, provider) DO NOTHING"
)
INSERT_RECEIVED = (
    "INSERT INTO history (command_id, provider, at, status, detail) VALUES (?, NULL, ?, 'received', ?)"
)

_INBOX_COLUMNS = (
    "command_id, claim_key, claim_expires_at, lead_key, source, event_type, occurred_at, received_at,"
    " body, lead_id, lead_email, lead_phone, providers"
)


class InboxMixin:
    dialect: Any
    engine: Any

    def transaction(self) -> Any: ...

    def read(self) -> Any: ...

    @property
    def claims_in_inbox(self) -> bool:
        """Whether accepts go through the inbox (`enqueue_claimed`): on SQLite."""
        return bool(self.dialect.name == "sqlite")

    def enqueue_claimed(self, command: LeadUpdateCommand, claim_key: str, window_seconds: int) -> bool:
        """Queue the command durably (in the caller's transaction) and take its dedup claim
        `claim_key` for `window_seconds`; False (nothing written) when the claim is taken: the
        same command id is in the inbox (not yet moved on) or its dedup key is live. One
        statement: each statement costs the writer a wait for the GIL among busy web threads."""
        now = time.time()
        lead = command.lead
        with self.transaction() as db:
            row = db.execute(
                f"INSERT INTO inbox ({_INBOX_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                " WHERE NOT EXISTS (SELECT 1 FROM dedup WHERE key = ? AND expires_at > ?)"
                " ON CONFLICT (command_id) DO NOTHING RETURNING id",
                (
                    command.command_id, claim_key, now + window_seconds, command.lead_key, command.source,
                    command.event_type, command.occurred_at.isoformat(), now, command.to_json(),
                    lead.id, lead.email, lead.phone, json.dumps(list(command.providers)), claim_key, now,
                ),
            ).fetchone()  # fmt: skip
        return row is not None

    def note_inbox_duplicate(self, db: Any, command_id: str) -> None:
        """A repeat of a command still in the inbox: counted there, carried over by the move."""
        db.execute("UPDATE inbox SET duplicates = duplicates + 1 WHERE command_id = ?", (command_id,))

    def drain_inbox(self) -> int:
        """Move every inbox row on to the queue tables, oldest first; returns how many moved."""
        if not self.claims_in_inbox:
            return 0
        with self.read() as db:
            if db.execute("SELECT 1 AS x FROM inbox LIMIT 1").fetchone() is None:
                return 0
        moved = 0
        while True:
            count = self._drain_chunk(DRAIN_CHUNK)
            moved += count
            if count < DRAIN_CHUNK:
                return moved

    def _drain_chunk(self, limit: int) -> int:
        # No flush of its own: the rows it moves are on disk in the inbox already, and the
        # move is one transaction, so a move lost in a power cut leaves them there to move
        # again. The next durable commit's flush (the dispatcher's claim, for one) covers it.
        # On the dispatcher's path from accept to provider call this is one disk wait fewer.
        with self.engine.transaction(sync=False) as db:
            # Deleting first claims the rows: a mover in another process, waiting on the write
            # lock, then finds them gone, so a committed move is never repeated.
            rows = sorted(
                db.execute(
                    "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox ORDER BY id LIMIT ?)"
                    f" RETURNING id, duplicates, {_INBOX_COLUMNS}",
                    (limit,),
                ).fetchall(),
                key=lambda row: row["id"],
            )
            if not rows:
                return 0
            last_seq = db.execute("SELECT COALESCE(MAX(seq), 0) AS n FROM commands").fetchone()["n"]
            db.executemany(
                "INSERT INTO commands (command_id, lead_key, source, event_type, occurred_at, received_at, body,"
                " lead_id, lead_email, lead_phone, duplicates) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (command_id) DO NOTHING",
                [
                    (r["command_id"], r["lead_key"], r["source"], r["event_type"], r["occurred_at"],
                     r["received_at"], r["body"], r["lead_id"], r["lead_email"], r["lead_phone"], r["duplicates"])
                    for r in rows
                ],
            )  # fmt: skip
            by_id = {r["command_id"]: r for r in rows}
            queued = {
                row["command_id"]: row["seq"]
                for row in db.execute(
                    "SELECT command_id, seq FROM commands WHERE seq > ?", (last_seq,)
                ).fetchall()
                if row["command_id"] in by_id
            }
            deliveries, history = [], []
            for r in rows:
                seq = queued.get(r["command_id"])
                if seq is None:
                    continue
                at = r["received_at"]
                deliveries.extend(
                    (r["command_id"], provider, seq, r["lead_key"], at, at)
                    for provider in json.loads(r["providers"])
                )
                history.append((r["command_id"], at, r["source"]))
            if deliveries:
                db.executemany(INSERT_PENDING_DELIVERY, deliveries)
            if history:
                db.executemany(INSERT_RECEIVED, history)
            # Still on record from long ago (its dedup key expired first): a repeat, not queued.
            repeats = [(1 + r["duplicates"], r["command_id"]) for r in rows if r["command_id"] not in queued]
            if repeats:
                db.executemany(
                    "UPDATE commands SET duplicates = duplicates + ? WHERE command_id = ?", repeats
                )
            db.executemany(CONFIRM_CLAIM, [(r["claim_key"], r["claim_expires_at"]) for r in rows])
        return len(rows)
