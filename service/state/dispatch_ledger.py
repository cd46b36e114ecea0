"""The Kafka dispatcher's side of the SQL ledger: registering commands read from the topic,
per (command, provider) claims with owner and heartbeat, and owner liveness.

Kafka carries the commands; these rows are the record of what happened to each. A claim
moves a delivery to `in_flight` owned by one dispatcher; the owner's heartbeat keeps it
live. A claim whose owner stopped beating for longer than the owner TTL is an orphan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.domain.command import LeadUpdateCommand

# What a claim found: claimed (now ours), orphan (a dead owner's, now ours: confirm before
# sending), unrecorded (ours, left in flight by an earlier attempt of this process whose
# outcome was not written: confirm before sending), busy (a live owner's), done (nothing
# to do for this record: delivered, dead-lettered, or carried by another record).
CLAIMED, ORPHAN, UNRECORDED, BUSY, DONE = "claimed", "orphan", "unrecorded", "busy", "done"


@dataclass(frozen=True)
class LedgerClaim:
    verdict: str
    attempts: int = 0
    request_id: str | None = None
    first_attempt_at: float | None = None
    polls: int = 0


def _ledger(row: Any) -> tuple[int, str | None, float | None, int]:
    return row["attempts"], row["request_id"], row["first_attempt_at"], row["polls"]


class DispatchLedgerMixin:
    def transaction(self) -> Any: ...

    def register(self, commands: list[tuple[LeadUpdateCommand, float]]) -> None:
        """Commands read from the command topic, with one pending delivery per provider; a
        command already on record (the web wrote it, or an earlier read) is left as it is."""
        with self.transaction() as db:
            for command, received_at in commands:
                self._queue(db, command, received_at)  # type: ignore[attr-defined]

    def claim_deliveries(
        self, command_ids: list[str], provider: str, owner: str, kind: str, now: float, stale_before: float
    ) -> list[LedgerClaim]:
        """Claim each (command, provider) for `owner`, in one transaction. A `deliver` record
        claims a pending delivery, a `poll` record a polling one; any other settled status
        means this record has nothing to do."""
        open_status = "polling" if kind == "poll" else "pending"
        found: list[LedgerClaim] = []
        returning = " RETURNING attempts, request_id, first_attempt_at, polls"
        with self.transaction() as db:
            for command_id in command_ids:
                row = db.execute(
                    "UPDATE deliveries SET status = 'in_flight', owner = ?, heartbeat_at = ?, updated_at = ?"
                    " WHERE command_id = ? AND provider = ? AND status = ?" + returning,
                    (owner, now, now, command_id, provider, open_status),
                ).fetchone()
                if row is not None:
                    found.append(LedgerClaim(CLAIMED, *_ledger(row)))
                    continue
                row = db.execute(
                    "UPDATE deliveries SET owner = ?, heartbeat_at = ?, updated_at = ? WHERE command_id = ?"
                    " AND provider = ? AND status = 'in_flight' AND owner IS NOT NULL AND owner <> ?"
                    " AND (heartbeat_at IS NULL OR heartbeat_at < ?)" + returning,
                    (owner, now, now, command_id, provider, owner, stale_before),
                ).fetchone()
                if row is not None:
                    found.append(LedgerClaim(ORPHAN, *_ledger(row)))
                    continue
                row = db.execute(
                    "SELECT status, owner, attempts, request_id, first_attempt_at, polls FROM deliveries"
                    " WHERE command_id = ? AND provider = ?",
                    (command_id, provider),
                ).fetchone()
                if row is None:
                    found.append(self._claim_missing(db, command_id, provider, owner, now))
                elif row["status"] != "in_flight":
                    found.append(LedgerClaim(DONE))
                elif row["owner"] == owner:
                    found.append(LedgerClaim(UNRECORDED, *_ledger(row)))
                else:
                    found.append(LedgerClaim(BUSY))
        return found

    @staticmethod
    def _claim_missing(db: Any, command_id: str, provider: str, owner: str, now: float) -> LedgerClaim:
        """A provider routed to the command after it was recorded (a replay with a new route)."""
        db.execute(
            "INSERT INTO deliveries (command_id, provider, seq, lead_key, status, next_attempt_at, updated_at,"
            " owner, heartbeat_at) SELECT command_id, ?, seq, lead_key, 'in_flight', ?, ?, ?, ? FROM commands"
            " WHERE command_id = ? ON CONFLICT (command_id, provider) DO NOTHING",
            (provider, now, now, owner, now, command_id),
        )
        return LedgerClaim(CLAIMED)

    def claim_group(
        self,
        provider: str,
        lead_key: str,
        command_ids: list[str],
        owner: str,
        kind: str,
        now: float,
        ttl_seconds: float,
        lead_scope: str | None = None,
    ) -> tuple[list[LedgerClaim], dict[str, str]] | None:
        """The lead claim, the (command, provider) claims and the lead's applied field versions in
        one transaction (one commit instead of three). None: another owner holds the lead, and
        nothing was claimed. `lead_scope`: what the lead claim is held on (the provider's
        account, so entries sharing credentials are serialised together); default `provider`."""
        with self.transaction():
            if not self.claim_lead(lead_scope or provider, lead_key, owner, ttl_seconds):  # type: ignore[attr-defined]
                return None
            claims = self.claim_deliveries(
                command_ids, provider, owner, kind, now, stale_before=now - ttl_seconds
            )
            applied = self.applied_versions(lead_key, provider) if claims else {}  # type: ignore[attr-defined]
        return claims, applied

    def renew_owner(self, owner: str, leads: list[tuple[str, str]], now: float, ttl_seconds: float) -> None:
        """The owner's heartbeat: its in-flight claims stay its own, and the lead claims it holds
        (`leads`: (provider account, lead key)) do not lapse while it is alive."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET heartbeat_at = ? WHERE owner = ? AND status = 'in_flight'",
                (now, owner),
            )
            if leads:
                db.executemany(
                    "UPDATE lead_claims SET expires_at = ? WHERE provider = ? AND lead_key = ? AND owner = ?",
                    [(now + ttl_seconds, provider, lead_key, owner) for provider, lead_key in leads],
                )

    def forget_owner(self, owner: str) -> None:
        """A clean stop: give up the lead claims at once instead of letting them lapse."""
        with self.transaction() as db:
            db.execute("DELETE FROM lead_claims WHERE owner = ?", (owner,))
