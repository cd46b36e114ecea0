"""Provider controls (operator pause, circuit breaker state), per-lead claims across
dispatchers, and retention: the parts of the SQL store that are not the queue or the log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.domain.state import ProviderControl
from service.state.migrations import CHURNING_TABLES

DAY = 86400.0


class ControlsMixin:
    engine: Any
    # From RateLimitSamplesMixin (an annotation, not a stub: a stub here would shadow it).
    prune_rate_limit_samples: Callable[[float, int], int]

    def transaction(self) -> Any: ...

    def read(self) -> Any: ...

    # ---- provider controls ---------------------------------------------------------------

    def provider_controls(self) -> dict[str, ProviderControl]:
        with self.read() as db:
            rows = db.execute(
                "SELECT provider, paused, breaker, reason, opened_at, next_probe_at, probes, updated_at"
                " FROM provider_controls ORDER BY provider"
            ).fetchall()
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
        """Written on transitions only (pause, resume, breaker opens or closes), not per call."""
        updated_at = control.updated_at or time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO provider_controls (provider, paused, breaker, reason, opened_at, next_probe_at, probes,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET"
                " paused = excluded.paused, breaker = excluded.breaker, reason = excluded.reason,"
                " opened_at = excluded.opened_at, next_probe_at = excluded.next_probe_at, probes = excluded.probes,"
                " updated_at = excluded.updated_at",
                (
                    control.provider, int(control.paused), control.breaker, control.reason,
                    control.opened_at, control.next_probe_at, control.probes, updated_at,
                ),
            )  # fmt: skip

    # ---- lead claims ---------------------------------------------------------------------

    def claim_lead(self, provider: str, lead_key: str, owner: str, ttl_seconds: float) -> bool:
        """At most one owner per (provider, lead) at a time, across processes: a row with an
        expiry. The owner renews by claiming again; a dead owner's claim lapses after `ttl`."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO lead_claims (provider, lead_key, owner, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (provider, lead_key) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at WHERE lead_claims.owner = excluded.owner"
                " OR lead_claims.expires_at <= ? RETURNING owner",
                (provider, lead_key, owner, now + ttl_seconds, now),
            ).fetchone()
        return row is not None

    def release_lead(self, provider: str, lead_key: str, owner: str) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM lead_claims WHERE provider = ? AND lead_key = ? AND owner = ?",
                (provider, lead_key, owner),
            )

    # ---- retention -----------------------------------------------------------------------

    def prune(self, now: float, delivered_days: float, dead_letter_days: float, batch: int = 500) -> int:
        """Delete, in transactions of at most `batch` commands: commands whose deliveries were
        all delivered more than `delivered_days` ago; commands finished with a dead letter (or
        never routed) untouched for `dead_letter_days`; expired dedup keys and lead claims;
        history older than the longer of the two; rate-limit samples older than an hour.
        Returns the rows removed."""
        self.drain_inbox()  # type: ignore[attr-defined]
        delivered_cutoff = now - delivered_days * DAY
        dead_cutoff = now - dead_letter_days * DAY
        removed = 0
        for sql, params in (
            (
                "SELECT c.command_id FROM commands c WHERE c.received_at < ? AND EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.command_id = c.command_id) AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.command_id = c.command_id"
                " AND (d.status <> 'delivered' OR d.updated_at >= ?)) LIMIT ?",
                (delivered_cutoff, delivered_cutoff),
            ),
            (
                "SELECT c.command_id FROM commands c WHERE c.received_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.command_id = c.command_id"
                " AND (d.status NOT IN ('delivered', 'dead_lettered') OR d.updated_at >= ?)) LIMIT ?",
                (dead_cutoff, dead_cutoff),
            ),
        ):
            while True:
                with self.transaction() as db:
                    ids = [row["command_id"] for row in db.execute(sql, (*params, batch)).fetchall()]
                    if ids:
                        marks = ",".join("?" * len(ids))
                        for table in ("history", "deliveries", "commands"):
                            removed += db.execute(
                                f"DELETE FROM {table} WHERE command_id IN ({marks})", ids
                            ).rowcount
                if len(ids) < batch:
                    break
        history_cutoff = min(delivered_cutoff, dead_cutoff)
        for sql, params in (
            ("DELETE FROM dedup WHERE key IN (SELECT key FROM dedup WHERE expires_at < ? LIMIT ?)", (now,)),
            (
                "DELETE FROM history WHERE id IN (SELECT id FROM history WHERE at < ? LIMIT ?)",
                (history_cutoff,),
            ),
            (
                "DELETE FROM lead_claims WHERE (provider, lead_key) IN"
                " (SELECT provider, lead_key FROM lead_claims WHERE expires_at < ? LIMIT ?)",
                (now,),
            ),
        ):
            while True:
                with self.transaction() as db:
                    count = db.execute(sql, (*params, batch)).rowcount
                removed += count
                if count < batch:
                    break
        if removed:
            self.engine.reclaim(CHURNING_TABLES)
        # A few hundred small rows an hour: not worth a VACUUM of their own.
        return removed + self.prune_rate_limit_samples(now, batch)
