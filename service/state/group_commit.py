"""Group commit: concurrent units of work of one process share one write transaction and one
fsync, each answered only after that shared commit.

A caller hands in its work (a function that runs the store's statements) and waits. The first
caller with nobody leading becomes the leader: it takes the engine's write transaction (the
write lock, BEGIN IMMEDIATE), then takes every unit of work that arrived meanwhile, runs each
inside its own savepoint (a batch of one needs none), and commits once. A unit whose statements raise is rolled back to its
savepoint and answered with its own error; its neighbours are unaffected. A failed BEGIN or
COMMIT fails every unit of the batch. Right after the COMMIT the leader hands leadership to the
oldest waiting caller, whose batch can begin while this one's commit is flushed to disk
(`sync`); nobody is answered before that flush has returned, so "answered" still means
"durable". No thread serves others for longer than one batch.

A batch of one is the single-accept path: there is no second way to write.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from service.domain.state import StateUnavailable

T = TypeVar("T")

_SAVEPOINT = "unit_of_work"


class _UnitFailed(Exception):
    """Unwinds the transaction of a batch of one whose unit raised (its error is recorded)."""


class _Unit(Generic[T]):
    """One caller's work and, once the batch is over, its result or error."""

    __slots__ = ("work", "context", "answered", "leads", "result", "error")

    def __init__(self, work: Callable[[], T]) -> None:
        self.work = work
        # Run by the leader's thread in the caller's context: its log lines keep the caller's request id.
        self.context = contextvars.copy_context()
        self.answered = threading.Event()
        self.leads = False  # set by the previous leader: this caller leads the next batch
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Batches units of work into the transactions `begin()` opens (one per batch).

    `begin`: the engine's write transaction, yielding a session that understands SAVEPOINT.
    `translate`: turns an engine error raised by a unit's statements into `StateUnavailable`
    (so the caller answers 503), or returns None for any other error."""

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Any]],
        translate: Callable[[BaseException], StateUnavailable | None],
        sync: Callable[[], None] = lambda: None,
    ) -> None:
        """`sync`: makes what `begin()` committed durable (when its commit does not do it)."""
        self._begin = begin
        self._translate = translate
        self._sync = sync
        self._mutex = threading.Lock()
        self._waiting: list[_Unit[Any]] = []
        self._leading = False
        self.batches = 0  # how many transactions were committed or attempted (for tests, benchmarks)
        self.units = 0

    def waiting(self) -> int:
        """How many units wait for the next batch."""
        with self._mutex:
            return len(self._waiting)

    def run(self, work: Callable[[], T]) -> T:
        """Run `work` in a shared transaction; return its result once the transaction committed."""
        unit: _Unit[T] = _Unit(work)
        with self._mutex:
            self._waiting.append(unit)
            unit.leads = not self._leading
            self._leading = True
        while True:
            if unit.leads:
                unit.leads = False
                self._lead(unit)
            unit.answered.wait()
            if not unit.leads:
                break
            unit.answered.clear()  # woken to lead, not answered: lead the next batch
        if unit.error is not None:
            raise unit.error
        return unit.result  # type: ignore[return-value]

    def _lead(self, own: _Unit[Any]) -> None:
        batch: list[_Unit[Any]] = []
        handed_over = False
        try:
            with self._begin() as db:
                # Taken after the write lock: everyone who arrived while we waited for it joins.
                batch = self._take()
                if len(batch) == 1:
                    self._run_alone(batch[0])
                else:
                    for unit in batch:
                        self._run_one(db, unit)
            self._hand_over()
            handed_over = True
            self._sync()
        except _UnitFailed:
            pass  # a batch of one whose unit raised: its error is recorded, the transaction undone
        except BaseException as exc:  # the BEGIN, COMMIT or sync failed: the batch is not durable
            batch = batch or self._take()
            for unit in batch:
                # An interrupted leader (KeyboardInterrupt, SystemExit) is its own matter: the others retry.
                interrupted = not isinstance(exc, Exception) and unit is not own
                unit.error = (
                    StateUnavailable("the shared transaction was interrupted") if interrupted else exc
                )
        finally:
            if not handed_over:
                self._hand_over()
            for unit in batch:
                unit.answered.set()

    def _take(self) -> list[_Unit[Any]]:
        with self._mutex:
            batch, self._waiting = self._waiting, []
        self.batches += 1
        self.units += len(batch)
        return batch

    def _run_alone(self, unit: _Unit[Any]) -> None:
        """A batch of one needs no savepoint (two statements fewer): if the unit raises, the
        whole transaction is rolled back instead."""
        try:
            unit.result = unit.context.run(unit.work)
        except Exception as exc:
            unit.error = self._translated(exc)
            raise _UnitFailed from exc

    def _run_one(self, db: Any, unit: _Unit[Any]) -> None:
        db.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            unit.result = unit.context.run(unit.work)
        except Exception as exc:
            # Only this unit's statements are undone; a failure here fails the whole batch.
            db.execute(f"ROLLBACK TO {_SAVEPOINT}")
            unit.error = self._translated(exc)
        db.execute(f"RELEASE {_SAVEPOINT}")

    def _translated(self, exc: Exception) -> BaseException:
        translated = self._translate(exc)
        if translated is not None:
            translated.__cause__ = exc
        return translated or exc

    def _hand_over(self) -> None:
        """Wake the oldest waiting caller to lead the next batch, or end the leading."""
        with self._mutex:
            if self._waiting:
                successor = self._waiting[0]
                successor.leads = True
                successor.answered.set()
            else:
                self._leading = False
