"""The embedded store: one SQLite file (WAL) holding the command queue, the per-(command,
provider) delivery ledger, the dead letters and the event log.

A command row is written once; each delivery row moves
`pending -> in_flight -> delivered | pending (retry) | polling | dead_lettered`.
`synchronous=FULL`: a 202 to the sender means the row survived, even a power cut.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.command import LeadUpdateCommand
from service.domain.state import ProviderControl
from service.redact import redact_obj

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL UNIQUE,
    lead_key TEXT NOT NULL,
    source TEXT NOT NULL,
    event_type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at REAL NOT NULL,
    duplicates INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    command_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lead_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    error_stage TEXT,
    response TEXT,
    request_id TEXT,
    replays INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    delivered_at REAL,
    first_attempt_at REAL,
    PRIMARY KEY (command_id, provider)
);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (status, seq);
CREATE TABLE IF NOT EXISTS field_versions (
    lead_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    field TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    PRIMARY KEY (lead_key, provider, field)
);
CREATE TABLE IF NOT EXISTS provider_controls (
    provider TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    breaker TEXT NOT NULL DEFAULT 'closed',
    reason TEXT,
    opened_at REAL,
    next_probe_at REAL,
    probes INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

OPEN_STATUSES = ("pending", "in_flight", "polling")


@dataclass
class Delivery:
    command: LeadUpdateCommand
    provider: str
    seq: int
    attempts: int
    status: str = "pending"
    polls: int = 0  # async status polls since the provider accepted it
    request_id: str | None = None
    received_at: float = 0.0
    first_attempt_at: float | None = None  # the retry horizon counts from here


@dataclass
class DeliveryGroup:
    """Pending deliveries for one (lead, provider), in order: sent as one coalesced call."""

    provider: str
    lead_key: str
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def command_ids(self) -> list[str]:
        return [d.command.command_id for d in self.deliveries]


class EmbeddedStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._lock_file = open(str(self.path) + ".write-lock", "a")  # noqa: SIM115 - lives as long as the store
        self.connection().executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added after a database was first created."""
        db = self.connection()
        columns = {row["name"] for row in db.execute("PRAGMA table_info(deliveries)")}
        if "polls" not in columns:
            db.execute("ALTER TABLE deliveries ADD COLUMN polls INTEGER NOT NULL DEFAULT 0")
        if "first_attempt_at" not in columns:
            db.execute("ALTER TABLE deliveries ADD COLUMN first_attempt_at REAL")

    def connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested calls join the outer one (one commit, one fsync)."""
        db = self.connection()
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield db
            finally:
                self._local.depth = depth
            return
        with self._writer_turn():
            db.execute("BEGIN IMMEDIATE")
            self._local.depth = 1
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                self._local.depth = 0
            db.execute("COMMIT")

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Writers (threads here, and the other processes on this file) wait their turn on a
        lock, not in SQLite's busy handler: its sleeps grow to 100 ms under contention and
        were the whole ingest p99."""
        with self._write_lock:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def check_writable(self) -> None:
        with self.transaction() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS _probe (x)")

    # ---- queue -------------------------------------------------------------------------

    def enqueue(self, command: LeadUpdateCommand) -> None:
        """Durably queue the command with one pending delivery per provider."""
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO commands (command_id, lead_key, source, event_type, occurred_at, received_at, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    command.command_id,
                    command.lead_key,
                    command.source,
                    command.event_type,
                    command.occurred_at.isoformat(),
                    now,
                    command.to_json(),
                ),
            )
            self._add_deliveries(db, cursor.lastrowid or 0, command, command.providers, now)

    @staticmethod
    def _add_deliveries(
        db: sqlite3.Connection, seq: int, command: LeadUpdateCommand, providers: Iterable[str], now: float
    ) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO deliveries (command_id, provider, seq, lead_key, status, next_attempt_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            [(command.command_id, provider, seq, command.lead_key, now, now) for provider in providers],
        )

    def note_duplicate(self, command_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE commands SET duplicates = duplicates + 1 WHERE command_id = ?", (command_id,))

    # ---- dispatcher --------------------------------------------------------------------

    def claim_due_groups(
        self,
        now: float,
        limit: int,
        skip: set[tuple[str, str]] = frozenset(),
        max_groups: int = 1_000_000,
        per_group: int | None = None,
    ) -> list[DeliveryGroup]:
        """Mark due groups in_flight and return them. A group is due when its oldest open
        delivery is pending and due; a lead with one in flight or backing off waits, so
        commands for one lead and provider are applied in order. `per_group`: at most that
        many commands per group (1 when coalescing is off)."""
        db = self.connection()
        # The scan reads no bodies: a large backlog waiting on backoff stays cheap to skip.
        rows = db.execute(
            "SELECT command_id, provider, lead_key, seq, status, attempts, next_attempt_at, first_attempt_at"
            " FROM deliveries WHERE status IN ('pending', 'in_flight', 'polling') ORDER BY seq"
        ).fetchall()
        chosen: dict[tuple[str, str], list[sqlite3.Row]] = {}
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
        bodies = self._bodies({row["command_id"] for group_rows in chosen.values() for row in group_rows})
        groups = {
            key: DeliveryGroup(
                provider=key[0],
                lead_key=key[1],
                deliveries=[
                    Delivery(
                        command=LeadUpdateCommand.from_json(bodies[row["command_id"]][1]),
                        provider=row["provider"],
                        seq=row["seq"],
                        attempts=row["attempts"],
                        received_at=bodies[row["command_id"]][0],
                        first_attempt_at=row["first_attempt_at"],
                    )
                    for row in group_rows
                ],
            )
            for key, group_rows in chosen.items()
        }
        if groups:
            with self.transaction() as db:
                db.executemany(
                    "UPDATE deliveries SET status = 'in_flight', updated_at = ?"
                    " WHERE command_id = ? AND provider = ? AND status = 'pending'",
                    [(now, d.command.command_id, g.provider) for g in groups.values() for d in g.deliveries],
                )
        return list(groups.values())

    def _bodies(self, command_ids: set[str]) -> dict[str, tuple[float, str]]:
        """command_id -> (received_at, body), in chunks SQLite's parameter limit allows."""
        ids = list(command_ids)
        found: dict[str, tuple[float, str]] = {}
        db = self.connection()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                f"SELECT command_id, received_at, body FROM commands WHERE command_id IN ({marks})", chunk
            ):
                found[row["command_id"]] = (row["received_at"], row["body"])
        return found

    def orphaned_in_flight(self) -> list[DeliveryGroup]:
        """Deliveries left in_flight by a dispatcher that died."""
        db = self.connection()
        rows = db.execute(
            "SELECT d.command_id, d.provider, d.lead_key, d.seq, d.attempts, d.first_attempt_at,"
            " c.received_at, c.body FROM deliveries d JOIN commands c ON c.command_id = d.command_id"
            " WHERE d.status = 'in_flight' ORDER BY d.seq"
        ).fetchall()
        groups: dict[tuple[str, str], DeliveryGroup] = {}
        for row in rows:
            key = (row["provider"], row["lead_key"])
            group = groups.setdefault(key, DeliveryGroup(provider=row["provider"], lead_key=row["lead_key"]))
            group.deliveries.append(
                Delivery(
                    command=LeadUpdateCommand.from_json(row["body"]),
                    provider=row["provider"],
                    seq=row["seq"],
                    attempts=row["attempts"],
                    status="in_flight",
                    received_at=row["received_at"],
                    first_attempt_at=row["first_attempt_at"],
                )
            )
        return list(groups.values())

    def applied_versions(self, lead_key: str, provider: str) -> dict[str, str]:
        rows = (
            self.connection()
            .execute(
                "SELECT field, occurred_at FROM field_versions WHERE lead_key = ? AND provider = ?",
                (lead_key, provider),
            )
            .fetchall()
        )
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
        attempts_override: dict[str, int] | None = None,
        count_poll: bool = False,
    ) -> None:
        """Write one outcome for every delivery of a group, atomically."""
        response_json = json.dumps(redact_obj(response), default=str) if response is not None else None
        with self.transaction() as db:
            for delivery in group.deliveries:
                attempts = delivery.attempts + (1 if count_attempt else 0)
                if attempts_override and delivery.command.command_id in attempts_override:
                    attempts = attempts_override[delivery.command.command_id]
                db.execute(
                    "UPDATE deliveries SET status = ?, attempts = ?,"
                    # A new request id (the provider accepted a new call) starts the poll count afresh.
                    " polls = CASE WHEN ? IS NOT NULL THEN 0 ELSE polls END + ?, next_attempt_at = ?, last_error = ?,"
                    " error_stage = ?, response = COALESCE(?, response), request_id = COALESCE(?, request_id),"
                    " updated_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END,"
                    " first_attempt_at = COALESCE(first_attempt_at, ?)"
                    " WHERE command_id = ? AND provider = ?",
                    (
                        status,
                        attempts,
                        request_id,
                        1 if count_poll else 0,
                        next_attempt_at if next_attempt_at is not None else now,
                        error,
                        stage,
                        response_json,
                        request_id,
                        now,
                        status,
                        now,
                        now if count_attempt else None,  # an attempt was made: the horizon starts
                        delivery.command.command_id,
                        group.provider,
                    ),
                )
            for name, occurred_at in (field_versions or {}).items():
                db.execute(
                    "INSERT INTO field_versions (lead_key, provider, field, occurred_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (lead_key, provider, field) DO UPDATE SET occurred_at = excluded.occurred_at"
                    " WHERE excluded.occurred_at > field_versions.occurred_at",
                    (group.lead_key, group.provider, name, occurred_at),
                )

    def polling_deliveries(self, now: float, limit: int) -> list[DeliveryGroup]:
        """Async deliveries whose status poll is due (one group per request id)."""
        rows = (
            self.connection()
            .execute(
                "SELECT d.command_id, d.provider, d.lead_key, d.seq, d.attempts, d.polls, d.request_id,"
                " c.received_at, c.body"
                " FROM deliveries d JOIN commands c ON c.command_id = d.command_id"
                " WHERE d.status = 'polling' AND d.next_attempt_at <= ? ORDER BY d.seq LIMIT ?",
                (now, limit),
            )
            .fetchall()
        )
        groups: dict[tuple[str, str], DeliveryGroup] = {}
        for row in rows:
            key = (row["provider"], row["request_id"] or row["command_id"])
            group = groups.setdefault(key, DeliveryGroup(provider=row["provider"], lead_key=row["lead_key"]))
            group.deliveries.append(
                Delivery(
                    command=LeadUpdateCommand.from_json(row["body"]),
                    provider=row["provider"],
                    seq=row["seq"],
                    attempts=row["attempts"],
                    status="polling",
                    polls=row["polls"],
                    request_id=row["request_id"],
                    received_at=row["received_at"],
                )
            )
        if rows:
            # A lease: nobody polls these again until this poll has recorded its answer.
            with self.transaction() as db:
                db.executemany(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE command_id = ? AND provider = ?",
                    [(now + 300, row["command_id"], row["provider"]) for row in rows],
                )
        return list(groups.values())

    # ---- event log ---------------------------------------------------------------------

    def get_event(self, command_id: str) -> dict[str, Any] | None:
        db = self.connection()
        row = db.execute("SELECT * FROM commands WHERE command_id = ?", (command_id,)).fetchone()
        if row is None:
            return None
        deliveries = db.execute(
            "SELECT provider, status, attempts, polls, next_attempt_at, last_error, error_stage, response, request_id,"
            " replays, updated_at, delivered_at, first_attempt_at FROM deliveries WHERE command_id = ? ORDER BY provider",
            (command_id,),
        ).fetchall()
        return {
            "command_id": row["command_id"],
            "status": _overall_status([d["status"] for d in deliveries]),
            "lead_key": row["lead_key"],
            "source": row["source"],
            "event_type": row["event_type"],
            "occurred_at": row["occurred_at"],
            "received_at": _iso(row["received_at"]),
            "duplicates_received": row["duplicates"],
            "command": redact_obj(json.loads(row["body"])),
            "deliveries": [
                {
                    "provider": d["provider"],
                    "status": d["status"],
                    "attempts": d["attempts"],
                    "polls": d["polls"],
                    "next_attempt_at": _iso(d["next_attempt_at"]) if d["status"] in OPEN_STATUSES else None,
                    "first_attempt_at": _iso(d["first_attempt_at"]),
                    "last_error": d["last_error"],
                    "error_stage": d["error_stage"],
                    "response": json.loads(d["response"]) if d["response"] else None,
                    "request_id": d["request_id"],
                    "replays": d["replays"],
                    "updated_at": _iso(d["updated_at"]),
                    "delivered_at": _iso(d["delivered_at"]) if d["delivered_at"] else None,
                }
                for d in deliveries
            ],
        }

    def list_events(
        self, status: str | None = None, provider: str | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT c.seq, c.command_id, c.source, c.event_type, c.lead_key, c.received_at,"
            " d.provider, d.status, d.attempts, d.last_error, d.error_stage, d.updated_at"
            " FROM commands c JOIN deliveries d ON d.command_id = c.command_id WHERE c.seq > ?"
        )
        params: list[Any] = [after_seq]
        if status:
            sql += " AND d.status = ?"
            params.append(status)
        if provider:
            sql += " AND d.provider = ?"
            params.append(provider)
        sql += " ORDER BY c.seq LIMIT ?"
        params.append(limit)
        return [
            {
                "seq": row["seq"],
                "command_id": row["command_id"],
                "source": row["source"],
                "event_type": row["event_type"],
                "lead_key": row["lead_key"],
                "received_at": _iso(row["received_at"]),
                "provider": row["provider"],
                "status": row["status"],
                "attempts": row["attempts"],
                "last_error": row["last_error"],
                "error_stage": row["error_stage"],
                "updated_at": _iso(row["updated_at"]),
            }
            for row in self.connection().execute(sql, params).fetchall()
        ]

    def replay(
        self, command_id: str, provider: str | None = None, routed: list[str] | None = None
    ) -> list[str]:
        """Send dead-lettered deliveries of a command again (fresh retry budget).
        `routed`: the providers the current config routes the command to, added if missing."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT seq, body FROM commands WHERE command_id = ?", (command_id,)).fetchone()
            if row is None:
                raise KeyError(command_id)
            if routed:
                command = LeadUpdateCommand.from_json(row["body"])
                wanted = [p for p in routed if provider in (None, p)]
                self._add_deliveries(db, row["seq"], command, wanted, now)
            sql = (
                "UPDATE deliveries SET status = 'pending', attempts = 0, polls = 0, first_attempt_at = NULL,"
                " next_attempt_at = ?, replays = replays + 1,"
                " updated_at = ? WHERE command_id = ? AND status = 'dead_lettered'"
            )
            params: list[Any] = [now, now, command_id]
            if provider:
                sql += " AND provider = ?"
                params.append(provider)
            db.execute(sql, params)
            return [
                r["provider"]
                for r in db.execute(
                    "SELECT provider FROM deliveries WHERE command_id = ? AND status = 'pending'",
                    (command_id,),
                )
            ]

    # ---- provider controls (operator pause, the circuit breaker's shared state) ----------

    def provider_controls(self) -> dict[str, ProviderControl]:
        rows = self.connection().execute("SELECT * FROM provider_controls").fetchall()
        return {
            row["provider"]: ProviderControl(
                provider=row["provider"],
                paused=bool(row["paused"]),
                breaker=row["breaker"],
                reason=row["reason"],
                opened_at=row["opened_at"],
                next_probe_at=row["next_probe_at"],
                probes=row["probes"],
                updated_at=row["updated_at"],
            )
            for row in rows
        }

    def put_provider_control(self, control: ProviderControl) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO provider_controls"
                " (provider, paused, breaker, reason, opened_at, next_probe_at, probes, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    control.provider,
                    int(control.paused),
                    control.breaker,
                    control.reason,
                    control.opened_at,
                    control.next_probe_at,
                    control.probes,
                    control.updated_at,
                ),
            )

    def queue_stats(self, now: float | None = None) -> dict[str, float]:
        now = now or time.time()
        row = (
            self.connection()
            .execute(
                "SELECT COUNT(*) AS depth, MIN(c.received_at) AS oldest FROM deliveries d"
                " JOIN commands c ON c.command_id = d.command_id WHERE d.status IN ('pending', 'in_flight', 'polling')"
            )
            .fetchone()
        )
        return {
            "depth": float(row["depth"]),
            "oldest_age_seconds": (now - row["oldest"]) if row["oldest"] else 0.0,
        }


def _overall_status(statuses: list[str]) -> str:
    if not statuses:
        return "unrouted"
    if all(s == "delivered" for s in statuses):
        return "delivered"
    if any(s == "dead_lettered" for s in statuses):
        return "dead_lettered"
    return "pending"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"
