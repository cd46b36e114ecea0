"""The one backoff function: exponential delay with equal jitter, for every retry schedule."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Attempt 1 waits about `base`, each next one twice as long, never more than `cap`.
    Equal jitter: half the delay is fixed, half random, so retries from many workers spread
    out while every delay stays at least half its nominal value (a schedule one can state)."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay / 2 + (rng or random).uniform(0, delay / 2)
