"""The shared small mechanisms: the TTL cache and the Retry-After parser (fake clock), error flattening."""

from __future__ import annotations

import base64
import email.utils

import requests
from flask import Flask, request

from handlers.simulation import ServedApp
from service.domain.http import make_session, parse_retry_after
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


def test_a_provider_session_never_sends_a_netrc_login(tmp_path, monkeypatch) -> None:
    # requests reads ~/.netrc on every call of a session without auth: a stray login there
    # would reach a provider as Basic auth. Our sessions send only what a handler sets.
    seen: list[str | None] = []

    app = Flask("echo")

    @app.post("/x")
    def echo() -> tuple[str, int]:
        seen.append(request.headers.get("Authorization"))
        return "", 204

    served = ServedApp(app).start()
    try:
        host = served.url.removeprefix("http://").split(":")[0]
        netrc = tmp_path / ".netrc"
        netrc.write_text(f"machine {host} login stray password leaked\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        monkeypatch.setenv("HOME", str(tmp_path))
        assert requests.post(f"{served.url}/x", timeout=5).status_code == 204  # plain requests uses it
        assert make_session().post(f"{served.url}/x", timeout=5).status_code == 204
        assert make_session().post(f"{served.url}/x", auth=("own", "key"), timeout=5).status_code == 204
    finally:
        served.stop()
    assert seen[0] is not None and seen[0].startswith("Basic ")  # the netrc file is read
    assert seen[1] is None
    assert seen[2] == "Basic " + base64.b64encode(b"own:key").decode()  # a handler's own auth still goes
