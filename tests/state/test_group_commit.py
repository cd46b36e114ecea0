"""Group commit on the ingest path: concurrent accepts (threads, and two processes on one file)
are each durable once answered, none lost or doubled; a failing unit of work in a batch
fails alone; the batch shares one commit."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service.pipeline.ingest import Ingestor
from service.state import SqlStateStore
from service.state.engine import SQLiteEngine
from tests.state.conftest import StoreSpec, make_command, wait_until
from tests.support import base_config, load

THREADS = 8
COMMANDS = 120


def _ingestor(store: SqlStateStore, tmp_path: Path) -> Ingestor:
    config = load(base_config(tmp_path))
    return Ingestor(config, store, store, commit_together=store.commit_together)


def _stored(spec: StoreSpec, command_id: str) -> bool:
    """Seen through a connection of its own: what an answered accept left is committed."""
    reader = spec.open(pool_size=1)
    try:
        return reader.get_event(command_id) is not None
    finally:
        reader.close()


def _accept_all(spec: StoreSpec, tmp_path: Path, numbers: list[int]) -> list[tuple[int, str]]:
    """Every number twice (a sender's retry racing the original), from THREADS threads."""
    store = spec.open(pool_size=THREADS)
    ingestor = _ingestor(store, tmp_path)
    not_durable: list[int] = []

    def accept(number: int) -> tuple[int, str]:
        result = ingestor.accept(make_command(number, providers=()))
        if result.status == "accepted" and not _stored(spec, result.command_id):
            not_durable.append(number)
        return number, result.status

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(accept, [n for n in numbers for _ in range(2)]))
    finally:
        store.close()
    assert not not_durable, f"answered accepted but not committed: {not_durable}"
    return answers


def _assert_once_each(spec: StoreSpec, answers: list[tuple[int, str]], numbers: range) -> None:
    for number in numbers:
        statuses = [status for n, status in answers if n == number]
        assert statuses.count("accepted") == 1, (number, statuses)
        assert set(statuses) <= {"accepted", "duplicate", "in_progress"}, statuses
    reader = spec.open(pool_size=1)
    try:
        with reader.read() as db:
            ids = [row["command_id"] for row in db.execute("SELECT command_id FROM commands").fetchall()]
            done = db.execute("SELECT COUNT(*) AS n FROM dedup WHERE state = 'done'").fetchone()["n"]
    finally:
        reader.close()
    assert sorted(ids) == sorted(f"generic:{n}" for n in numbers)
    assert done == len(numbers)


def test_concurrent_accepts_are_each_durable_once_answered(store_spec: StoreSpec, tmp_path: Path) -> None:
    answers = _accept_all(store_spec, tmp_path, list(range(COMMANDS)))
    _assert_once_each(store_spec, answers, range(COMMANDS))


def test_accepts_share_commits(tmp_path: Path) -> None:
    store = SqlStateStore(SQLiteEngine(tmp_path / "state.db"))
    from service.state import migrate

    migrate(store.engine)
    ingestor = _ingestor(store, tmp_path)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda n: ingestor.accept(make_command(n, providers=())), range(COMMANDS)))
    group = store.engine.group_commit
    assert group.units == COMMANDS
    assert group.batches < COMMANDS  # some accepts shared a commit
    store.close()


def _process(spec: StoreSpec, tmp_path: Path, start: Any, out: Any) -> None:
    start.wait(10)
    out.put(_accept_all(spec, tmp_path, list(range(COMMANDS))))


def test_two_processes_accepting_the_same_events_queue_each_once(tmp_path: Path) -> None:
    spec = StoreSpec("sqlite", str(tmp_path / "state.db"))
    from service.state import migrate

    engine = SQLiteEngine(spec.target)
    migrate(engine)
    engine.close()
    context = multiprocessing.get_context("fork")
    start = context.Event()
    out: Any = context.Queue()
    processes = [context.Process(target=_process, args=(spec, tmp_path, start, out)) for _ in range(2)]
    for process in processes:
        process.start()
    start.set()
    answers = [answer for _ in processes for answer in out.get(timeout=120)]
    for process in processes:
        process.join(10)
        assert process.exitcode == 0
    _assert_once_each(spec, answers, range(COMMANDS))


def test_a_failing_unit_does_not_fail_its_batch(tmp_path: Path) -> None:
    from service.state import migrate

    store = SqlStateStore(SQLiteEngine(tmp_path / "state.db"))
    migrate(store.engine)
    group = store.engine.group_commit
    good = [make_command(n) for n in range(3)]
    bad = make_command(99)

    def failing() -> None:
        store.enqueue(bad)  # written, then undone with this unit's savepoint
        with store.transaction() as db:  # a real constraint violation: the row exists
            db.execute("INSERT INTO commands (command_id, lead_key, source, event_type, occurred_at,"
                       " received_at, body) VALUES (?, 'k', 's', 'e', 'o', 0, '{}')", (bad.command_id,))  # fmt: skip

    outcomes: dict[str, Any] = {}

    def run(name: str, work: Any) -> None:
        try:
            outcomes[name] = store.commit_together(work)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[name] = exc

    release = threading.Event()
    held = threading.Event()

    def hold_write_lock() -> None:  # the units queue up behind it, then run as one batch
        with store.transaction():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    held.wait(10)
    batches_before = group.batches
    works: list[tuple[str, Any]] = [(c.command_id, (lambda c=c: store.enqueue(c))) for c in good[:2]]
    works.insert(1, ("bad", failing))
    works.append((good[2].command_id, lambda: store.enqueue(good[2])))
    threads = [threading.Thread(target=run, args=item) for item in works]
    threads[0].start()
    wait_until(lambda: group.waiting() == 1)  # the leader, waiting for the lock
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: group.waiting() == len(works))
    release.set()
    for thread in [holder, *threads]:
        thread.join(10)
    assert group.batches == batches_before + 1
    assert isinstance(outcomes["bad"], sqlite3.IntegrityError)
    for command in good:
        assert outcomes[command.command_id] is True  # enqueue: queued, not a duplicate
        assert store.get_event(command.command_id) is not None
    assert store.get_event(bad.command_id) is None
    store.close()


def test_a_failing_unit_alone_in_its_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    # A batch of one runs without a savepoint: its failure must undo the whole transaction.
    from service.state import migrate

    store = SqlStateStore(SQLiteEngine(tmp_path / "state.db"))
    migrate(store.engine)
    written = make_command(5)

    def half_done() -> None:
        store.enqueue(written)
        raise ValueError("the second half failed")

    with pytest.raises(ValueError, match="second half"):
        store.commit_together(half_done)
    assert store.engine.group_commit.batches == 1
    assert store.get_event(written.command_id) is None
    assert store.commit_together(lambda: store.enqueue(written)) is True  # the engine still writes
    store.close()


def test_an_engine_error_in_a_unit_answers_state_unavailable(tmp_path: Path) -> None:
    from service.domain.state import StateUnavailable
    from service.state import migrate

    store = SqlStateStore(SQLiteEngine(tmp_path / "state.db"))
    migrate(store.engine)

    def broken() -> None:
        with store.transaction() as db:
            db.execute("SELECT nothing FROM nowhere")  # sqlite3.OperationalError

    with pytest.raises(StateUnavailable):
        store.commit_together(broken)
    store.enqueue(make_command(1))  # the engine still writes
    assert store.get_event("generic:1") is not None
    store.close()


def test_units_run_in_their_callers_context(tmp_path: Path) -> None:
    """The leader runs its neighbours' work: their log lines must keep their own request ids."""
    from service.logs import request_id_var
    from service.state import migrate

    store = SqlStateStore(SQLiteEngine(tmp_path / "state.db"))
    migrate(store.engine)
    group = store.engine.group_commit
    seen: dict[str, str | None] = {}
    release, held = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        with store.transaction():
            held.set()
            release.wait(10)

    def caller(name: str) -> None:
        request_id_var.set(name)
        seen[name] = store.commit_together(request_id_var.get)

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    held.wait(10)
    threads = [threading.Thread(target=caller, args=(f"request-{n}",), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: group.waiting() == 4)
    release.set()
    for thread in [holder, *threads]:
        thread.join(10)
    assert seen == {f"request-{n}": f"request-{n}" for n in range(4)}
    store.close()
