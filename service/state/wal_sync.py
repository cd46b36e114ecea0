"""Making SQLite commits durable after the write lock: one fdatasync of the WAL covers every
commit made before it started, so concurrent committers, in any process on the file, share one."""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from pathlib import Path

from service.domain.state import StateUnavailable

_COUNTERS = struct.Struct("<QQ")  # commits numbered so far, commits known to be on disk
_COUNTER = struct.Struct("<Q")
_COMMITTED, _FLUSHED = 0, 8  # byte offsets in the counter file


class WalSync:
    """Every commit on the file gets a number (`committed`, called under the write lock, so
    numbers follow commit order in every process). `durable(n)` returns once a flush that
    started after commit `n` has finished. Flushes take turns on a lock file: whoever waited
    for one looks at what it covered before flushing again, so under load the machine makes
    one flush at a time, each for every commit before it, instead of one per commit and
    process racing each other to the disk."""

    def __init__(self, database: Path) -> None:
        self._wal = str(database) + "-wal"
        self._directory = str(database.parent)
        self._wal_inode = 0  # the WAL file whose directory entry was last synced
        base = str(database)
        self._flush_lock = open(base + ".flush-lock", "a")  # noqa: SIM115 - lives as long as the engine
        self._turn = threading.Lock()  # flock does not exclude threads sharing one open file
        fd = os.open(base + ".commits", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < _COUNTERS.size:
                os.ftruncate(fd, _COUNTERS.size)
            self._counters = mmap.mmap(fd, _COUNTERS.size)
        finally:
            os.close(fd)

    def committed(self) -> int:
        """Number the commit that just returned; call it while still holding the write lock."""
        done = self._read(_COMMITTED) + 1
        # Only the first counter: a flusher in another process may be writing the second.
        _COUNTER.pack_into(self._counters, _COMMITTED, done)
        return done

    def durable(self, commit: int) -> None:
        """Return once commit number `commit` is on disk; StateUnavailable if a flush fails."""
        if self._flushed() >= commit:
            return
        with self._turn:
            fcntl.flock(self._flush_lock, fcntl.LOCK_EX)
            try:
                if self._flushed() >= commit:
                    return  # the flush we waited for covered it
                covers = self._read(_COMMITTED)
                self._flush()
                # Under the flush lock nobody else writes `flushed`; commits may move on.
                _COUNTER.pack_into(self._counters, _FLUSHED, max(self._flushed(), covers))
            finally:
                fcntl.flock(self._flush_lock, fcntl.LOCK_UN)

    def _flushed(self) -> int:
        return self._read(_FLUSHED)

    def _read(self, offset: int) -> int:
        """A counter another process may be writing: an aligned 8-byte store is one instruction
        on the machines we run on, but a value read while it changes is read again rather than
        trusted (a number too high would skip a flush)."""
        while True:
            first = _COUNTER.unpack_from(self._counters, offset)[0]
            if _COUNTER.unpack_from(self._counters, offset)[0] == first:
                return int(first)

    def _flush(self) -> None:
        try:
            fd = os.open(self._wal, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            if inode != self._wal_inode:
                # A WAL file new since the last flush: its directory entry must survive too.
                directory = os.open(self._directory, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
                self._wal_inode = inode
        except OSError as exc:
            raise StateUnavailable(f"sqlite: the WAL could not be flushed: {exc}") from exc
