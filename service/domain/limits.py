"""The rate-limiter contract: never more than `calls` provider calls in any `per_seconds` window.

Both implementations (in-process: `service/pipeline/ratelimit.py`; shared through Redis:
`service/state/redis_limiter.py`) keep a sliding-window log of call stamps per provider
account, and give the same answers:

- `acquire` never blocks: it takes a slot (0.0) or says how long until one frees;
- `settle` re-stamps one in-flight slot of this process with the moment its call ended
  (the provider counted the call at or before that moment), so a call that ended late is
  measured against an upper bound and cannot squeeze a later call into its window;
- `penalise` after a 429 adds a pause: nothing is granted before `now + seconds`, and the
  log of calls already made is KEPT, so the first calls after the pause are still measured
  against those made just before it (no full burst on top of a window still in use);
- `usage` counts the calls in the window ending now (the budget used, for the console);
- `free_in` says what `acquire` would, without taking a slot: 0.0 when one is free now, else
  the seconds until one frees (a dispatcher waits that long instead of claiming work it
  cannot send).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Calls leave here slightly before the provider counts them; keep a margin so network
# jitter cannot squeeze call N+1 into the provider's window of the first N.
SAFETY_MARGIN_SECONDS = 0.15


def window_seconds(per_seconds: float) -> float:
    """The window the log is kept over: the provider's plus the safety margin."""
    return per_seconds + SAFETY_MARGIN_SECONDS


@dataclass(frozen=True)
class RateLimitUsage:
    """One provider's budget at one moment: `used` of `calls` slots in the window ending now.
    Providers sharing an account (LeadSquared sync and async with the same keys) share `used`."""

    provider: str
    account: str
    used: int
    calls: int
    per_seconds: float


class RateLimiter(Protocol):
    def acquire(self, account: str, calls: int, per_seconds: float) -> float:
        """0.0 when a slot was taken, else the seconds to wait before trying again."""
        ...

    def settle(self, account: str) -> None:
        """A call on `account` that took a slot here has ended: re-stamp that slot with now."""
        ...

    def penalise(self, account: str, seconds: float, calls: int, per_seconds: float) -> None:
        """The provider answered 429: grant nothing on `account` for `seconds`; keep the log."""
        ...

    def usage(self, account: str, per_seconds: float) -> int:
        """The slots taken on `account` in the window ending now (the same window `acquire` counts)."""
        ...

    def free_in(self, account: str, calls: int, per_seconds: float) -> float:
        """0.0 when `acquire` would take a slot now, else the seconds until one frees; takes none."""
        ...
