"""The system of record: one SQL implementation of the state interface for SQLite (embedded) and PostgreSQL (distributed), its migrations and retention; the Redis rate limiter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.state.engine import Engine, PostgresEngine, SQLiteEngine
from service.state.migrations import migrate
from service.state.store import SqlStateStore

SQLITE_PREFIX = "sqlite:///"


def database_url(config: Mapping[str, Any]) -> str:
    """`database.url`, or the embedded SQLite file at `storage.path` when it is not set."""
    return config["database"].get("url") or SQLITE_PREFIX + str(config["storage"]["path"])


def open_engine(url: str, settings: Mapping[str, Any] | None = None) -> Engine:
    settings = settings or {}
    if url.startswith(SQLITE_PREFIX):
        return SQLiteEngine(url[len(SQLITE_PREFIX) :])
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(
            url,
            pool_size=int(settings.get("pool_size", 10)),
            statement_timeout_ms=int(settings.get("statement_timeout_ms", 5000)),
            connect_timeout_seconds=float(settings.get("connect_timeout_seconds", 5.0)),
        )
    raise ValueError(f"database.url must start with {SQLITE_PREFIX} or postgresql://")


def open_state_store(config: Mapping[str, Any], *, apply_migrations: bool = True) -> SqlStateStore:
    engine = open_engine(database_url(config), config["database"])
    if apply_migrations:
        migrate(engine)
    return SqlStateStore(engine)


__all__ = ["SqlStateStore", "database_url", "migrate", "open_engine", "open_state_store"]
