"""Durability after the write lock: a commit is answered only once a WAL flush that started
after it has finished; one flush covers every commit before it, in any process on the file;
the next batch of a group commit begins while the previous one is being flushed."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from service.domain.state import StateUnavailable
from service.state import SqlStateStore, migrate
from service.state.engine import SQLiteEngine
from service.state.group_commit import GroupCommit
from tests.state.conftest import CountingWalSync, wait_until


def _engine(path: Path) -> SQLiteEngine:
    engine = SQLiteEngine(path)
    migrate(engine)
    return engine


def _commit(engine: SQLiteEngine, key: str) -> int:
    with engine.transaction(sync=False) as db:
        db.execute("INSERT INTO dedup (key, state, expires_at) VALUES (?, 'done', 1e12)", (key,))
    return int(engine._local.last_commit)


def test_one_flush_covers_every_commit_before_it_in_any_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first, second = _engine(path), _engine(path)  # two engines on one file: two processes' view
    first.wal, second.wal = CountingWalSync(path), CountingWalSync(path)
    a = _commit(first, "a")
    b = _commit(second, "b")
    assert b == a + 1  # one numbering for the file, in commit order
    second.wal.durable(b)
    first.wal.durable(a)  # covered by the other's flush
    assert (first.wal.flushes, second.wal.flushes) == (0, 1)
    c = _commit(first, "c")
    first.wal.durable(c)  # a commit after that flush needs one of its own
    assert first.wal.flushes == 1
    first.close()
    second.close()


def test_a_write_transaction_returns_flushed(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "state.db")
    engine.wal = CountingWalSync(engine.path)
    with engine.transaction() as db:
        db.execute("INSERT INTO dedup (key, state, expires_at) VALUES ('k', 'done', 1e12)")
    assert engine.wal.flushes == 1
    assert engine.wal._flushed() >= engine._local.last_commit
    engine.close()


def test_a_failed_flush_is_state_unavailable(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "state.db")
    commit = _commit(engine, "k")
    engine.wal._wal = str(tmp_path / "missing" / "state.db-wal")
    with pytest.raises(StateUnavailable, match="could not be flushed"):
        engine.wal.durable(commit)
    engine.close()


def _commit_and_flush(path: str, start: Any, out: Any) -> None:
    engine = SQLiteEngine(path)
    engine.wal = CountingWalSync(Path(path))
    start.wait(10)
    for number in range(200):
        with engine.transaction() as db:
            db.execute(
                "INSERT INTO dedup (key, state, expires_at) VALUES (?, 'done', 1e12)",
                (f"{os.getpid()}:{number}",),
            )
    out.put(engine.wal.flushes)
    engine.close()


def test_processes_committing_together_share_flushes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _engine(path).close()
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    processes = [context.Process(target=_commit_and_flush, args=(str(path), start, out)) for _ in range(3)]
    for process in processes:
        process.start()
    start.set()
    flushes = sum(out.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(10)
        assert process.exitcode == 0
    store = SqlStateStore(SQLiteEngine(path))
    with store.read() as db:
        assert db.execute("SELECT COUNT(*) AS n FROM dedup").fetchone()["n"] == 600
    store.close()
    assert flushes <= 600  # never more than one per commit; fewer whenever commits overlapped


def test_the_next_batch_begins_while_the_previous_one_is_flushed(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "state.db")
    flushing, release = threading.Event(), threading.Event()
    calls = {"flush": 0}

    def slow_sync() -> None:
        calls["flush"] += 1
        if calls["flush"] == 1:
            flushing.set()
            assert release.wait(10)
        engine.sync()

    group = GroupCommit(lambda: engine.transaction(sync=False), lambda exc: None, sync=slow_sync)
    ran: list[str] = []
    answered: list[str] = []

    def accept(name: str) -> None:
        group.run(lambda: ran.append(name))
        answered.append(name)

    first = threading.Thread(target=accept, args=("first",))
    first.start()
    assert flushing.wait(10)
    second = threading.Thread(target=accept, args=("second",))
    second.start()
    wait_until(lambda: "second" in ran)  # its batch ran while the first one was being flushed
    assert "first" not in answered  # nobody is answered before their flush returned
    release.set()
    first.join(10)
    second.join(10)
    assert sorted(answered) == ["first", "second"]
    engine.close()
