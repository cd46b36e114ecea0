"""The Redis limiter's round trips: a call that ended soon after its acquire keeps its acquire
stamp (no `settle` round trip), a longer one is re-stamped with its end, each thread settles
its own slot; under a limit far above the traffic one acquire takes spare slots for the
thread's next calls, dropped once stale or after a 429. Real Redis; the limiter's monotonic
clock is stepped by hand so the cases do not depend on how loaded the machine is."""

from __future__ import annotations

import threading

import pytest
import redis

from service.state import redis_limiter
from service.state.redis_limiter import (
    RESERVE_FRESH_SECONDS,
    RESERVE_SPARE,
    SETTLE_SKIP_SECONDS,
    RedisRateLimiter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(redis_limiter.time, "monotonic", fake)
    return fake


def stamps(client: redis.Redis, prefix: str) -> dict[str, float]:
    return {m.decode(): s for m, s in client.zrange(prefix + "rl:acct", 0, -1, withscores=True)}


def test_a_quick_call_keeps_its_acquire_stamp(redis_url: str, redis_prefix: str, clock: Clock) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, redis_prefix)
    assert limiter.acquire("acct", 5, 1.0) == 0.0
    before = stamps(client, redis_prefix)
    clock.now += SETTLE_SKIP_SECONDS / 2
    limiter.settle("acct")
    assert stamps(client, redis_prefix) == before


def test_a_long_call_is_restamped_with_its_end(redis_url: str, redis_prefix: str, clock: Clock) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, redis_prefix)
    assert limiter.acquire("acct", 5, 1.0) == 0.0
    ((member, stamp),) = stamps(client, redis_prefix).items()
    clock.now += SETTLE_SKIP_SECONDS * 2
    limiter.settle("acct")
    assert stamps(client, redis_prefix)[member] > stamp


def test_each_thread_settles_its_own_slot(redis_url: str, redis_prefix: str, clock: Clock) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, redis_prefix)
    assert limiter.acquire("acct", 5, 1.0) == 0.0  # this thread's call: still in flight
    mine = set(stamps(client, redis_prefix))
    taken = threading.Event()
    ended = threading.Event()
    settled = threading.Event()

    def other_call() -> None:
        assert limiter.acquire("acct", 5, 1.0) == 0.0
        taken.set()
        ended.wait(10)
        limiter.settle("acct")
        settled.set()

    worker = threading.Thread(target=other_call)
    worker.start()
    assert taken.wait(10)
    before = stamps(client, redis_prefix)
    (theirs,) = set(before) - mine
    clock.now += SETTLE_SKIP_SECONDS * 2  # both calls now count as long
    ended.set()
    assert settled.wait(10)
    worker.join(10)
    after = stamps(client, redis_prefix)
    assert after[theirs] > before[theirs]  # the other thread re-stamped its own slot
    assert after[next(iter(mine))] == before[next(iter(mine))]  # not ours, still in flight
    limiter.settle("acct")
    assert stamps(client, redis_prefix)[next(iter(mine))] > before[next(iter(mine))]


def test_one_acquire_serves_the_next_calls_of_its_thread_under_a_loose_limit(
    redis_url: str, redis_prefix: str, clock: Clock
) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, redis_prefix)
    assert limiter.acquire("acct", 1000, 1.0) == 0.0
    assert len(stamps(client, redis_prefix)) == 1 + RESERVE_SPARE  # one call, the spare slots
    for _ in range(RESERVE_SPARE):
        assert limiter.acquire("acct", 1000, 1.0) == 0.0
        limiter.settle("acct")
    assert len(stamps(client, redis_prefix)) == 1 + RESERVE_SPARE  # no new slot: no round trip
    assert limiter.acquire("acct", 1000, 1.0) == 0.0  # spares used up: Redis again
    assert len(stamps(client, redis_prefix)) == 2 * (1 + RESERVE_SPARE)


def test_a_stale_spare_slot_is_removed_not_used(redis_url: str, redis_prefix: str, clock: Clock) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, redis_prefix)
    assert limiter.acquire("acct", 1000, 1.0) == 0.0
    first = set(stamps(client, redis_prefix))
    clock.now += RESERVE_FRESH_SECONDS * 2
    assert limiter.acquire("acct", 1000, 1.0) == 0.0
    now = set(stamps(client, redis_prefix))
    assert len(first & now) == 1  # only the slot of the call made; the unused spares are gone
    assert len(now) == 1 + 1 + RESERVE_SPARE


def test_a_429_drops_the_spare_slots(redis_url: str, redis_prefix: str, clock: Clock) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, redis_prefix)
    assert limiter.acquire("acct", 1000, 1.0) == 0.0
    limiter.penalise("acct", 5.0, 1000, 1.0)
    assert limiter.acquire("acct", 1000, 1.0) > 4.0  # the pause holds: no spare slot is used
    assert len(stamps(client, redis_prefix)) == 1  # the call made; the spares removed


def test_under_a_tight_limit_spare_slots_stay_within_an_eighth_of_it(
    redis_url: str, redis_prefix: str, clock: Clock
) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, redis_prefix)
    assert limiter.acquire("acct", 16, 1.0) == 0.0
    assert len(stamps(client, redis_prefix)) == 2  # 16 / 8: one call and one spare
    assert limiter.acquire("acct", 16, 1.0) == 0.0  # the spare
    assert limiter.acquire("acct", 16, 1.0) == 0.0
    assert len(stamps(client, redis_prefix)) == 3  # a slot at a time from here
    small = RedisRateLimiter(client, redis_prefix + "small:")
    assert [small.acquire("acct", 5, 1.0) for _ in range(5)] == [0.0] * 5
    assert small.acquire("acct", 5, 1.0) > 0  # a limit of 5 gets exactly 5, no spare
