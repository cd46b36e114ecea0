"""Rate limits per provider account: never more than `calls` in any `per_seconds` window.

A sliding-window log, not a token bucket: a bucket of 25 refilling at 5/s lets 50 calls
through in some 5-second windows, which is exactly what LeadSquared answers with 429.
`acquire` never blocks: it takes a slot or says how long until one frees, so a lead
waiting for LeadSquared does not hold a worker that another provider could use.
The in-process limiter serves one dispatcher; several replicas share `RedisRateLimiter`.

A slot is stamped when it is taken, before the call leaves; the provider counts the call when
it arrives, which can be later (a busy interpreter, a slow connect). `settle` re-stamps a slot
with the moment its call ended, which is never earlier than when the provider counted it, so
later calls are measured against an upper bound and a delayed call cannot cause a 429.
"""

from __future__ import annotations

import bisect
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
        # Per account: slot stamps, sorted; and the stamps of calls still in flight.
        self._calls: dict[str, list[float]] = collections.defaultdict(list)
        self._in_flight: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def acquire(self, account: str, calls: int, per_seconds: float) -> float:
        window = per_seconds + SAFETY_MARGIN_SECONDS
        now = self._clock()
        with self._lock:
            log = self._calls[account]
            expired = bisect.bisect_right(log, now - window)
            del log[:expired]
            if len(log) < calls:
                bisect.insort(log, now)
                self._in_flight[account].append(now)
                return 0.0
            return max(0.001, log[0] + window - now)

    def settle(self, account: str) -> None:
        """A call on `account` has ended: move one in-flight slot's stamp to now. Slots are
        interchangeable, so the oldest in-flight stamp is moved; once every call has ended
        each stamp is some call's end time, an upper bound on when the provider counted it."""
        now = self._clock()
        with self._lock:
            in_flight = self._in_flight[account]
            if not in_flight:
                return
            taken = in_flight.popleft()
            log = self._calls[account]
            index = bisect.bisect_left(log, taken)
            if index < len(log) and log[index] == taken:  # gone if `penalise` rewrote the log
                del log[index]
                bisect.insort(log, now)

    def penalise(self, account: str, seconds: float, calls: int, per_seconds: float) -> None:
        """After a 429: treat the window as full for `seconds` (the provider knows best)."""
        window = per_seconds + SAFETY_MARGIN_SECONDS
        now = self._clock()
        with self._lock:
            self._calls[account] = [now + seconds - window] * calls
            self._in_flight[account].clear()
