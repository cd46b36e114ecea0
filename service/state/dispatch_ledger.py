"""The Kafka dispatcher's side of the SQL ledger: registering commands read from the topic,
per (command, provider) claims with owner and heartbeat, and owner liveness.

Kafka carries the commands; these rows are the record of what happened to each. A claim
moves a delivery to `in_flight` owned by one dispatcher; the owner's heartbeat keeps it
live. A claim whose owner stopped beating for longer than the owner TTL is an orphan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from service.domain.command import LeadUpdateCommand
from service.domain.redact import redact_obj
from service.domain.state import DeliveryGroup

T = TypeVar("T")

# What a claim found: claimed (now ours), orphan (a dead owner's, now ours: confirm before
# sending), unrecorded (ours, left in flight by an earlier attempt of this process whose
# outcome was not written: confirm before sending), busy (a live owner's), done (nothing
# to do for this record: delivered, dead-lettered, or carried by another record).
CLAIMED, ORPHAN, UNRECORDED, BUSY, DONE = "claimed", "orphan", "unrecorded", "busy", "done"
# The owner of an in-flight row given back unconfirmed: no dispatcher's id (those are 12 hex
# digits), and it never beats, so the next claimer finds an orphan.
HANDED_BACK = "handed-back"


@dataclass(frozen=True)
class LedgerClaim:
    verdict: str
    attempts: int = 0
    request_id: str | None = None
    first_attempt_at: float | None = None
    polls: int = 0


def _ledger(row: Any) -> tuple[int, str | None, float | None, int]:
    return row["attempts"], row["request_id"], row["first_attempt_at"], row["polls"]


def _chunks(rows: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@dataclass(frozen=True)
class GroupRequest:
    """One group of a dispatcher batch to claim: its lead (on `scope`, the provider account)
    and its (command, provider) rows."""

    provider: str
    lead_key: str
    command_ids: list[str]
    kind: str
    scope: str


@dataclass(frozen=True)
class DeliveredGroup:
    """One group's delivered outcome, for `record_delivered`."""

    group: DeliveryGroup
    scope: str  # the lead claim given back with it
    error: str | None
    stage: str | None
    response: Any
    count_attempt: bool
    field_versions: dict[str, str]


class DispatchLedgerMixin:
    def transaction(self) -> Any: ...

    def register(self, commands: list[tuple[LeadUpdateCommand, float]]) -> None:
        """Commands read from the command topic, with one pending delivery per provider; a
        command already on record (the web wrote it, or an earlier read) is left as it is.
        The rows `SqlStateStore._queue` writes for one command (command, deliveries, the
        'received' history row), for the whole batch in three multi-row statements: this
        runs on the consumer's loop before any delivery of the batch starts."""
        first: dict[str, tuple[LeadUpdateCommand, float]] = {}
        for command, received_at in commands:
            first.setdefault(command.command_id, (command, received_at))  # a record read twice
        with self.transaction() as db:
            for chunk in _chunks(list(first.values()), 200):
                inserted = db.execute(
                    "INSERT INTO commands (command_id, lead_key, source, event_type, occurred_at, received_at, body,"
                    " lead_id, lead_email, lead_phone, duplicate_of) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"] * len(chunk))
                    + " ON CONFLICT (command_id) DO NOTHING RETURNING command_id, seq",
                    tuple(
                        value
                        for c, received_at in chunk
                        for value in (
                            c.command_id, c.lead_key, c.source, c.event_type, c.occurred_at.isoformat(),
                            received_at, c.to_json(), c.lead.id, c.lead.email, c.lead.phone,
                        )
                    ),
                ).fetchall()  # fmt: skip
                new = [(first[row["command_id"]], int(row["seq"])) for row in inserted]
                deliveries = [
                    (c.command_id, provider, seq, c.lead_key, at, at)
                    for (c, at), seq in new
                    for provider in c.providers
                ]
                if deliveries:
                    db.execute(
                        "INSERT INTO deliveries (command_id, provider, seq, lead_key, status, next_attempt_at,"
                        " updated_at) VALUES "
                        + ", ".join(["(?, ?, ?, ?, 'pending', ?, ?)"] * len(deliveries))
                        + " ON CONFLICT (command_id, provider) DO NOTHING",
                        tuple(value for row in deliveries for value in row),
                    )
                if new:
                    db.execute(
                        "INSERT INTO history (command_id, provider, at, status, detail) VALUES "
                        + ", ".join(["(?, NULL, ?, 'received', ?)"] * len(new)),
                        tuple(value for (c, at), _ in new for value in (c.command_id, at, c.source)),
                    )

    def claim_deliveries(
        self, command_ids: list[str], provider: str, owner: str, kind: str, now: float, stale_before: float
    ) -> list[LedgerClaim]:
        """Claim each (command, provider) for `owner`, in one transaction. A `deliver` record
        claims a pending delivery, a `poll` record a polling one; any other settled status
        means this record has nothing to do."""
        with self.transaction() as db:
            return self._claim_rows(db, [(c, provider, kind) for c in command_ids], owner, now, stale_before)

    def _claim_rows(
        self, db: Any, rows: list[tuple[str, str, str]], owner: str, now: float, stale_before: float
    ) -> list[LedgerClaim]:
        """(command_id, provider, kind) rows -> a claim each, in order. The common case (an open
        row) is one multi-row statement for all of them; the rest are looked at one by one."""
        found: dict[int, LedgerClaim] = {}
        first: dict[tuple[str, str], int] = {}
        for index, (command_id, provider, _) in enumerate(rows):
            # A record read twice in one request: its second copy goes the slow way and finds the
            # first copy's claim (unrecorded), as it would in a later request.
            first.setdefault((command_id, provider), index)
        wanted = [
            (command_id, provider, "polling" if rows[index][2] == "poll" else "pending")
            for (command_id, provider), index in first.items()
        ]
        for chunk in _chunks(wanted, 300):  # bound the statement's parameters
            claimed = db.execute(
                "UPDATE deliveries SET status = 'in_flight', owner = ?, heartbeat_at = ?, updated_at = ?"
                " WHERE (command_id, provider, status) IN (VALUES "
                + ", ".join(["(?, ?, ?)"] * len(chunk))
                + ")"
                " RETURNING command_id, provider, attempts, request_id, first_attempt_at, polls",
                (owner, now, now, *(value for row in chunk for value in row)),
            ).fetchall()
            for row in claimed:
                found[first[(row["command_id"], row["provider"])]] = LedgerClaim(CLAIMED, *_ledger(row))
        return [
            found[index]
            if index in found
            else self._claim_slow(db, command_id, provider, owner, now, stale_before)
            for index, (command_id, provider, _) in enumerate(rows)
        ]

    def _claim_slow(
        self, db: Any, command_id: str, provider: str, owner: str, now: float, stale_before: float
    ) -> LedgerClaim:
        """A row that was not open: a dead owner's (orphan), ours, another's, settled or missing."""
        returning = " RETURNING attempts, request_id, first_attempt_at, polls"
        row = db.execute(
            "UPDATE deliveries SET owner = ?, heartbeat_at = ?, updated_at = ? WHERE command_id = ?"
            " AND provider = ? AND status = 'in_flight' AND owner IS NOT NULL AND owner <> ?"
            " AND (heartbeat_at IS NULL OR heartbeat_at < ?)" + returning,
            (owner, now, now, command_id, provider, owner, stale_before),
        ).fetchone()
        if row is not None:
            return LedgerClaim(ORPHAN, *_ledger(row))
        row = db.execute(
            "SELECT status, owner, attempts, request_id, first_attempt_at, polls FROM deliveries"
            " WHERE command_id = ? AND provider = ?",
            (command_id, provider),
        ).fetchone()
        if row is None:
            return self._claim_missing(db, command_id, provider, owner, now)
        if row["status"] != "in_flight":
            return LedgerClaim(DONE)
        if row["owner"] == owner:
            return LedgerClaim(UNRECORDED, *_ledger(row))
        return LedgerClaim(BUSY)

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

    def claim_groups(
        self, requests: list[GroupRequest], owner: str, now: float, ttl_seconds: float
    ) -> list[tuple[list[LedgerClaim], dict[str, str]] | None]:
        """`claim_group` for many groups in one transaction and a few multi-row statements (one
        per step, not per group): lead claims, then (command, provider) claims for the groups
        whose lead was won, then those leads' field versions. None for a group whose lead
        another owner holds (nothing of it claimed). Each request's (scope, lead) must be
        distinct: a lead is claimed once, for one group."""
        leads = sorted({(r.scope, r.lead_key) for r in requests})
        if len(leads) != len(requests):
            raise ValueError("claim_groups: one group per lead")
        with self.transaction() as db:
            won: set[tuple[str, str]] = set()
            # Sorted: concurrent claimers lock lead rows in one order, so they never deadlock.
            for chunk in _chunks(leads, 200):
                rows = db.execute(
                    "INSERT INTO lead_claims (provider, lead_key, owner, expires_at) VALUES "
                    + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                    + " ON CONFLICT (provider, lead_key) DO UPDATE SET owner = excluded.owner,"
                    " expires_at = excluded.expires_at WHERE lead_claims.owner = excluded.owner"
                    " OR lead_claims.expires_at <= ? RETURNING provider, lead_key",
                    (*(v for s, k in chunk for v in (s, k, owner, now + ttl_seconds)), now),
                ).fetchall()
                won.update((row["provider"], row["lead_key"]) for row in rows)
            mine = [r for r in requests if (r.scope, r.lead_key) in won]
            rows = [(c, r.provider, r.kind) for r in mine for c in r.command_ids]
            claims = iter(self._claim_rows(db, rows, owner, now, now - ttl_seconds))
            by_group = {id(r): [next(claims) for _ in r.command_ids] for r in mine}
            versions: dict[tuple[str, str], dict[str, str]] = {}
            wanted = sorted({(r.lead_key, r.provider) for r in mine if by_group[id(r)]})
            for chunk in _chunks(wanted, 300):
                found = db.execute(
                    "SELECT lead_key, provider, field, occurred_at FROM field_versions WHERE (lead_key, provider)"
                    " IN (VALUES " + ", ".join(["(?, ?)"] * len(chunk)) + ")",
                    tuple(v for pair in chunk for v in pair),
                ).fetchall()
                for row in found:
                    versions.setdefault((row["lead_key"], row["provider"]), {})[row["field"]] = row[
                        "occurred_at"
                    ]
        return [
            (by_group[id(r)], versions.get((r.lead_key, r.provider), {})) if id(r) in by_group else None
            for r in requests
        ]

    def record_delivered(self, outcomes: list[DeliveredGroup], owner: str, now: float) -> None:
        """Delivered groups: ledger rows, history, field versions and the release of each lead
        claim, all in one transaction (one statement per step for every group). The same rows
        as `record(group, "delivered", ...)` followed by `release_lead`, for each group."""
        updates, history, versions, releases = [], [], [], []
        for outcome in outcomes:
            group = outcome.group
            response = (
                json.dumps(redact_obj(outcome.response), default=str)
                if outcome.response is not None
                else None
            )
            detail = (
                f"{outcome.stage}: {outcome.error}"
                if outcome.stage and outcome.error
                else (outcome.error or outcome.stage)
            )
            for delivery in group.deliveries:
                updates.append(
                    (
                        delivery.attempts + (1 if outcome.count_attempt else 0), now, outcome.error,
                        outcome.stage, response, now, now, now if outcome.count_attempt else None,
                        delivery.command.command_id, group.provider,
                    )
                )  # fmt: skip
                history.append((delivery.command.command_id, group.provider, now, "delivered", detail))
            versions += [
                (group.lead_key, group.provider, f, at) for f, at in sorted(outcome.field_versions.items())
            ]
            releases.append((outcome.scope, group.lead_key, owner))
        with self.transaction() as db:
            db.executemany(
                "UPDATE deliveries SET status = 'delivered', attempts = ?, next_attempt_at = ?, last_error = ?,"
                " error_stage = ?, response = COALESCE(?, response), updated_at = ?, delivered_at = ?,"
                " first_attempt_at = COALESCE(first_attempt_at, ?), owner = NULL WHERE command_id = ? AND provider = ?",
                updates,
            )
            db.executemany(
                "INSERT INTO history (command_id, provider, at, status, detail) VALUES (?, ?, ?, ?, ?)",
                history,
            )
            if versions:
                db.executemany(
                    "INSERT INTO field_versions (lead_key, provider, field, occurred_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (lead_key, provider, field) DO UPDATE SET occurred_at = excluded.occurred_at"
                    " WHERE excluded.occurred_at > field_versions.occurred_at",
                    versions,
                )
            db.executemany(
                "DELETE FROM lead_claims WHERE provider = ? AND lead_key = ? AND owner = ?", releases
            )

    def hand_back(
        self, rows: list[tuple[str, str, str, str]], leads: list[tuple[str, str]], owner: str, now: float
    ) -> None:
        """Claims taken for groups that did not run (stopping, revoked, behind a rate-limit
        wait), and lead claims ((scope, lead key)), given back in one transaction. `rows`:
        (command_id, provider, kind, verdict). A row claimed open is open again (`pending`, or
        `polling` for a status poll); one that was in flight without an outcome (orphan,
        unrecorded) stays in flight under no live owner, so whoever runs it next, this
        dispatcher too, finds an orphan and confirms with the provider before any resend."""
        reopen = [
            ("polling" if kind == "poll" else "pending", now, command_id, provider, owner)
            for command_id, provider, kind, verdict in rows
            if verdict == CLAIMED
        ]
        unconfirmed = [
            (HANDED_BACK, now, command_id, provider, owner)
            for command_id, provider, _, verdict in rows
            if verdict in (ORPHAN, UNRECORDED)
        ]
        if not (reopen or unconfirmed or leads):
            return
        with self.transaction() as db:
            if reopen:
                db.executemany(
                    "UPDATE deliveries SET status = ?, owner = NULL, heartbeat_at = NULL, updated_at = ?"
                    " WHERE command_id = ? AND provider = ? AND owner = ? AND status = 'in_flight'",
                    reopen,
                )
            if unconfirmed:
                db.executemany(
                    "UPDATE deliveries SET owner = ?, heartbeat_at = NULL, updated_at = ?"
                    " WHERE command_id = ? AND provider = ? AND owner = ? AND status = 'in_flight'",
                    unconfirmed,
                )
            if leads:
                db.executemany(
                    "DELETE FROM lead_claims WHERE provider = ? AND lead_key = ? AND owner = ?",
                    [(scope, lead_key, owner) for scope, lead_key in sorted(leads)],
                )

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
