"""Waking the embedded dispatcher when work is enqueued: a Unix datagram socket beside the database.

The web workers (`Notifier`) send an empty datagram after each durable accept; the
dispatcher loop (`Waiter`) waits on its socket with the poll interval as the timeout, so new
work is claimed within milliseconds while the slow poll stays as the safety net: a lost
datagram (no dispatcher listening, a full socket buffer, a dispatcher restarting) only
means the work waits for the next poll. Nothing here can fail or slow down a request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import sys
from pathlib import Path
from types import TracebackType

# sockaddr_un holds 108 bytes on Linux (104 on BSD/macOS), the terminating NUL included.
_MAX_SOCKET_PATH = 100


def wakeup_address(database: str | Path) -> str | bytes:
    """The dispatcher's socket for the queue in `database`: `<database>.wakeup`, or on Linux an
    abstract socket named after that path when the path is too long for a socket address."""
    path = os.path.abspath(str(database)) + ".wakeup"
    if len(path.encode()) <= _MAX_SOCKET_PATH or not sys.platform.startswith("linux"):
        return path
    return b"\0leadrelay-wakeup-" + hashlib.sha256(path.encode()).hexdigest()[:32].encode()


class Notifier:
    """Sends wake-ups to the dispatcher; never blocks, never raises."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._pid = 0

    def notify(self) -> None:
        try:
            if self._socket is None or self._pid != os.getpid():  # one socket per (forked) process
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
                self._pid = os.getpid()
            self._socket.sendto(b"", self.address)
        except OSError:
            # No dispatcher listening (ENOENT, ECONNREFUSED) or its buffer is full (EAGAIN: it
            # has wake-ups queued already). The poll interval picks the work up either way.
            pass


class Waiter:
    """The dispatcher's side: listens while open (`with waiter:`), `wait()` returns on a
    wake-up or after the timeout. `wake()` wakes it from a thread of the same process."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._local: tuple[socket.socket, socket.socket] | None = None

    def __enter__(self) -> Waiter:
        self._local = socket.socketpair()
        for end in self._local:
            end.setblocking(False)
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if isinstance(self.address, str):
                # A file left by a dispatcher that died; one dispatcher per queue file holds
                # the dispatcher lock, so nobody else is listening on it.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.address)
            listening.bind(self.address)
            listening.setblocking(False)
            self._socket = listening
        except OSError:
            listening.close()  # no wake-ups (a read-only directory): the poll interval alone
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            if isinstance(self.address, str):
                with contextlib.suppress(OSError):
                    os.unlink(self.address)
        if self._local is not None:
            for end in self._local:
                end.close()
            self._local = None

    @property
    def listening(self) -> bool:
        return self._socket is not None

    def wake(self) -> None:
        local = self._local
        if local is not None:
            with contextlib.suppress(OSError):  # already awake (buffer full) or closing
                local[1].send(b"\0")

    def wait(self, timeout: float) -> bool:
        """Block until a wake-up or `timeout` seconds; True when woken. Every wake-up queued
        so far is consumed: a burst of enqueues wakes the loop once."""
        sources = [s for s in (self._socket, self._local[0] if self._local else None) if s is not None]
        if not sources:
            return False
        ready, _, _ = select.select(sources, [], [], timeout)
        for source in ready:
            with contextlib.suppress(OSError):  # BlockingIOError: drained
                for _ in range(1024):  # bounded: a sender faster than this loop cannot hold it here
                    source.recv(4096)
        return bool(ready)
