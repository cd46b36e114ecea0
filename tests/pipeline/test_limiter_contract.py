"""The rate-limiter contract (`service/domain/limits.py`) on both implementations: never more
than N calls in any window, including right after a 429 and when calls end late.

The in-process limiter runs on a fake clock (exact, instant); the Redis one on real Redis
and its real clock, with short windows."""

from __future__ import annotations

import random
import time

import pytest
import redis

from service.domain.limits import SAFETY_MARGIN_SECONDS, RateLimiter
from service.pipeline.ratelimit import InProcessRateLimiter
from service.state.redis_limiter import RedisRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def most_in_any_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best, start = 0, 0
    for end, t in enumerate(stamps):
        while t - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_in_process_a_429_pauses_but_keeps_the_calls_already_made() -> None:
    clock = Clock()
    limiter: RateLimiter = InProcessRateLimiter(clock=clock)
    calls, per = 5, 5.0
    for _ in range(calls):
        assert limiter.acquire("acct", calls, per) == 0.0
        clock.now += 0.1
    limiter.penalise("acct", 1.0, calls, per)  # Retry-After: 1 s, the window is still in use
    assert 0.9 <= limiter.acquire("acct", calls, per) <= 1.0
    clock.now += 1.0
    # The pause is over, but the five calls of the last 5 s still count: no burst.
    wait = limiter.acquire("acct", calls, per)
    assert wait > 0
    clock.now = 1000.0 + per + SAFETY_MARGIN_SECONDS + 0.001  # the first call left the window
    assert limiter.acquire("acct", calls, per) == 0.0
    assert limiter.acquire("acct", calls, per) > 0


def test_in_process_never_more_than_n_in_any_window_with_429s_and_late_calls() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock=clock)
    rng = random.Random(7)
    calls, per = 25, 5.0
    counted: list[float] = []  # when the provider counted each call: somewhere before its end
    in_flight: list[tuple[float, float]] = []  # (ends at, counted at)
    for _ in range(20_000):
        clock.now += rng.uniform(0.0, 0.05)
        for ends_at, _ in sorted(in_flight):
            if ends_at <= clock.now:
                limiter.settle("acct")
        in_flight = [(e, c) for e, c in in_flight if e > clock.now]
        if rng.random() < 0.002:
            limiter.penalise("acct", rng.uniform(0.1, 3.0), calls, per)
        if limiter.acquire("acct", calls, per) == 0.0:
            duration = rng.choice([0.01, 0.05, 0.3, 1.5])
            counted_at = clock.now + duration * rng.random()  # the provider counts it on arrival
            counted.append(counted_at)
            in_flight.append((clock.now + duration, counted_at))
    assert most_in_any_window(counted, per) <= calls
    assert len(counted) > 10 * calls


def test_redis_a_429_pauses_but_keeps_the_calls_already_made(redis_url: str, redis_prefix: str) -> None:
    limiter: RateLimiter = RedisRateLimiter(redis.Redis.from_url(redis_url), redis_prefix)
    calls, per = 4, 1.0
    assert [limiter.acquire("acct", calls, per) for _ in range(calls)] == [0.0] * calls
    limiter.penalise("acct", 0.3, calls, per)
    assert 0.2 < limiter.acquire("acct", calls, per) <= 0.3
    deadline = time.monotonic() + 0.35
    while time.monotonic() < deadline:
        time.sleep(0.01)
    # The pause is over but the window of the four calls is not: still no slot.
    wait = limiter.acquire("acct", calls, per)
    assert 0.4 < wait <= per + SAFETY_MARGIN_SECONDS - 0.3


def test_redis_settle_restamps_a_late_call(redis_url: str, redis_prefix: str) -> None:
    limiter = RedisRateLimiter(redis.Redis.from_url(redis_url), redis_prefix)
    assert limiter.acquire("acct", 1, 0.5) == 0.0
    started = time.monotonic()
    while time.monotonic() - started < 0.3:  # the call takes 0.3 s
        time.sleep(0.01)
    limiter.settle("acct")
    wait = limiter.acquire("acct", 1, 0.5)
    # Measured from the end of the call, not from when the slot was taken.
    assert 0.5 < wait <= 0.5 + SAFETY_MARGIN_SECONDS


@pytest.mark.slow
def test_redis_never_more_than_n_in_any_window_with_429s_and_late_calls(
    redis_url: str, redis_prefix: str
) -> None:
    limiters = [RedisRateLimiter(redis.Redis.from_url(redis_url), redis_prefix) for _ in range(2)]
    rng = random.Random(3)
    calls, per = 5, 0.5
    ended: list[float] = []
    deadline = time.monotonic() + 3.0
    penalised = 0
    while time.monotonic() < deadline:
        limiter = limiters[rng.randrange(2)]
        if limiter.acquire("acct", calls, per) == 0.0:
            time.sleep(rng.choice([0.0, 0.0, 0.02, 0.1]))  # some calls end late
            ended.append(time.monotonic())  # the provider counted it at the latest now
            limiter.settle("acct")
            if penalised < 3 and rng.random() < 0.05:
                limiter.penalise("acct", 0.2, calls, per)
                penalised += 1
        else:
            time.sleep(0.002)
    assert most_in_any_window(ended, per) <= calls
    assert len(ended) >= 3 * calls


def test_in_process_usage_counts_the_slots_in_the_window_ending_now() -> None:
    clock = Clock()
    limiter: RateLimiter = InProcessRateLimiter(clock=clock)
    calls, per = 3, 5.0
    assert limiter.usage("acct", per) == 0
    assert limiter.acquire("acct", calls, per) == 0.0
    clock.now += 1.0
    assert limiter.acquire("acct", calls, per) == 0.0
    assert limiter.usage("acct", per) == 2
    assert limiter.usage("other", per) == 0  # per account
    clock.now += 2.0
    limiter.settle("acct")  # the first call ended now: its slot counts from here
    clock.now = 1000.0 + 1.0 + per + SAFETY_MARGIN_SECONDS + 0.001  # the second slot left the window
    assert limiter.usage("acct", per) == 1
    assert limiter.acquire("acct", calls, per) == 0.0
    assert limiter.acquire("acct", calls, per) == 0.0
    assert limiter.acquire("acct", calls, per) > 0  # full: usage says so too
    assert limiter.usage("acct", per) == calls
    clock.now += per + SAFETY_MARGIN_SECONDS + 0.001
    assert limiter.usage("acct", per) == 0


def test_redis_usage_counts_every_replicas_slots_in_the_window_on_redis_time(
    redis_url: str, redis_prefix: str
) -> None:
    first, second = (RedisRateLimiter(redis.Redis.from_url(redis_url), redis_prefix) for _ in range(2))
    calls, per = 5, 2.0  # long enough that a loaded machine still makes the calls inside one window
    assert first.usage("acct", per) == 0
    assert [first.acquire("acct", calls, per) for _ in range(2)] == [0.0, 0.0]
    assert second.acquire("acct", calls, per) == 0.0
    assert first.usage("acct", per) == second.usage("acct", per) == 3
    assert first.usage("other", per) == 0
    while second.acquire("acct", calls, per) == 0.0:  # fill the window
        pass
    assert first.usage("acct", per) == calls
    deadline = time.monotonic() + 5.0
    while first.usage("acct", per) and time.monotonic() < deadline:  # the window passes
        time.sleep(0.02)
    assert first.usage("acct", per) == 0
    assert second.acquire("acct", calls, per) == 0.0  # and acquire agrees: a slot is free


def test_in_process_free_in_answers_like_acquire_without_taking_a_slot() -> None:
    clock = Clock()
    limiter: RateLimiter = InProcessRateLimiter(clock=clock)
    calls, per = 2, 5.0
    assert limiter.free_in("acct", calls, per) == 0.0
    assert limiter.usage("acct", per) == 0  # looking took nothing
    assert limiter.acquire("acct", calls, per) == 0.0
    clock.now += 1.0
    assert limiter.acquire("acct", calls, per) == 0.0
    wait = limiter.free_in("acct", calls, per)
    assert wait == pytest.approx(per + SAFETY_MARGIN_SECONDS - 1.0)
    assert limiter.acquire("acct", calls, per) == pytest.approx(wait)
    clock.now += wait + 0.001
    assert limiter.free_in("acct", calls, per) == 0.0
    limiter.penalise("acct", 30.0, calls, per)
    assert limiter.free_in("acct", calls, per) == pytest.approx(30.0)  # a 429's pause counts


def test_redis_free_in_answers_like_acquire_without_taking_a_slot(redis_url: str, redis_prefix: str) -> None:
    first, second = (RedisRateLimiter(redis.Redis.from_url(redis_url), redis_prefix) for _ in range(2))
    calls, per = 2, 30.0
    assert first.free_in("acct", calls, per) == 0.0
    assert second.usage("acct", per) == 0  # looking took nothing
    assert [second.acquire("acct", calls, per) for _ in range(2)] == [0.0, 0.0]
    wait = first.free_in("acct", calls, per)  # the other replica's slots count
    assert 0 < wait <= per + SAFETY_MARGIN_SECONDS
    assert first.usage("acct", per) == calls
    first.penalise("other", 60.0, calls, per)
    assert first.free_in("other", calls, per) > per + SAFETY_MARGIN_SECONDS
