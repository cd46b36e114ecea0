"""The delivery rows as the embedded dispatcher works them: claiming due groups and due polls,
finding orphans a dead dispatcher left in flight, recording each outcome with its field versions."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from typing import Any

from service.domain.command import LeadUpdateCommand
from service.domain.redact import redact_obj
from service.domain.state import Delivery, DeliveryGroup
from service.domain.statuses import DeliveryStatus

POLL_LEASE_SECONDS = 300.0
PARAMS_PER_STATEMENT = 500  # SQLite's limit on bound parameters is 999 on old builds


class DeliveriesMixin:
    # From InboxMixin (an annotation, not a stub: a stub here would shadow it).
    drain_inbox: Callable[[], int]

    def transaction(self) -> Any: ...

    def read(self) -> Any: ...

    def claim_due_groups(
        self,
        now: float,
        limit: int,
        skip: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
        max_groups: int = 1_000_000,
        per_group: int | None = None,
        owner: str | None = None,
        providers: Collection[str] | None = None,
    ) -> list[DeliveryGroup]:
        """Mark due groups in_flight (owned by `owner`) and return them. A group is due when its
        oldest open delivery is pending and due; a lead with one in flight or backing off
        waits, so commands for one lead and provider are applied in order. `per_group`: at
        most that many commands per group (1 when coalescing is off). `providers`: only these
        providers' deliveries (None: every provider's; empty: nothing, without a query)."""
        self.drain_inbox()  # accepted commands join the queue here, before it is scanned
        if providers is not None and not providers:
            return []
        only = "" if providers is None else f" AND provider IN ({','.join('?' * len(providers))})"
        with self.read() as db:
            # The scan reads no bodies: a large backlog waiting on backoff stays cheap to skip.
            rows = db.execute(
                "SELECT command_id, provider, lead_key, seq, status, attempts, next_attempt_at, first_attempt_at"
                f" FROM deliveries WHERE status IN ('pending', 'in_flight', 'polling'){only} ORDER BY seq",
                tuple(providers or ()),
            ).fetchall()
        chosen: dict[tuple[str, str], list[Any]] = {}
        blocked: set[tuple[str, str]] = set(skip)
        taken = 0
        for row in rows:
            key = (row["provider"], row["lead_key"])
            if key in blocked:
                continue
            if row["status"] != "pending" or (key not in chosen and row["next_attempt_at"] > now):
                blocked.add(key)
                continue
            if (taken >= limit or len(chosen) >= max_groups) and key not in chosen:
                continue
            if per_group is not None and len(chosen.get(key, ())) >= per_group:
                continue
            chosen.setdefault(key, []).append(row)
            taken += 1
        if not chosen:
            return []
        claimed: set[tuple[str, str]] = set()
        with self.transaction() as db:
            for (provider, _lead), group_rows in chosen.items():
                ids = [row["command_id"] for row in group_rows]
                marks = ",".join("?" * len(ids))
                # Guarded by status: a row another dispatcher took meanwhile is not taken twice.
                taken = {
                    row["command_id"]
                    for row in db.execute(
                        "UPDATE deliveries SET status = 'in_flight', owner = ?, heartbeat_at = ?, updated_at = ?"
                        f" WHERE provider = ? AND status = 'pending' AND command_id IN ({marks}) RETURNING command_id",
                        (owner, now, now, provider, *ids),
                    ).fetchall()
                }
                if len(taken) < len(ids):
                    # Part of the group went elsewhere: sending the rest now could overtake it.
                    if taken:
                        db.execute(
                            "UPDATE deliveries SET status = 'pending', owner = NULL WHERE provider = ?"
                            f" AND status = 'in_flight' AND command_id IN ({','.join('?' * len(taken))})",
                            (provider, *sorted(taken)),
                        )
                    continue
                claimed.update((command_id, provider) for command_id in taken)
        bodies = self._bodies({command_id for command_id, _ in claimed})
        groups = []
        for key, group_rows in chosen.items():
            deliveries = [
                Delivery(
                    command=LeadUpdateCommand.from_json(bodies[row["command_id"]][1]),
                    provider=row["provider"],
                    seq=row["seq"],
                    attempts=row["attempts"],
                    received_at=bodies[row["command_id"]][0],
                    first_attempt_at=row["first_attempt_at"],
                )
                for row in group_rows
                if (row["command_id"], row["provider"]) in claimed
            ]
            if deliveries:
                groups.append(DeliveryGroup(provider=key[0], lead_key=key[1], deliveries=deliveries))
        return groups

    def _bodies(self, command_ids: set[str]) -> dict[str, tuple[float, str]]:
        """command_id -> (received_at, body), in chunks the parameter limit allows."""
        ids = list(command_ids)
        found: dict[str, tuple[float, str]] = {}
        with self.read() as db:
            for start in range(0, len(ids), PARAMS_PER_STATEMENT):
                chunk = ids[start : start + PARAMS_PER_STATEMENT]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    f"SELECT command_id, received_at, body FROM commands WHERE command_id IN ({marks})", chunk
                ):
                    found[row["command_id"]] = (row["received_at"], row["body"])
        return found

    def _groups(self, rows: list[Any], status: str, by_request: bool = False) -> list[DeliveryGroup]:
        groups: dict[tuple[str, str], DeliveryGroup] = {}
        for row in rows:
            key = (
                row["provider"],
                (row["request_id"] or row["command_id"]) if by_request else row["lead_key"],
            )
            group = groups.setdefault(key, DeliveryGroup(provider=row["provider"], lead_key=row["lead_key"]))
            group.deliveries.append(
                Delivery(
                    command=LeadUpdateCommand.from_json(row["body"]),
                    provider=row["provider"],
                    seq=row["seq"],
                    attempts=row["attempts"],
                    status=status,
                    polls=row["polls"],
                    request_id=row["request_id"],
                    received_at=row["received_at"],
                    first_attempt_at=row["first_attempt_at"],
                )
            )
        return list(groups.values())

    def orphaned_in_flight(
        self, owner: str | None = None, dead_before: float | None = None
    ) -> list[DeliveryGroup]:
        """Deliveries left in_flight by a dispatcher that died. Embedded mode (one dispatcher
        per file) calls this at start, when every in-flight row is an orphan; with owners,
        only rows of another owner whose heartbeat is older than `dead_before` are."""
        sql = (
            "SELECT d.command_id, d.provider, d.lead_key, d.seq, d.attempts, d.polls, d.request_id,"
            " d.first_attempt_at, c.received_at, c.body FROM deliveries d JOIN commands c ON c.command_id = d.command_id"
            " WHERE d.status = 'in_flight'"
        )
        params: list[Any] = []
        if owner is not None:
            sql += " AND (d.owner IS NULL OR d.owner <> ?)"
            params.append(owner)
        if dead_before is not None:
            sql += " AND (d.heartbeat_at IS NULL OR d.heartbeat_at < ?)"
            params.append(dead_before)
        with self.read() as db:
            rows = db.execute(sql + " ORDER BY d.seq", params).fetchall()
        return self._groups(rows, DeliveryStatus.IN_FLIGHT)

    def heartbeat(self, owner: str, now: float) -> None:
        """A live owner's claims stay its own: nobody recovers them while this keeps beating."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET heartbeat_at = ? WHERE owner = ? AND status = 'in_flight'",
                (now, owner),
            )

    def applied_versions(self, lead_key: str, provider: str) -> dict[str, str]:
        with self.read() as db:
            rows = db.execute(
                "SELECT field, occurred_at FROM field_versions WHERE lead_key = ? AND provider = ?",
                (lead_key, provider),
            ).fetchall()
        return {row["field"]: row["occurred_at"] for row in rows}

    def record(
        self,
        group: DeliveryGroup,
        status: str,
        *,
        now: float,
        error: str | None = None,
        stage: str | None = None,
        response: Any = None,
        next_attempt_at: float | None = None,
        count_attempt: bool = True,
        request_id: str | None = None,
        field_versions: dict[str, str] | None = None,
        count_poll: bool = False,
    ) -> None:
        """Write one outcome for every delivery of a group, atomically, and append it to the
        history. Field versions only move forward (a conditional upsert)."""
        response_json = json.dumps(redact_obj(response), default=str) if response is not None else None
        rows = []
        for delivery in group.deliveries:
            attempts = delivery.attempts + (1 if count_attempt else 0)
            rows.append(
                (
                    status, attempts, request_id, 1 if count_poll else 0,
                    next_attempt_at if next_attempt_at is not None else now,
                    error, stage, response_json, request_id, now, status, now,
                    now if count_attempt else None,  # an attempt was made: the retry horizon starts
                    delivery.command.command_id, group.provider,
                )
            )  # fmt: skip
        detail = f"{stage}: {error}" if stage and error else (error or stage)
        if count_poll and not error:
            detail = "status poll"
        with self.transaction() as db:
            db.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?,"
                # A new request id (the provider accepted a new call) starts the poll count afresh.
                " polls = CASE WHEN CAST(? AS TEXT) IS NOT NULL THEN 0 ELSE polls END + ?, next_attempt_at = ?, last_error = ?,"
                " error_stage = ?, response = COALESCE(?, response), request_id = COALESCE(?, request_id),"
                " updated_at = ?, delivered_at = CASE WHEN CAST(? AS TEXT) = 'delivered' THEN ? ELSE delivered_at END,"
                " first_attempt_at = COALESCE(first_attempt_at, ?), owner = NULL WHERE command_id = ? AND provider = ?",
                rows,
            )
            db.executemany(
                "INSERT INTO history (command_id, provider, at, status, detail) VALUES (?, ?, ?, ?, ?)",
                [(d.command.command_id, group.provider, now, status, detail) for d in group.deliveries],
            )
            if field_versions:
                db.executemany(
                    "INSERT INTO field_versions (lead_key, provider, field, occurred_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (lead_key, provider, field) DO UPDATE SET occurred_at = excluded.occurred_at"
                    " WHERE excluded.occurred_at > field_versions.occurred_at",
                    [
                        (group.lead_key, group.provider, name, at)
                        for name, at in sorted(field_versions.items())
                    ],
                )

    def polling_deliveries(self, now: float, limit: int) -> list[DeliveryGroup]:
        """Async deliveries whose status poll is due (one group per request id), leased: nobody
        polls them again until this poll has recorded its answer or the lease ran out."""
        with self.read() as db:
            rows = db.execute(
                "SELECT d.command_id, d.provider, d.lead_key, d.seq, d.attempts, d.polls, d.request_id,"
                " d.first_attempt_at, c.received_at, c.body FROM deliveries d JOIN commands c ON c.command_id = d.command_id"
                " WHERE d.status = 'polling' AND d.next_attempt_at <= ? ORDER BY d.seq LIMIT ?",
                (now, limit),
            ).fetchall()
        if not rows:
            return []
        leased: set[tuple[str, str]] = set()
        with self.transaction() as db:
            for row in rows:
                # Guarded by the due time: a poll another dispatcher leased meanwhile is skipped.
                if db.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE command_id = ? AND provider = ?"
                    " AND status = 'polling' AND next_attempt_at <= ? RETURNING command_id",
                    (now + POLL_LEASE_SECONDS, row["command_id"], row["provider"], now),
                ).fetchone():
                    leased.add((row["command_id"], row["provider"]))
        rows = [row for row in rows if (row["command_id"], row["provider"]) in leased]
        return self._groups(rows, DeliveryStatus.POLLING, by_request=True)

    def queue_stats(self, now: float | None = None) -> dict[str, float]:
        now = now or time.time()
        self.drain_inbox()
        with self.read() as db:
            row = db.execute(
                "SELECT COUNT(*) AS depth, MIN(c.received_at) AS oldest FROM deliveries d"
                " JOIN commands c ON c.command_id = d.command_id WHERE d.status IN ('pending', 'in_flight', 'polling')"
            ).fetchone()
        return {
            "depth": float(row["depth"]),
            "oldest_age_seconds": (now - row["oldest"]) if row["oldest"] else 0.0,
        }
