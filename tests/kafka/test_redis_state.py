"""The Redis-backed state on its own: the shared rate limiter, the ledger claims, the event log of double submits (and distributed ingest over it)."""

from __future__ import annotations

import json
import threading
import time

import redis

from service.domain.command import LeadIdentity, LeadUpdateCommand, utcnow
from service.domain.limits import SAFETY_MARGIN_SECONDS
from service.domain.state import EventFilter
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


def test_event_list_filters_by_source_type_lead_and_time(redis_url: str, redis_prefix: str) -> None:
    store = RedisEventStore(redis.Redis.from_url(redis_url), redis_prefix, ttl_seconds=600)
    now = time.time()
    jane = LeadIdentity(email="jane@example.com")
    store.register(
        LeadUpdateCommand("a:1", "typeform", "form.submitted", utcnow(), jane, {}, providers=("p",)), now
    )
    store.register(
        LeadUpdateCommand(
            "b:1", "hubspot", "deal.won", utcnow(), LeadIdentity(phone="+14155550100"), {}, providers=("p",)
        ),
        now + 1,
    )
    store.record("b:1", "p", "dead_lettered", count_attempt=True)

    def listed(**wanted: object) -> list[str]:
        return [row["command_id"] for row in store.list_events(EventFilter(**wanted))]  # type: ignore[arg-type]

    assert listed() == ["a:1", "b:1"]
    assert listed(source="hubspot") == ["b:1"]
    assert listed(event_type="form.submitted") == ["a:1"]
    assert listed(lead="JANE@example.com") == ["a:1"]
    assert listed(lead="+14155550100") == ["b:1"]
    assert listed(status="dead_lettered", provider="p") == ["b:1"]
    assert listed(since=now + 0.5) == ["b:1"]
    assert listed(until=now + 0.5) == ["a:1"]
    assert store.list_events(EventFilter(source="typeform"))[0]["lead"]["email"] == "jane@example.com"


def test_a_double_submit_is_in_the_event_log_with_nothing_to_deliver(
    redis_url: str, redis_prefix: str
) -> None:
    events = RedisEventStore(redis.Redis.from_url(redis_url), redis_prefix)
    command = LeadUpdateCommand(
        command_id="generic:again",
        source="generic",
        event_type="form.submitted",
        occurred_at=utcnow(),
        lead=LeadIdentity(email="jane@example.com"),
        changes={"city": "Rome"},
        providers=("leadsquared",),
    )
    events.record_duplicate(command, "generic:first")
    event = events.get_event("generic:again")
    assert event["status"] == "duplicate" and event["duplicate_of"] == "generic:first"
    [delivery] = event["deliveries"]
    assert delivery["status"] == "duplicate" and "generic:first" in delivery["last_error"]
    listed = events.list_events(EventFilter(status="duplicate"))
    assert [e["command_id"] for e in listed] == ["generic:again"]


def test_distributed_ingest_withholds_only_a_repeat_of_the_latest_change(broker, kafka_config) -> None:
    """Redis dedup + Kafka queue: A, A (double submit: event log only), B, A (a real change)."""
    from dataclasses import replace

    from service.config import validate_config
    from service.runtime import build_runtime
    from tests.kafka.conftest import read_topic

    config = validate_config(kafka_config("http://127.0.0.1:9", dedup={"fingerprint_window_seconds": 600}))
    runtime = build_runtime(config)
    base = LeadUpdateCommand(
        command_id="generic:a1",
        source="generic",
        event_type="lead.updated",
        occurred_at=utcnow(),
        lead=LeadIdentity(email="jane@example.com"),
        changes={"city": "Rome"},
    )
    statuses = [
        runtime.ingestor.accept(replace(base, command_id=command_id, changes={"city": city})).status
        for command_id, city in (
            ("generic:a1", "Rome"),
            ("generic:a2", "Rome"),
            ("generic:b", "Oslo"),
            ("generic:a3", "Rome"),
        )
    ]
    assert statuses == ["accepted", "duplicate", "accepted", "accepted"]
    event = runtime.store.get_event("generic:a2")
    assert event["status"] == "duplicate" and event["duplicate_of"] == "generic:a1"
    topic = config["kafka"]["topics"]["commands"]
    produced = sorted(json.loads(r.value)["command_id"] for r in read_topic(broker.bootstrap, topic, 3))
    assert produced == ["generic:a1", "generic:a3", "generic:b"]
    runtime.queue.close()
