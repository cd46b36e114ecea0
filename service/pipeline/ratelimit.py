"""The in-process `RateLimiter`: a sliding-window log per provider account, for one dispatcher.

A sliding-window log, not a token bucket: a bucket of 25 refilling at 5/s lets 50 calls
through in some 5-second windows, which is exactly what LeadSquared answers with 429.
Several replicas share `service/state/redis_limiter.RedisRateLimiter` instead; both follow
the contract in `service/domain/limits.py` (acquire, settle, penalise, usage, free_in).
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable

from service.domain.limits import window_seconds


class InProcessRateLimiter:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        # Per account: slot stamps, sorted; the stamps of calls still in flight; and the
        # moment a 429's pause ends.
        self._calls: dict[str, list[float]] = collections.defaultdict(list)
        self._in_flight: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._paused_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, account: str, calls: int, per_seconds: float) -> float:
        return self._slot(account, calls, per_seconds, take=True)

    def free_in(self, account: str, calls: int, per_seconds: float) -> float:
        return self._slot(account, calls, per_seconds, take=False)

    def _slot(self, account: str, calls: int, per_seconds: float, take: bool) -> float:
        window = window_seconds(per_seconds)
        now = self._clock()
        with self._lock:
            paused = self._paused_until.get(account, 0.0) - now
            if paused > 0:
                return max(0.001, paused)
            log = self._calls[account]
            expired = bisect.bisect_right(log, now - window)
            del log[:expired]
            if len(log) < calls:
                if take:
                    bisect.insort(log, now)
                    self._in_flight[account].append(now)
                return 0.0
            return max(0.001, log[len(log) - calls] + window - now)

    def settle(self, account: str) -> None:
        """Slots are interchangeable, so the oldest in-flight stamp is moved to now; once every
        call has ended each stamp is some call's end time, an upper bound on when the provider
        counted it."""
        now = self._clock()
        with self._lock:
            in_flight = self._in_flight[account]
            if not in_flight:
                return
            taken = in_flight.popleft()
            log = self._calls[account]
            index = bisect.bisect_left(log, taken)
            if index < len(log) and log[index] == taken:  # gone only once it left the window
                del log[index]
                bisect.insort(log, now)

    def penalise(self, account: str, seconds: float, calls: int, per_seconds: float) -> None:
        """A pause on top of the log: the calls already made still count after it ends."""
        now = self._clock()
        with self._lock:
            self._paused_until[account] = max(self._paused_until.get(account, 0.0), now + seconds)

    def usage(self, account: str, per_seconds: float) -> int:
        """Stamps inside the window ending now: what `acquire` would count (the log is not pruned
        here; `acquire` does that)."""
        now = self._clock()
        with self._lock:
            log = self._calls.get(account, [])
            return len(log) - bisect.bisect_right(log, now - window_seconds(per_seconds))
