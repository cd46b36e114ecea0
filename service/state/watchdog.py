"""A client-side deadline for PostgreSQL round trips. A frozen server (SIGSTOP, a stalled VM,
a hung storage layer) still has its kernel acknowledge TCP, so neither the server's
`statement_timeout` nor any TCP timeout ends a statement waiting on it: past its deadline the
watchdog shuts the connection's socket down and the waiting call fails at once with
`OperationalError` (the pool then replaces that connection)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TICK_SECONDS = 0.25


class StatementWatchdog:
    def __init__(self, deadline_seconds: float) -> None:
        self.deadline_seconds = deadline_seconds
        self._running: dict[int, tuple[float, Any]] = {}  # id(guard) -> (deadline, connection)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, connection: Any) -> Iterator[None]:
        """One round trip to the server (a statement, a commit, a rollback) under the deadline."""
        token = object()
        with self._lock:
            self._running[id(token)] = (time.monotonic() + self.deadline_seconds, connection)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="pg-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(id(token), None)

    def _watch(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                late = [key for key, (deadline, _) in self._running.items() if deadline <= now]
                connections = [self._running.pop(key)[1] for key in late]
            for connection in connections:
                _shut_down(connection)


def _shut_down(connection: Any) -> None:
    """Shut the socket down under the blocked reader (a dup'd descriptor of the same socket:
    shutdown acts on the socket, and closing our duplicate leaves psycopg's own intact)."""
    try:
        duplicate = os.dup(connection.fileno())
    except (OSError, ValueError, Exception):  # already closed: nothing is waiting on it
        return
    try:
        with socket.socket(fileno=duplicate) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
