"""The event-log queries the admin API and the console read (filters, timeline, bulk replay,
overview) and the provider controls, for the embedded SQLite store.

A separate block of `EmbeddedStore` with the agreed state-interface shapes
(`service/domain/state.py`), kept apart so it moves as one piece into `service/state/`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from service.domain.state import EventFilter, ProviderControl

CONSOLE_SCHEMA = """
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
CREATE INDEX IF NOT EXISTS deliveries_delivered_at ON deliveries (delivered_at);
"""

OPEN_STATUSES = ("pending", "in_flight", "polling")
HOUR = 3600.0


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def overall_status(statuses: list[str]) -> str:
    if not statuses:
        return "unrouted"
    if all(s == "delivered" for s in statuses):
        return "delivered"
    if any(s == "dead_lettered" for s in statuses):
        return "dead_lettered"
    return "pending"


def _filter_sql(event_filter: EventFilter) -> tuple[str, list[Any]]:
    """WHERE clauses over `commands c JOIN deliveries d` for a filter."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("d.status", event_filter.status),
        ("d.provider", event_filter.provider),
        ("c.source", event_filter.source),
        ("c.event_type", event_filter.event_type),
    ):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if event_filter.lead:
        lead = event_filter.lead.strip()
        # The lead as the command holds it: email lower-cased, phone E.164, id verbatim.
        clauses.append(
            "(json_extract(c.body, '$.lead.email') = ? OR json_extract(c.body, '$.lead.phone') = ?"
            " OR json_extract(c.body, '$.lead.id') = ? OR c.lead_key = ?)"
        )
        params += [lead.lower(), lead.replace(" ", ""), lead, lead]
    if event_filter.since is not None:
        clauses.append("c.received_at >= ?")
        params.append(event_filter.since)
    if event_filter.until is not None:
        clauses.append("c.received_at < ?")
        params.append(event_filter.until)
    return "".join(f" AND {clause}" for clause in clauses), params


class EventLogQueries:
    """Mixed into `EmbeddedStore`, which provides `connection()`, `transaction()` and `_add_deliveries`."""

    connection: Callable[[], sqlite3.Connection]
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def _create_console_tables(self) -> None:
        self.connection().executescript(CONSOLE_SCHEMA)

    # ---- event log ---------------------------------------------------------------------

    def list_events(
        self, event_filter: EventFilter | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        """One row per (command, provider) matching the filter, oldest first; cursor = seq."""
        where, params = _filter_sql(event_filter or EventFilter())
        sql = (
            "SELECT c.seq, c.command_id, c.source, c.event_type, c.lead_key, c.received_at,"
            " json_extract(c.body, '$.lead') AS lead, d.provider, d.status, d.attempts, d.last_error,"
            " d.error_stage, d.updated_at"
            f" FROM commands c JOIN deliveries d ON d.command_id = c.command_id WHERE c.seq > ?{where}"
            " ORDER BY c.seq, d.provider LIMIT ?"
        )
        rows = self.connection().execute(sql, [after_seq, *params, limit]).fetchall()
        return [
            {
                "seq": row["seq"],
                "command_id": row["command_id"],
                "source": row["source"],
                "event_type": row["event_type"],
                "lead_key": row["lead_key"],
                "lead": json.loads(row["lead"]) if row["lead"] else None,
                "received_at": iso_time(row["received_at"]),
                "provider": row["provider"],
                "status": row["status"],
                "attempts": row["attempts"],
                "last_error": row["last_error"],
                "error_stage": row["error_stage"],
                "updated_at": iso_time(row["updated_at"]),
            }
            for row in rows
        ]

    def timeline(self, command_id: str) -> list[dict[str, Any]]:
        """What happened when, synthesised from the command and its delivery rows (the last
        outcome per provider: earlier attempts are counted, not itemised, in this store)."""
        db = self.connection()
        received = db.execute(
            "SELECT received_at, source, duplicates FROM commands WHERE command_id = ?", (command_id,)
        ).fetchone()
        if received is None:
            return []
        entries: list[tuple[float, str | None, str, str | None]] = [
            (received["received_at"], None, "received", f"from {received['source']}")
        ]
        for d in db.execute(
            "SELECT provider, status, attempts, polls, replays, last_error, error_stage, updated_at, delivered_at"
            " FROM deliveries WHERE command_id = ?",
            (command_id,),
        ):
            if d["replays"]:
                entries.append((d["updated_at"], d["provider"], "replayed", f"{d['replays']} replay(s)"))
            detail = f"{d['attempts']} attempt(s)"
            if d["polls"]:
                detail += f", {d['polls']} status poll(s)"
            if d["last_error"]:
                detail += f"; {d['error_stage'] or 'error'}: {d['last_error']}"
            at = d["delivered_at"] if d["status"] == "delivered" and d["delivered_at"] else d["updated_at"]
            entries.append((at, d["provider"], d["status"], detail))
        entries.sort(key=lambda entry: entry[0])
        return [
            {"at": iso_time(at), "provider": provider, "status": status, "detail": detail}
            for at, provider, status, detail in entries
        ]

    def replay_matching(
        self,
        event_filter: EventFilter,
        *,
        dry_run: bool,
        routed_for: Callable[[str, str], list[str]] | None = None,
    ) -> dict[str, int]:
        """Reset the dead-lettered deliveries matching the filter (fresh retry budget); a dry
        run only counts them. `routed_for` is accepted for interface parity: a dead-lettered
        delivery row already names its provider, so it is not needed here."""
        if event_filter.status not in (None, "dead_lettered"):
            return {"events": 0, "deliveries": 0}
        where, params = _filter_sql(event_filter)
        select = (
            "SELECT d.command_id, d.provider FROM commands c JOIN deliveries d ON d.command_id = c.command_id"
            f" WHERE d.status = 'dead_lettered'{where}"
        )
        now = time.time()
        with self.transaction() as db:
            rows = db.execute(select, params).fetchall()
            if not dry_run and rows:
                db.executemany(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, polls = 0, next_attempt_at = ?,"
                    " replays = replays + 1, updated_at = ?"
                    " WHERE command_id = ? AND provider = ? AND status = 'dead_lettered'",
                    [(now, now, row["command_id"], row["provider"]) for row in rows],
                )
        return {"events": len({row["command_id"] for row in rows}), "deliveries": len(rows)}

    # ---- overview ----------------------------------------------------------------------

    def overview(self, now: float) -> dict[str, Any]:
        db = self.connection()
        since = now - HOUR
        providers: dict[str, dict[str, Any]] = {}

        def provider(name: str) -> dict[str, Any]:
            return providers.setdefault(
                name,
                {
                    "delivered_last_hour": 0,
                    "failures_by_stage": {},
                    "dead_letters": 0,
                    "pending": 0,
                    "oldest_pending_age_seconds": 0.0,
                    "polling": 0,
                },
            )

        for row in db.execute(
            "SELECT d.provider, d.status, COUNT(*) AS n, MIN(c.received_at) AS oldest"
            " FROM deliveries d JOIN commands c ON c.command_id = d.command_id GROUP BY d.provider, d.status"
        ):
            entry = provider(row["provider"])
            if row["status"] == "dead_lettered":
                entry["dead_letters"] = row["n"]
            elif row["status"] == "polling":
                entry["polling"] = row["n"]
            if row["status"] in OPEN_STATUSES:
                entry["pending"] += row["n"] if row["status"] != "polling" else 0
                age = max(0.0, now - row["oldest"])
                entry["oldest_pending_age_seconds"] = max(entry["oldest_pending_age_seconds"], age)
        for row in db.execute(
            "SELECT provider, COUNT(*) AS n FROM deliveries WHERE delivered_at >= ? GROUP BY provider",
            (since,),
        ):
            provider(row["provider"])["delivered_last_hour"] = row["n"]
        for row in db.execute(
            "SELECT provider, COALESCE(error_stage, 'provider') AS stage, COUNT(*) AS n FROM deliveries"
            " WHERE last_error IS NOT NULL AND updated_at >= ? GROUP BY provider, stage",
            (since,),
        ):
            provider(row["provider"])["failures_by_stage"][row["stage"]] = row["n"]
        sources = {
            row["source"]: {"accepted": row["accepted"], "duplicates": row["duplicates"] or 0}
            for row in db.execute(
                "SELECT source, COUNT(*) AS accepted, SUM(duplicates) AS duplicates FROM commands GROUP BY source"
            )
        }
        return {"providers": providers, "sources": sources, "series": self._series(db, now)}

    @staticmethod
    def _series(db: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
        """Per-minute delivered and failed (last outcome with an error) over the last hour."""
        first = int(now // 60) * 60 - 59 * 60
        delivered = dict.fromkeys(range(60), 0)
        failed = dict.fromkeys(range(60), 0)
        for row in db.execute(
            "SELECT CAST((delivered_at - ?) / 60 AS INTEGER) AS minute, COUNT(*) AS n FROM deliveries"
            " WHERE delivered_at >= ? GROUP BY minute",
            (first, first),
        ):
            if row["minute"] in delivered:
                delivered[row["minute"]] = row["n"]
        for row in db.execute(
            "SELECT CAST((updated_at - ?) / 60 AS INTEGER) AS minute, COUNT(*) AS n FROM deliveries"
            " WHERE last_error IS NOT NULL AND updated_at >= ? GROUP BY minute",
            (first, first),
        ):
            if row["minute"] in failed:
                failed[row["minute"]] = row["n"]
        return [
            {"minute": iso_time(first + 60 * m), "delivered": delivered[m], "failed": failed[m]}
            for m in range(60)
        ]

    # ---- provider controls -------------------------------------------------------------

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
                "INSERT INTO provider_controls (provider, paused, breaker, reason, opened_at, next_probe_at,"
                " probes, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET"
                " paused = excluded.paused, breaker = excluded.breaker, reason = excluded.reason,"
                " opened_at = excluded.opened_at, next_probe_at = excluded.next_probe_at,"
                " probes = excluded.probes, updated_at = excluded.updated_at",
                (
                    control.provider,
                    int(control.paused),
                    control.breaker,
                    control.reason,
                    control.opened_at,
                    control.next_probe_at,
                    control.probes,
                    control.updated_at or time.time(),
                ),
            )


__all__ = ["EventLogQueries", "iso_time", "overall_status"]
