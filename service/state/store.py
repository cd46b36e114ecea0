"""The one SQL implementation of the state interface: the store and the command queue's writes
(the inbox, the delivery rows, dedup keys, the event log, controls, rate-limit samples and the
Kafka dispatch ledger are mixed in from sibling modules).

A command row is written once; each delivery row moves
`pending -> in_flight -> delivered | pending (retry) | polling | dead_lettered`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from service.domain.command import LeadUpdateCommand
from service.state.controls import ControlsMixin
from service.state.dedup_keys import DedupKeysMixin
from service.state.deliveries import DeliveriesMixin
from service.state.dispatch_ledger import DispatchLedgerMixin
from service.state.engine import Engine, Session
from service.state.event_log import EventLogMixin
from service.state.inbox import INSERT_PENDING_DELIVERY, INSERT_RECEIVED, InboxMixin
from service.state.rate_limit_samples import RateLimitSamplesMixin

T = TypeVar("T")


class SqlStateStore(
    DedupKeysMixin,
    InboxMixin,
    EventLogMixin,
    ControlsMixin,
    DeliveriesMixin,
    DispatchLedgerMixin,
    RateLimitSamplesMixin,
):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        # Distributed mode: a replay produces the command to the command topic again, inside
        # the replay's transaction (a broker failure rolls the replay back).
        self.requeue: Callable[[LeadUpdateCommand], None] | None = None

    def transaction(self) -> Any:
        """One write transaction; the store's calls made inside it join it (one commit)."""
        return self.engine.transaction()

    def commit_together(self, work: Callable[[], T]) -> T:
        """Run `work` (calls of this store) in a write transaction shared with concurrent callers
        (group commit on SQLite); return its result only once that transaction committed."""
        return self.engine.commit_together(work)

    def read(self) -> Any:
        return self.engine.read()

    def close(self) -> None:
        self.engine.close()

    def check_writable(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE dedup SET state = state WHERE key = ''")

    def ping(self) -> None:
        with self.read() as db:
            db.execute("SELECT 1 AS x").fetchone()

    # ---- queue ---------------------------------------------------------------------------

    def enqueue(self, command: LeadUpdateCommand) -> bool:
        """Durably queue the command with one pending delivery per provider; False when it was
        still on record (its dedup key expired before retention removed it, e.g. a dead letter
        kept 30 days re-sent after the 7-day window): counted as a duplicate, not queued again."""
        with self.transaction() as db:
            if self._queue(db, command, time.time()):
                return True
            self.note_duplicate(command.command_id)
            return False

    def _queue(self, db: Session, command: LeadUpdateCommand, received_at: float) -> bool:
        """The command, a pending delivery per provider and its 'received' history row; False
        (nothing written) when the command is already on record."""
        seq = self._insert_command(db, command, received_at)
        if seq is None:
            return False
        self._add_deliveries(db, seq, command, command.providers, received_at)
        db.execute(INSERT_RECEIVED, (command.command_id, received_at, command.source))
        return True

    @staticmethod
    def _insert_command(
        db: Session, command: LeadUpdateCommand, received_at: float, duplicate_of: str | None = None
    ) -> int | None:
        """The command's row (its queue position), or None when it is already on record."""
        lead = command.lead
        row = db.execute(
            "INSERT INTO commands (command_id, lead_key, source, event_type, occurred_at, received_at, body,"
            " lead_id, lead_email, lead_phone, duplicate_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (command_id) DO NOTHING RETURNING seq",
            (
                command.command_id, command.lead_key, command.source, command.event_type,
                command.occurred_at.isoformat(), received_at, command.to_json(),
                lead.id, lead.email, lead.phone, duplicate_of,
            ),
        ).fetchone()  # fmt: skip
        return None if row is None else int(row["seq"])

    @staticmethod
    def _add_deliveries(
        db: Session, seq: int, command: LeadUpdateCommand, providers: Iterable[str], now: float
    ) -> None:
        rows = [(command.command_id, provider, seq, command.lead_key, now, now) for provider in providers]
        if rows:
            db.executemany(INSERT_PENDING_DELIVERY, rows)

    def note_duplicate(self, command_id: str) -> None:
        with self.transaction() as db:
            counted = db.execute(
                "UPDATE commands SET duplicates = duplicates + 1 WHERE command_id = ?", (command_id,)
            ).rowcount
            if not counted:
                self.note_inbox_duplicate(db, command_id)

    def record_duplicate(self, command: LeadUpdateCommand, duplicate_of: str) -> None:
        """A double submit in the event log: the command, `duplicate_of`, and one row per
        routed provider in status `duplicate` (never claimed, so never delivered)."""
        now = time.time()
        note = duplicate_note(duplicate_of)
        with self.transaction() as db:
            seq = self._insert_command(db, command, now, duplicate_of)
            if seq is None:
                return
            rows = [
                (command.command_id, provider, seq, command.lead_key, now, now, note)
                for provider in command.providers
            ]
            if rows:
                db.executemany(
                    "INSERT INTO deliveries (command_id, provider, seq, lead_key, status, next_attempt_at,"
                    " updated_at, last_error, error_stage) VALUES (?, ?, ?, ?, 'duplicate', ?, ?, ?, 'dedup')"
                    " ON CONFLICT (command_id, provider) DO NOTHING",
                    rows,
                )
            db.execute(
                "INSERT INTO history (command_id, provider, at, status, detail) VALUES (?, NULL, ?, 'duplicate', ?)",
                (command.command_id, now, note),
            )


def duplicate_note(duplicate_of: str) -> str:
    return f"double submit: the same changes as {duplicate_of}, the lead's latest accepted event from this source"
