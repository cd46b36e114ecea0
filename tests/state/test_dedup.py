"""Dedup claims on both engines: claim, confirm, release, pending expiry, and races between
threads and between processes (exactly one claimant wins each key)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from service.domain.state import Claim
from service.state import SqlStateStore
from tests.state.conftest import StoreSpec


def test_claim_confirm_then_duplicate(store: SqlStateStore) -> None:
    assert store.claim("cmd:a", 60) is Claim.CLAIMED
    assert store.claim("cmd:a", 60) is Claim.IN_PROGRESS
    store.confirm("cmd:a", 3600)
    assert store.claim("cmd:a", 60) is Claim.DUPLICATE


def test_release_frees_a_pending_claim_but_never_a_confirmed_one(store: SqlStateStore) -> None:
    assert store.claim("cmd:b", 60) is Claim.CLAIMED
    store.release("cmd:b")
    assert store.claim("cmd:b", 60) is Claim.CLAIMED
    store.confirm("cmd:b", 3600)
    store.release("cmd:b")
    assert store.claim("cmd:b", 60) is Claim.DUPLICATE


@pytest.mark.slow
def test_an_expired_pending_claim_is_taken_again(store: SqlStateStore) -> None:
    assert store.claim("cmd:c", 1) is Claim.CLAIMED
    deadline = time.time() + 5
    while store.claim("cmd:c", 60) is not Claim.CLAIMED:
        assert time.time() < deadline, "the pending claim never expired"
        time.sleep(0.05)


def test_claim_confirm_and_enqueue_commit_together_or_not_at_all(store: SqlStateStore) -> None:
    from tests.state.conftest import make_command

    command = make_command(1)
    try:
        with store.transaction():
            assert store.claim("cmd:tx", 60) is Claim.CLAIMED
            store.enqueue(command)
            raise RuntimeError("crash before confirm")
    except RuntimeError:
        pass
    assert store.get_event(command.command_id) is None
    assert store.claim("cmd:tx", 60) is Claim.CLAIMED  # nothing of the failed transaction stayed


def test_threads_racing_for_one_key_yield_one_claim(store_spec: StoreSpec) -> None:
    stores = [store_spec.open(pool_size=2) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    results: list[Claim] = []
    lock = threading.Lock()

    def contend(store: SqlStateStore) -> None:
        barrier.wait()
        for number in range(20):
            answer = store.claim(f"cmd:race{number}", 60)
            with lock:
                results.append((number, answer))  # type: ignore[arg-type]

    threads = [threading.Thread(target=contend, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    for number in range(20):
        answers = [a for n, a in results if n == number]  # type: ignore[misc]
        assert answers.count(Claim.CLAIMED) == 1, answers
        assert len(answers) == 8


def _claim_keys(
    spec: StoreSpec, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue
) -> None:
    store = spec.open(pool_size=1)
    start.wait(10)
    out.put([str(store.claim(f"cmd:proc{number}", 60)) for number in range(30)])
    store.close()


def test_processes_racing_for_keys_yield_one_claim_each(store_spec: StoreSpec) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Event()
    out: multiprocessing.Queue = context.Queue()
    processes = [context.Process(target=_claim_keys, args=(store_spec, start, out)) for _ in range(4)]
    for process in processes:
        process.start()
    start.set()
    answers = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
        assert process.exitcode == 0
    for number in range(30):
        column = [answer[number] for answer in answers]
        assert column.count("claimed") == 1, column


def test_a_command_still_on_record_after_its_key_expired_is_not_queued_twice(store: SqlStateStore) -> None:
    from tests.state.conftest import make_command

    command = make_command(1)
    store.enqueue(command)
    store.enqueue(command)  # the dedup key lapsed, the command row did not
    assert len(store.list_events()) == 1
    assert store.get_event(command.command_id)["duplicates_received"] == 1
