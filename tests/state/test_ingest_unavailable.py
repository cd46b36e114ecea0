"""Ingest when the database cannot take the write: 503 with Retry-After, never a 5xx crash,
and recovery without a restart once it is back (PostgreSQL refusing every connection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.support import (
    ThreadedDispatcher,
    admin_get,
    base_config,
    canonical_event,
    post_generic,
    wait_until,
)
from tests.support_postgres import ScratchDatabase


def _set_connections(database: ScratchDatabase, allowed: bool) -> None:
    with psycopg.connect(database.server_conninfo, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database.name,)
            )


@pytest.mark.slow
def test_ingest_answers_503_while_postgresql_refuses_and_recovers(
    make_service: Any, tmp_path: Path, postgres_database: ScratchDatabase
) -> None:
    database = ScratchDatabase(postgres_database.server_conninfo)
    try:
        raw = base_config(
            tmp_path,
            database={
                "url": database.url,
                "pool_size": 2,
                "connect_timeout_seconds": 1,
                "statement_timeout_ms": 1000,
            },
        )
        service = make_service(raw)
        assert (
            post_generic(service.url, canonical_event(email="before@example.com"), "msg_before").status_code
            == 202
        )

        _set_connections(database, allowed=False)
        refused = post_generic(service.url, canonical_event(email="during@example.com"), "msg_during")
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        assert refused.json()["code"] == "UNAVAILABLE"

        _set_connections(database, allowed=True)
        # As a sender does after a 503: retry; the pool reconnects within seconds, no restart.
        wait_until(
            lambda: (
                post_generic(
                    service.url, canonical_event(email="during@example.com"), "msg_during"
                ).status_code
                == 202
            ),
            timeout=20,
            interval=0.5,
            what="ingest back after the outage",
        )
        listed = admin_get(service.url, "/v1/events?limit=10").json()["events"]
        assert sorted(e["command_id"] for e in listed) == ["generic:msg_before", "generic:msg_during"]
    finally:
        _set_connections(database, allowed=True)
        database.drop()


@pytest.mark.slow
def test_the_embedded_dispatcher_waits_out_a_database_outage(
    make_service: Any, tmp_path: Path, postgres_database: ScratchDatabase, lsq_sim: Any, caplog: Any
) -> None:
    database = ScratchDatabase(postgres_database.server_conninfo)
    try:
        raw = base_config(
            tmp_path,
            lsq_sim.url,
            database={
                "url": database.url,
                "pool_size": 2,
                "connect_timeout_seconds": 1,
                "statement_timeout_ms": 1000,
            },
        )
        service = make_service(raw)
        requests.post(f"{lsq_sim.url}/_sim/leads", json=[{"EmailAddress": "after@example.com"}], timeout=5)
        with ThreadedDispatcher(service.dispatcher()) as running:
            _set_connections(database, allowed=False)
            # The loop hits the outage and keeps going instead of exiting.
            wait_until(
                lambda: caplog.text.count("state store unavailable") >= 2, timeout=30, what="the outage seen"
            )
            assert running.thread.is_alive()
            _set_connections(database, allowed=True)
            wait_until(
                lambda: (
                    post_generic(
                        service.url, canonical_event(email="after@example.com"), "msg_after"
                    ).status_code
                    == 202
                ),
                timeout=20,
                interval=0.5,
                what="ingest back after the outage",
            )
            wait_until(
                lambda: (
                    admin_get(service.url, "/v1/events/generic:msg_after").json()["status"] == "delivered"
                ),
                timeout=30,
                what="delivery after the outage",
            )
            assert running.thread.is_alive()
    finally:
        _set_connections(database, allowed=True)
        database.drop()


@pytest.mark.slow
def test_the_embedded_dispatcher_starts_while_the_database_refuses(
    make_service: Any, tmp_path: Path, postgres_database: ScratchDatabase, lsq_sim: Any, caplog: Any
) -> None:
    """The start-up recovery meets the outage: the dispatcher waits for the database, then delivers."""
    database = ScratchDatabase(postgres_database.server_conninfo)
    try:
        raw = base_config(
            tmp_path,
            lsq_sim.url,
            database={
                "url": database.url,
                "pool_size": 2,
                "connect_timeout_seconds": 1,
                "statement_timeout_ms": 1000,
            },
        )
        service = make_service(raw)
        requests.post(f"{lsq_sim.url}/_sim/leads", json=[{"EmailAddress": "start@example.com"}], timeout=5)
        assert (
            post_generic(service.url, canonical_event(email="start@example.com"), "msg_start").status_code
            == 202
        )
        _set_connections(database, allowed=False)
        with ThreadedDispatcher(service.dispatcher()) as running:
            wait_until(
                lambda: caplog.text.count("state store unavailable") >= 2, timeout=30, what="the outage seen"
            )
            assert running.thread.is_alive()
            _set_connections(database, allowed=True)
            wait_until(
                # Until the web's pool has reconnected too, the admin API answers 503 (no status).
                lambda: (
                    admin_get(service.url, "/v1/events/generic:msg_start").json().get("status") == "delivered"
                ),
                timeout=30,
                what="delivery once the database is back",
            )
            assert running.thread.is_alive()
    finally:
        _set_connections(database, allowed=True)
        database.drop()
