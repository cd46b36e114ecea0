"""When a transient failure is tried again: exponential backoff up to a retry horizon in time.

The horizon is measured from the delivery's first attempt (`first_attempt_at`), minus the
time its provider's circuit breaker was open (waiting behind an open breaker spends no
horizon). `max_attempts` is a secondary bound (0: none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.domain.backoff import backoff_seconds


def next_retry_at(
    attempts: int,
    first_attempt_at: float,
    now: float,
    settings: Mapping[str, Any],
    retry_after: float | None = None,
    excluded_seconds: float = 0.0,
) -> float | None:
    """The time of the next attempt after `attempts` failed ones; None: give up (dead letter)."""
    max_attempts = int(settings.get("max_attempts") or 0)
    if max_attempts and attempts >= max_attempts:
        return None
    spent = now - first_attempt_at - excluded_seconds
    if spent >= float(settings["retry_horizon_seconds"]):
        return None
    delay = backoff_seconds(
        attempts, float(settings["backoff_base_seconds"]), float(settings["max_backoff_seconds"])
    )
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + delay


def give_up_reason(attempts: int, first_attempt_at: float, now: float, settings: Mapping[str, Any]) -> str:
    max_attempts = int(settings.get("max_attempts") or 0)
    if max_attempts and attempts >= max_attempts:
        return f"gave up after {attempts} attempts"
    hours = (now - first_attempt_at) / 3600
    return f"gave up after {attempts} attempts over {hours:.1f} h (retry horizon)"
