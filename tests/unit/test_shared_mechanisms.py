"""The shared small mechanisms: the TTL cache and the Retry-After parser (fake clock), error flattening."""

from __future__ import annotations

import email.utils

from service.domain.http import parse_retry_after
from service.domain.ttl_cache import SharedTTLCache
from service.domain.validators import flatten_messages


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    cache = SharedTTLCache(10.0, clock=clock)
    cache.put("email:a@example.com", "lead-1")
    clock.now += 9.9
    assert cache.get("email:a@example.com") == "lead-1"
    clock.now += 0.2
    assert cache.get("email:a@example.com") is None


def test_a_full_cache_evicts_one_entry_not_all() -> None:
    cache = SharedTTLCache(60.0, max_entries=3, clock=FakeClock())
    for key in "abcd":
        cache.put(key, key.upper())
    assert len(cache) == 3
    assert cache.get("a") is None
    assert [cache.get(key) for key in "bcd"] == ["B", "C", "D"]


def test_forget_and_a_zero_ttl() -> None:
    cache = SharedTTLCache(60.0)
    cache.put("k", "v")
    cache.forget("k")
    assert cache.get("k") is None
    disabled = SharedTTLCache(0.0)
    disabled.put("k", "v")
    assert disabled.get("k") is None and len(disabled) == 0


def test_retry_after_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_marshmallow_messages_flatten_to_dotted_names() -> None:
    nested = {
        "lead": {"email": ["Not a valid email address."]},
        "changes": {"value": {"value": ["Not a number.", "Too big."]}},
        "_schema": ["at least one of id, email or phone is required"],
        "tags": {0: ["Not a valid string."]},
    }
    assert flatten_messages(nested) == {
        "lead.email": ["Not a valid email address."],
        "changes.value.value": ["Not a number.", "Too big."],
        "_schema": ["at least one of id, email or phone is required"],
        "tags.0": ["Not a valid string."],
    }
    assert flatten_messages(["whole body"]) == {"_schema": ["whole body"]}
    assert flatten_messages({"port": "Not a valid integer."}, "server") == {
        "server.port": ["Not a valid integer."]
    }
