"""The one TTL cache: `cachetools.TTLCache` (bounded, least-recently-used eviction) behind a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import cachetools


class SharedTTLCache:
    """Thread-safe: a handler's or look-up client's worker threads share one instance.
    Entries expire `ttl_seconds` after they were put; past `max_entries` the least recently
    used entry goes (one entry, not the whole cache). `ttl_seconds <= 0` caches nothing."""

    def __init__(
        self, ttl_seconds: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._items: cachetools.TTLCache[str, Any] | None = (
            cachetools.TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=clock)
            if ttl_seconds > 0
            else None
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        if self._items is None:
            return None
        with self._lock:
            return self._items.get(key)

    def put(self, key: str, value: Any) -> None:
        if self._items is None:
            return
        with self._lock:
            self._items[key] = value

    def forget(self, key: str) -> None:
        if self._items is None:
            return
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        if self._items is None:
            return 0
        with self._lock:
            return len(self._items)
