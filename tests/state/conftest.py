"""The state contract suite runs every test against both engines: a SQLite file of the test's
own, and a PostgreSQL database of the session's own (tables emptied between tests)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.domain.command import LeadUpdateCommand
from service.state import SqlStateStore, migrate
from service.state.engine import PostgresEngine, SQLiteEngine
from service.state.wal_sync import WalSync
from tests.support_postgres import ScratchDatabase, postgres_server

TABLES = (
    "commands",
    "deliveries",
    "field_versions",
    "dedup",
    "history",
    "provider_controls",
    "lead_claims",
    "rate_limit_samples",
)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[ScratchDatabase]:
    server, private = postgres_server()
    database = ScratchDatabase(server)
    engine = PostgresEngine(database.conninfo, pool_size=2)
    migrate(engine)
    engine.close()
    try:
        yield database
    finally:
        database.drop()
        if private is not None:
            private.stop()


class StoreSpec:
    """How to open the test's database again, in another thread or process."""

    def __init__(self, engine: str, target: str) -> None:
        self.engine = engine
        self.target = target

    def open(self, pool_size: int = 4) -> SqlStateStore:
        if self.engine == "sqlite":
            return SqlStateStore(SQLiteEngine(self.target))
        return SqlStateStore(PostgresEngine(self.target, pool_size=pool_size))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Any) -> StoreSpec:
    if request.param == "sqlite":
        spec = StoreSpec("sqlite", str(tmp_path / "state.db"))
        engine = SQLiteEngine(spec.target)
        migrate(engine)
        engine.close()
        return spec
    database: ScratchDatabase = request.getfixturevalue("postgres_database")
    spec = StoreSpec("postgresql", database.conninfo)
    store = spec.open(pool_size=1)
    with store.transaction() as db:
        db.execute(f"TRUNCATE {', '.join(TABLES)}")
    store.close()
    return spec


@pytest.fixture
def store(store_spec: StoreSpec) -> Iterator[SqlStateStore]:
    opened = store_spec.open(pool_size=16)
    try:
        yield opened
    finally:
        opened.close()


def make_command(
    number: int,
    *,
    email: str | None = None,
    phone: str | None = None,
    lead_id: str | None = None,
    changes: dict[str, Any] | None = None,
    providers: tuple[str, ...] = ("leadsquared",),
    source: str = "generic",
    event_type: str = "form.submitted",
    occurred_at: str = "2026-11-22T10:00:00Z",
) -> LeadUpdateCommand:
    if not (email or phone or lead_id):
        email = f"lead{number}@example.com"
    return LeadUpdateCommand.from_json(
        json.dumps(
            {
                "schema": "lead-update/v1",
                "command_id": f"{source}:{number}",
                "source": source,
                "event_type": event_type,
                "occurred_at": occurred_at,
                "lead": {"id": lead_id, "email": email, "phone": phone},
                "changes": changes or {"city": f"City {number}"},
                "metadata": {},
                "providers": list(providers),
                "post_updated_lead": True,
            }
        )
    )


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class CountingWalSync(WalSync):
    """The real flush, counted."""

    flushes = 0

    def _flush(self) -> None:
        super()._flush()
        self.flushes += 1
