"""Both DedupStore implementations against the real thing (a SQLite file, a Redis server)."""

from __future__ import annotations

import time

import pytest
import redis

from service.dedup import Claim, DedupUnavailable, RedisDedupStore
from service.state import SqlStateStore, migrate
from service.state.engine import SQLiteEngine
from tests.support import PrivateRedis, wait_until


@pytest.fixture(params=["sqlite", "redis"])
def dedup(request, tmp_path, redis_client, redis_prefix):
    if request.param == "sqlite":
        engine = SQLiteEngine(tmp_path / "dedup.db")
        migrate(engine)
        return SqlStateStore(engine)
    return RedisDedupStore(redis_client, redis_prefix)


def test_claim_confirm_then_duplicate(dedup) -> None:
    assert dedup.claim("cmd:a", 60) is Claim.CLAIMED
    assert dedup.claim("cmd:a", 60) is Claim.IN_PROGRESS  # a concurrent retry is told to come back
    dedup.confirm("cmd:a", 3600)
    assert dedup.claim("cmd:a", 60) is Claim.DUPLICATE


def test_released_claim_can_be_taken_again(dedup) -> None:
    assert dedup.claim("cmd:b", 60) is Claim.CLAIMED
    dedup.release("cmd:b")
    assert dedup.claim("cmd:b", 60) is Claim.CLAIMED


def test_release_never_drops_a_confirmed_key(dedup) -> None:
    dedup.claim("cmd:c", 60)
    dedup.confirm("cmd:c", 3600)
    dedup.release("cmd:c")
    assert dedup.claim("cmd:c", 60) is Claim.DUPLICATE


@pytest.mark.slow
def test_pending_claim_of_a_crashed_request_expires(dedup) -> None:
    # Claimed, then the process died before the queue write: the sender's retry must win later.
    assert dedup.claim("cmd:d", 1) is Claim.CLAIMED
    time.sleep(1.2)
    assert dedup.claim("cmd:d", 60) is Claim.CLAIMED


@pytest.mark.slow
def test_window_expires(dedup) -> None:
    dedup.claim("cmd:e", 60)
    dedup.confirm("cmd:e", 1)
    time.sleep(1.2)
    assert dedup.claim("cmd:e", 60) is Claim.CLAIMED


def test_redis_uses_set_nx_ex(redis_client, redis_prefix) -> None:
    store = RedisDedupStore(redis_client, redis_prefix)
    store.claim("cmd:f", 60)
    assert redis_client.get(f"{redis_prefix}dedup:cmd:f") == b"pending"
    assert 0 < redis_client.ttl(f"{redis_prefix}dedup:cmd:f") <= 60
    store.confirm("cmd:f", 604800)
    assert 604000 < redis_client.ttl(f"{redis_prefix}dedup:cmd:f") <= 604800


def test_redis_down_is_reported_not_guessed() -> None:
    private = PrivateRedis().start()
    client = redis.Redis.from_url(private.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = RedisDedupStore(client)
    assert store.claim("cmd:g", 60) is Claim.CLAIMED
    private.stop()
    with pytest.raises(DedupUnavailable):
        store.claim("cmd:h", 60)
    with pytest.raises(DedupUnavailable):
        store.ping()


@pytest.mark.slow
def test_values_get_put_replace_and_expire(dedup) -> None:
    assert dedup.get("fpl:generic:email:a@example.com") is None
    dedup.put("fpl:generic:email:a@example.com", "fp1 generic:m1", 3600)
    assert dedup.get("fpl:generic:email:a@example.com") == "fp1 generic:m1"
    dedup.put("fpl:generic:email:a@example.com", "fp2 generic:m2", 1)
    assert dedup.get("fpl:generic:email:a@example.com") == "fp2 generic:m2"
    wait_until(lambda: dedup.get("fpl:generic:email:a@example.com") is None, timeout=5, what="value expiry")
