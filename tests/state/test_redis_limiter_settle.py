"""The Redis limiter's `settle`: a call that ended soon after its acquire keeps its acquire
stamp (no round trip); a longer one is re-stamped with its end; each thread settles its own
slot. Real Redis; the limiter's monotonic clock is stepped by hand so the two cases do not
depend on how loaded the machine is."""

from __future__ import annotations

import threading

import pytest
import redis

from service.state import redis_limiter
from service.state.redis_limiter import SETTLE_SKIP_SECONDS, RedisRateLimiter


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
