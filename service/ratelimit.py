"""Rate limits per provider account: never more than `calls` in any `per_seconds` window.

A sliding-window log, not a token bucket: a bucket of 25 refilling at 5/s lets 50 calls
through in some 5-second windows, which is exactly what LeadSquared answers with 429.
`acquire` never blocks: it takes a slot or says how long until one frees, so a lead
waiting for LeadSquared does not hold a worker that another provider could use.
The in-process limiter serves one dispatcher; several replicas share `RedisRateLimiter`.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Protocol

# Calls leave here slightly before the provider counts them; keep a margin so network
# jitter cannot squeeze call N+1 into the provider's window of the first N.
SAFETY_MARGIN_SECONDS = 0.15


class RateLimiter(Protocol):
    def acquire(self, account: str, calls: int, per_seconds: float) -> float:
        """0.0 when a slot was taken, else the seconds to wait before trying again."""


class InProcessRateLimiter:
    def __init__(self, clock: type[time.monotonic] | None = None) -> None:  # type: ignore[valid-type]
        self._clock = clock or time.monotonic
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def acquire(self, account: str, calls: int, per_seconds: float) -> float:
        window = per_seconds + SAFETY_MARGIN_SECONDS
        now = self._clock()
        with self._lock:
            log = self._calls[account]
            while log and log[0] <= now - window:
                log.popleft()
            if len(log) < calls:
                log.append(now)
                return 0.0
            return max(0.001, log[0] + window - now)

    def penalise(self, account: str, seconds: float, calls: int, per_seconds: float) -> None:
        """After a 429: treat the window as full for `seconds` (the provider knows best)."""
        window = per_seconds + SAFETY_MARGIN_SECONDS
        now = self._clock()
        with self._lock:
            log = self._calls[account]
            log.clear()
            log.extend([now + seconds - window] * calls)
