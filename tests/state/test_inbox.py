"""The embedded store's inbox: an accepted command is one durable row, moved on to the queue
tables in batches; every reader of those tables sees it; repeats stay duplicates throughout."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from service.pipeline.ingest import Ingestor
from service.state import SqlStateStore, migrate
from service.state.engine import SQLiteEngine
from tests.state.conftest import CountingWalSync, make_command
from tests.support import base_config, load


def _open(path: Path) -> SqlStateStore:
    store = SqlStateStore(SQLiteEngine(path))
    migrate(store.engine)
    return store


def _ingestor(store: SqlStateStore, tmp_path: Path) -> Ingestor:
    config = load(base_config(tmp_path))
    return Ingestor(config, store, store, commit_together=store.commit_together)


def _rows(path: Path, sql: str) -> list[tuple]:
    """Read with a connection of its own: no drain, what is on disk."""
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_an_accept_writes_one_inbox_row_and_the_move_builds_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = _open(path)
    window = 3600
    for number in (3, 1, 2):
        command = make_command(number, providers=("leadsquared", "pollybot"))
        assert store.commit_together(
            lambda c=command: store.enqueue_claimed(c, f"cmd:{c.command_id}", window)
        )
    assert [row[0] for row in _rows(path, "SELECT command_id FROM inbox ORDER BY id")] == [
        "generic:3",
        "generic:1",
        "generic:2",
    ]
    assert _rows(path, "SELECT COUNT(*) FROM commands") == [(0,)]

    assert store.drain_inbox() == 3
    assert _rows(path, "SELECT COUNT(*) FROM inbox") == [(0,)]
    # Queue order is acceptance order.
    assert [row[0] for row in _rows(path, "SELECT command_id FROM commands ORDER BY seq")] == [
        "generic:3",
        "generic:1",
        "generic:2",
    ]
    deliveries = _rows(path, "SELECT command_id, provider, status FROM deliveries ORDER BY seq, provider")
    assert deliveries == [
        (f"generic:{n}", provider, "pending") for n in (3, 1, 2) for provider in ("leadsquared", "pollybot")
    ]
    assert _rows(path, "SELECT COUNT(*) FROM history WHERE status = 'received'") == [(3,)]
    claims = _rows(path, "SELECT key, state, expires_at FROM dedup WHERE key LIKE 'cmd:%' ORDER BY key")
    assert [(key, state) for key, state, _ in claims] == [(f"cmd:generic:{n}", "done") for n in (1, 2, 3)]
    assert all(expires > time.time() + window - 60 for _, _, expires in claims)
    assert store.drain_inbox() == 0
    store.close()


def test_readers_see_an_accepted_command_at_once(tmp_path: Path) -> None:
    store = _open(tmp_path / "state.db")
    ingestor = _ingestor(store, tmp_path)
    ingestor.accept(make_command(7))
    event = store.get_event("generic:7")
    assert event is not None and event["status"] == "pending"
    assert [row["command_id"] for row in store.list_events()] == ["generic:7"]
    assert store.queue_stats()["depth"] == 1
    store.close()


def test_a_repeat_is_a_duplicate_before_and_after_the_move(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = _open(path)
    ingestor = _ingestor(store, tmp_path)
    assert ingestor.accept(make_command(5)).status == "accepted"
    assert ingestor.accept(make_command(5)).status == "duplicate"  # still in the inbox
    store.drain_inbox()
    assert ingestor.accept(make_command(5)).status == "duplicate"  # on the queue tables now
    assert _rows(path, "SELECT COUNT(*) FROM deliveries") == [(1,)]
    assert store.get_event("generic:5")["duplicates_received"] == 2  # type: ignore[index]
    store.close()


def test_a_command_still_on_record_is_not_queued_again(tmp_path: Path) -> None:
    # Its dedup key expired before retention removed it (a dead letter kept 30 days, re-sent
    # after the 7-day window): counted as a duplicate, never a second delivery.
    path = tmp_path / "state.db"
    store = _open(path)
    ingestor = _ingestor(store, tmp_path)
    ingestor.accept(make_command(9))
    store.drain_inbox()
    with store.transaction() as db:
        db.execute("UPDATE dedup SET expires_at = 0 WHERE key = 'cmd:generic:9'")
    assert ingestor.accept(make_command(9)).status == "accepted"
    store.drain_inbox()
    assert _rows(path, "SELECT COUNT(*) FROM deliveries") == [(1,)]
    assert _rows(path, "SELECT COUNT(*) FROM inbox") == [(0,)]
    assert store.get_event("generic:9")["duplicates_received"] == 1  # type: ignore[index]
    store.close()


def test_an_inbox_row_outlives_its_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = _open(path)
    _ingestor(store, tmp_path).accept(make_command(4))
    store.close()  # gone before anything moved it on
    reopened = _open(path)
    assert [row["command_id"] for row in reopened.list_events()] == ["generic:4"]
    reopened.close()


def test_claims_go_through_the_inbox_on_sqlite_only(tmp_path: Path) -> None:
    store = _open(tmp_path / "state.db")
    assert _ingestor(store, tmp_path).claims_in_queue
    store.close()


def test_the_move_commits_without_a_flush_of_its_own_and_the_next_durable_commit_covers_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = _open(path)
    store.engine.wal = wal = CountingWalSync(path)
    command = make_command(1)
    assert store.commit_together(lambda: store.enqueue_claimed(command, "cmd:generic:1", 3600))
    assert wal.flushes == 1  # the accept is answered only once flushed

    assert store.drain_inbox() == 1
    moved = store.engine._local.last_commit
    assert wal.flushes == 1
    assert wal._flushed() < moved  # committed, visible, not yet flushed
    assert _rows(path, "SELECT command_id FROM commands") == [("generic:1",)]

    store.check_writable()  # any durable write transaction
    assert wal.flushes == 2
    assert wal._flushed() >= moved
