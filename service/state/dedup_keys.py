"""Dedup keys in the SQL store: claim-before, confirm-after ingest claims and short-lived values (the double-submit guard's)."""

from __future__ import annotations

import time
from typing import Any

from service.domain.state import Claim

# A claim marked done until `expires_at` (written if it was never taken in this table).
CONFIRM_CLAIM = (
    "INSERT INTO dedup (key, state, expires_at) VALUES (?, 'done', ?)"
    " ON CONFLICT (key) DO UPDATE SET state = 'done', expires_at = excluded.expires_at"
)


def _held(row: Any) -> Claim:
    """What a live claim row answers a newcomer."""
    return Claim.DUPLICATE if row["state"] == "done" else Claim.IN_PROGRESS


class DedupKeysMixin:
    def transaction(self) -> Any: ...

    def read(self) -> Any: ...

    def claim(self, key: str, pending_seconds: int) -> Claim:
        """Claim before, confirm after: a pending claim expires, so a crash between claim and
        confirm lets the sender's retry in rather than losing it as a "duplicate"."""
        return self._take(key, "pending", pending_seconds)

    def claim_confirmed(self, key: str, window_seconds: int) -> Claim:
        """`claim` and `confirm` in one statement, for a caller whose claim, queue write and
        confirmation commit in one transaction (`Ingestor` with `commit_together`): nobody can
        see the pending state between them there, so it is not written. Rolled back with the
        rest of the transaction if the command is not queued."""
        return self._take(key, "done", window_seconds)

    def _take(self, key: str, state: str, seconds: int) -> Claim:
        """Write `key` in `state` unless a live one is there: one conditional upsert, atomic in
        both engines (PostgreSQL waits on the row's lock)."""
        now = time.time()
        with self.transaction() as db:
            taken = db.execute(
                "INSERT INTO dedup (key, state, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at"
                " WHERE dedup.expires_at <= ? RETURNING key",
                (key, state, now + seconds, now),
            ).fetchone()
            if taken is not None:
                return Claim.CLAIMED
            row = db.execute("SELECT state FROM dedup WHERE key = ?", (key,)).fetchone()
        return Claim.IN_PROGRESS if row is None else _held(row)

    def check_claim(self, key: str) -> Claim:
        """What `claim` would answer, without writing: for a caller whose queue write takes the
        claim itself (the embedded store's inbox row, `enqueue_claimed`)."""
        with self.read() as db:
            row = db.execute(
                "SELECT state FROM dedup WHERE key = ? AND expires_at > ?", (key, time.time())
            ).fetchone()
        return Claim.CLAIMED if row is None else _held(row)

    def confirm(self, key: str, window_seconds: int) -> None:
        """Mark `key` done for the window (written if it was never claimed in this table)."""
        with self.transaction() as db:
            db.execute(CONFIRM_CLAIM, (key, time.time() + window_seconds))

    def release(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM dedup WHERE key = ? AND state = 'pending'", (key,))

    # A value shares the claims' table, its `state` column holding the value: the keys of the
    # two uses never collide (claims are `cmd:...`, values are named by their user, `fpl:...`).
    def get(self, key: str) -> str | None:
        with self.read() as db:
            row = db.execute(
                "SELECT state FROM dedup WHERE key = ? AND expires_at > ?", (key, time.time())
            ).fetchone()
        return None if row is None else str(row["state"])

    def put(self, key: str, value: str, ttl_seconds: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO dedup (key, state, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
                (key, value, time.time() + ttl_seconds),
            )
