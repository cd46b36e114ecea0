"""The Redis-backed state on its own: the shared rate limiter and the ledger claims."""

from __future__ import annotations

import threading
import time

import redis

from service.command import LeadIdentity, LeadUpdateCommand, utcnow
from service.domain.limits import SAFETY_MARGIN_SECONDS
from service.redis_state import RedisEventStore
from service.state.redis_limiter import RedisRateLimiter


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_shared_limiter_never_exceeds_the_limit_across_replicas(redis_url: str, redis_prefix: str) -> None:
    calls, per_seconds = 10, 1.0
    # Two "replicas": separate clients and limiter objects on one Redis.
    limiters = [RedisRateLimiter(redis.Redis.from_url(redis_url), redis_prefix) for _ in range(2)]
    taken: list[float] = []
    lock = threading.Lock()
    deadline = time.time() + 3.0

    def hammer(limiter: RedisRateLimiter) -> None:
        while time.time() < deadline:
            if limiter.acquire("acct", calls, per_seconds) == 0.0:
                with lock:
                    taken.append(time.time())
            else:
                time.sleep(0.002)

    threads = [threading.Thread(target=hammer, args=(limiters[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_in_any_window(taken, per_seconds) <= calls
    # The safety margin is part of the window too (a few ms of tolerance for the local clock).
    assert most_in_any_window(taken, per_seconds + SAFETY_MARGIN_SECONDS - 0.02) <= calls
    assert len(taken) >= 2 * calls  # and it does let calls through, window after window


def test_limiter_tells_how_long_to_wait_and_honours_a_429(redis_url: str, redis_prefix: str) -> None:
    limiter = RedisRateLimiter(redis.Redis.from_url(redis_url), redis_prefix)
    assert [limiter.acquire("a", 2, 1.0) for _ in range(2)] == [0.0, 0.0]
    wait = limiter.acquire("a", 2, 1.0)
    assert 0.9 < wait <= 1.0 + SAFETY_MARGIN_SECONDS
    assert limiter.acquire("b", 2, 1.0) == 0.0  # accounts are separate
    limiter.penalise("b", 3.0, 2, 1.0)
    assert 2.8 < limiter.acquire("b", 2, 1.0) <= 3.0


def test_ledger_claims_one_owner_at_a_time(redis_url: str, redis_prefix: str) -> None:
    store = RedisEventStore(redis.Redis.from_url(redis_url), redis_prefix, ttl_seconds=600)
    cmd = LeadUpdateCommand(
        "t:1", "generic", "x", utcnow(), LeadIdentity(id="l1"), {"city": "A"}, providers=("p",)
    )
    store.register(cmd, time.time())
    store.heartbeat("alive", 30)
    assert store.claim("t:1", "p", "alive")[0] == "claimed"
    assert store.claim("t:1", "p", "other")[0] == "busy"  # its owner heartbeats
    assert store.claim("t:1", "p", "alive")[0] == "mine"
    store.forget_owner("alive")  # the owner died
    assert store.claim("t:1", "p", "other")[0] == "orphan"
    store.record("t:1", "p", "delivered", count_attempt=True)
    assert store.claim("t:1", "p", "third")[0] == "done"
    event = store.get_event("t:1")
    assert event is not None and event["status"] == "delivered" and event["deliveries"][0]["attempts"] == 1
