"""A slot is re-stamped with its call's end, so a call that left late cannot let the next
window start early (the provider counts a call when it arrives)."""

from __future__ import annotations

from service.domain.limits import SAFETY_MARGIN_SECONDS
from service.pipeline.ratelimit import InProcessRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_call_holds_its_slot_until_it_ended() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    assert limiter.acquire("acct", 2, 1.0) == 0.0  # call A
    assert limiter.acquire("acct", 2, 1.0) == 0.0  # call B
    clock.now += 0.01
    limiter.settle("acct")  # one call ended at once
    clock.now += 0.5
    limiter.settle("acct")  # the other reached the provider late and ended at +0.51
    clock.now = 100.0 + 1.0 + SAFETY_MARGIN_SECONDS + 0.02
    assert limiter.acquire("acct", 2, 1.0) == 0.0  # the slot of the quick call is free again
    wait = limiter.acquire("acct", 2, 1.0)
    assert 0.3 < wait <= 0.5  # the slow call's slot frees one window after it ended, not after it left


def test_settle_after_penalise_is_harmless() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    assert limiter.acquire("acct", 1, 1.0) == 0.0
    limiter.penalise("acct", 3.0, 1, 1.0)
    limiter.settle("acct")
    assert limiter.acquire("acct", 1, 1.0) > 2.5
