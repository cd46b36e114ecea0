"""Migrations: numbered, applied once, recorded; a previous version's SQLite file is upgraded
in place with its events kept; PostgreSQL migrates from empty and twice is a no-op."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.domain.state import EventFilter
from service.state import SqlStateStore, migrate
from service.state.engine import PostgresEngine, SQLiteEngine
from service.state.migrations import MIGRATIONS, pending_versions
from tests.support_postgres import ScratchDatabase

# The embedded schema of the version before migrations existed (service/store.py, minus `polls`,
# which that version added itself with ALTER TABLE).
PREVIOUS_SCHEMA = """
CREATE TABLE commands (seq INTEGER PRIMARY KEY AUTOINCREMENT, command_id TEXT NOT NULL UNIQUE,
    lead_key TEXT NOT NULL, source TEXT NOT NULL, event_type TEXT NOT NULL, occurred_at TEXT NOT NULL,
    received_at REAL NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL);
CREATE TABLE deliveries (command_id TEXT NOT NULL, provider TEXT NOT NULL, seq INTEGER NOT NULL,
    lead_key TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL, last_error TEXT, error_stage TEXT, response TEXT, request_id TEXT,
    replays INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL, delivered_at REAL,
    PRIMARY KEY (command_id, provider));
CREATE INDEX deliveries_open ON deliveries (status, seq);
CREATE TABLE field_versions (lead_key TEXT NOT NULL, provider TEXT NOT NULL, field TEXT NOT NULL,
    occurred_at TEXT NOT NULL, PRIMARY KEY (lead_key, provider, field));
CREATE TABLE dedup (key TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at REAL NOT NULL);
"""


def test_a_previous_versions_sqlite_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(PREVIOUS_SCHEMA)
    body = {
        "schema": "lead-update/v1", "command_id": "generic:old", "source": "generic", "event_type": "form.submitted",
        "occurred_at": "2026-11-01T10:00:00+00:00", "lead": {"id": None, "email": "old@example.com", "phone": "+14155550100"},
        "changes": {"city": "Paris"}, "metadata": {}, "providers": ["leadsquared"], "post_updated_lead": True,
    }  # fmt: skip
    now = time.time()
    old.execute(
        "INSERT INTO commands (command_id, lead_key, source, event_type, occurred_at, received_at, body)"
        " VALUES ('generic:old', 'email:old@example.com', 'generic', 'form.submitted', '2026-11-01', ?, ?)",
        (now, json.dumps(body)),
    )
    old.execute(
        "INSERT INTO deliveries (command_id, provider, seq, lead_key, status, attempts, next_attempt_at, updated_at)"
        " VALUES ('generic:old', 'leadsquared', 1, 'email:old@example.com', 'dead_lettered', 8, ?, ?)",
        (now, now),
    )
    old.execute("INSERT INTO dedup VALUES ('cmd:generic:old', 'done', ?)", (now + 3600,))
    old.commit()
    old.close()

    engine = SQLiteEngine(path)
    assert migrate(engine) == [m.version for m in MIGRATIONS]
    assert migrate(engine) == [] and pending_versions(engine) == []
    store = SqlStateStore(engine)
    event = store.get_event("generic:old")
    assert event is not None and event["status"] == "dead_lettered"
    assert event["deliveries"][0]["polls"] == 0 and event["timeline"] == []
    assert [e["command_id"] for e in store.list_events(EventFilter(lead="+14155550100"))] == ["generic:old"]
    assert store.claim("cmd:generic:old", 60) == "duplicate"
    assert store.replay("generic:old") == ["leadsquared"]


def test_postgresql_migrates_from_empty_once(postgres_database: ScratchDatabase) -> None:
    scratch = ScratchDatabase(postgres_database.server_conninfo)
    try:
        engine = PostgresEngine(scratch.conninfo, pool_size=1)
        assert pending_versions(engine) == [m.version for m in MIGRATIONS]
        assert migrate(engine) == [m.version for m in MIGRATIONS]
        assert migrate(engine) == []
        engine.close()
    finally:
        scratch.drop()


@pytest.mark.slow
def test_the_migrate_command_applies_and_checks(tmp_path: Path) -> None:
    config = tmp_path / "leadrelay.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'cli.db'}\nlogging:\n  json: false\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "--config", str(config), "migrate", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert run("--check").returncode == 1
    applied = run()
    assert applied.returncode == 0 and "migrations applied: 1, 2" in applied.stdout
    checked = run("--check")
    assert checked.returncode == 0 and "pending migrations: none" in checked.stdout


def test_processes_migrating_a_fresh_postgresql_database_at_once_all_succeed(postgres: str) -> None:
    # Web, dispatchers and source consumers of a new deployment all start on an empty database.
    database = ScratchDatabase(postgres)
    errors: list[BaseException] = []

    def migrate_one() -> None:
        engine = PostgresEngine(database.conninfo, pool_size=1)
        try:
            migrate(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            engine.close()

    try:
        threads = [threading.Thread(target=migrate_one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        engine = PostgresEngine(database.conninfo, pool_size=1)
        assert pending_versions(engine) == []
        engine.close()
    finally:
        database.drop()
