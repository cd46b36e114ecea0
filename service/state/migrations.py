"""Schema migrations: numbered, ordered steps per dialect, recorded in `schema_migrations`.

Alembic needs SQLAlchemy, which the store does not use (see docs/state.md for the measured
cost); a migrator this small covers what we need: ordered steps, applied once, each in its
own transaction, and safe to run from several processes at once (the first one wins).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.state.engine import Dialect, Engine, Session

log = logging.getLogger("leadrelay.state")

Step = str | Callable[[Session, Dialect], None]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    steps: tuple[Step, ...]


def _columns(db: Session, dialect: Dialect, table: str) -> set[str]:
    if dialect.name == "sqlite":
        return {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
    rows = db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?",
        (table,),
    )
    return {row["column_name"] for row in rows}


def add_column(table: str, column: str, definition: str) -> Step:
    """ALTER TABLE ADD COLUMN unless it is there already (SQLite has no IF NOT EXISTS for it)."""

    def step(db: Session, dialect: Dialect) -> None:
        if column not in _columns(db, dialect, table):
            db.execute(
                f"ALTER TABLE {table} ADD COLUMN {column} {definition.format(float=dialect.float_type)}"
            )

    return step


def _ddl(statement: str) -> Step:
    def step(db: Session, dialect: Dialect) -> None:
        db.execute(statement.format(seq_pk=dialect.seq_primary_key, float=dialect.float_type))

    return step


def _postgresql_only(statement: str) -> Step:
    def step(db: Session, dialect: Dialect) -> None:
        if dialect.name == "postgresql":
            db.execute(statement)

    return step


# Tables that churn (every row is deleted by retention): autovacuum's default (20 % of the
# table dead) lets them bloat between passes; 2 % keeps the size level (bench/soak.py).
CHURNING_TABLES = ("commands", "deliveries", "history", "dedup")


def _backfill_lead_identities(db: Session, dialect: Dialect) -> None:
    """Commands queued by the previous version carry their lead only in the JSON body."""
    if dialect.name == "sqlite":
        db.execute(
            "UPDATE commands SET lead_id = json_extract(body, '$.lead.id'),"
            " lead_email = json_extract(body, '$.lead.email'), lead_phone = json_extract(body, '$.lead.phone')"
            " WHERE lead_id IS NULL AND lead_email IS NULL AND lead_phone IS NULL"
        )


MIGRATIONS: tuple[Migration, ...] = (
    # The previous version's embedded schema, exactly: an existing file already has it.
    Migration(
        1,
        "queue, ledger, field versions, dedup",
        (
            _ddl(
                "CREATE TABLE IF NOT EXISTS commands (seq {seq_pk}, command_id TEXT NOT NULL UNIQUE,"
                " lead_key TEXT NOT NULL, source TEXT NOT NULL, event_type TEXT NOT NULL, occurred_at TEXT NOT NULL,"
                " received_at {float} NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL)"
            ),
            _ddl(
                "CREATE TABLE IF NOT EXISTS deliveries (command_id TEXT NOT NULL, provider TEXT NOT NULL,"
                " seq BIGINT NOT NULL, lead_key TEXT NOT NULL, status TEXT NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at {float} NOT NULL, last_error TEXT,"
                " error_stage TEXT, response TEXT, request_id TEXT, replays INTEGER NOT NULL DEFAULT 0,"
                " updated_at {float} NOT NULL, delivered_at {float}, PRIMARY KEY (command_id, provider))"
            ),
            add_column("deliveries", "polls", "INTEGER NOT NULL DEFAULT 0"),
            "CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (status, seq)",
            "CREATE TABLE IF NOT EXISTS field_versions (lead_key TEXT NOT NULL, provider TEXT NOT NULL,"
            " field TEXT NOT NULL, occurred_at TEXT NOT NULL, PRIMARY KEY (lead_key, provider, field))",
            _ddl(
                "CREATE TABLE IF NOT EXISTS dedup (key TEXT PRIMARY KEY, state TEXT NOT NULL,"
                " expires_at {float} NOT NULL)"
            ),
        ),
    ),
    Migration(
        2,
        "lead identities, claim owners, history, provider controls, lead claims, retention indexes",
        (
            add_column("commands", "lead_id", "TEXT"),
            add_column("commands", "lead_email", "TEXT"),
            add_column("commands", "lead_phone", "TEXT"),
            _backfill_lead_identities,
            "CREATE INDEX IF NOT EXISTS commands_lead_id ON commands (lead_id)",
            "CREATE INDEX IF NOT EXISTS commands_lead_email ON commands (lead_email)",
            "CREATE INDEX IF NOT EXISTS commands_lead_phone ON commands (lead_phone)",
            "CREATE INDEX IF NOT EXISTS commands_lead_key ON commands (lead_key)",
            "CREATE INDEX IF NOT EXISTS commands_received ON commands (received_at)",
            add_column("deliveries", "owner", "TEXT"),
            add_column("deliveries", "heartbeat_at", "{float}"),
            "CREATE INDEX IF NOT EXISTS deliveries_command ON deliveries (command_id)",
            "CREATE INDEX IF NOT EXISTS deliveries_updated ON deliveries (status, updated_at)",
            "CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at)",
            _ddl(
                "CREATE TABLE IF NOT EXISTS history (id {seq_pk}, command_id TEXT NOT NULL, provider TEXT,"
                " at {float} NOT NULL, status TEXT NOT NULL, detail TEXT)"
            ),
            "CREATE INDEX IF NOT EXISTS history_command ON history (command_id, id)",
            "CREATE INDEX IF NOT EXISTS history_at ON history (at)",
            _ddl(
                "CREATE TABLE IF NOT EXISTS provider_controls (provider TEXT PRIMARY KEY,"
                " paused INTEGER NOT NULL DEFAULT 0, breaker TEXT NOT NULL DEFAULT 'closed', reason TEXT,"
                " opened_at {float}, next_probe_at {float}, probes INTEGER NOT NULL DEFAULT 0,"
                " updated_at {float} NOT NULL)"
            ),
            _ddl(
                "CREATE TABLE IF NOT EXISTS lead_claims (provider TEXT NOT NULL, lead_key TEXT NOT NULL,"
                " owner TEXT NOT NULL, expires_at {float} NOT NULL, PRIMARY KEY (provider, lead_key))"
            ),
            *(
                _postgresql_only(
                    f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02,"
                    " autovacuum_vacuum_threshold = 1000)"
                )
                for table in CHURNING_TABLES
            ),
        ),
    ),
    Migration(
        3,
        "double submits: the command a duplicate repeats",
        (add_column("commands", "duplicate_of", "TEXT"),),
    ),
    Migration(
        4,
        "retry horizon: when a delivery was first attempted",
        (add_column("deliveries", "first_attempt_at", "{float}"),),
    ),
    Migration(
        5,
        "rate-limit budget samples the dispatchers publish for the console",
        (
            _ddl(
                "CREATE TABLE IF NOT EXISTS rate_limit_samples (provider TEXT NOT NULL, at {float} NOT NULL,"
                " used INTEGER NOT NULL, calls INTEGER NOT NULL, per_seconds {float} NOT NULL,"
                " PRIMARY KEY (provider, at))"
            ),
        ),
    ),
    Migration(
        6,
        "the inbox: an accepted command in one row, moved on to the queue tables in batches",
        (
            _ddl(
                "CREATE TABLE IF NOT EXISTS inbox (id {seq_pk}, command_id TEXT NOT NULL UNIQUE,"
                " claim_key TEXT NOT NULL, claim_expires_at {float} NOT NULL, lead_key TEXT NOT NULL,"
                " source TEXT NOT NULL, event_type TEXT NOT NULL, occurred_at TEXT NOT NULL,"
                " received_at {float} NOT NULL, body TEXT NOT NULL, lead_id TEXT, lead_email TEXT,"
                " lead_phone TEXT, providers TEXT NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0)"
            ),
        ),
    ),
)


def _run(step: Step, db: Session, dialect: Dialect) -> None:
    if isinstance(step, str):
        db.execute(step)
    else:
        step(db, dialect)


# Any constant: the key of the transaction-level advisory lock serialising schema creation.
SCHEMA_LOCK_KEY = 7_304_512


def applied_versions(engine: Engine) -> set[int]:
    with engine.transaction() as db:
        if engine.dialect.name == "postgresql":
            # CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator (two processes
            # starting on a fresh database): the second waits here, then finds the table.
            db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
        _ddl(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at {float} NOT NULL)"
        )(db, engine.dialect)
        return {row["version"] for row in db.execute("SELECT version FROM schema_migrations")}


def migrate(engine: Engine) -> list[int]:
    """Apply the missing migrations in order; returns the versions applied by this call."""
    done = applied_versions(engine)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        with engine.transaction() as db:
            if engine.dialect.name == "postgresql":
                # Two processes migrating at once: the second waits here, then sees the row.
                db.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            if db.execute(
                "SELECT 1 AS x FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone():
                continue
            for step in migration.steps:
                _run(step, db, engine.dialect)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
        log.info(
            "schema migration applied", extra={"version": migration.version, "migration": migration.name}
        )
        applied.append(migration.version)
    return applied


def pending_versions(engine: Engine) -> list[int]:
    done = applied_versions(engine)
    return [m.version for m in MIGRATIONS if m.version not in done]
