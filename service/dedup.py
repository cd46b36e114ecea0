"""Ingest dedup: the interface, and its Redis store (distributed mode until the Kafka path
moves to PostgreSQL; the SQL one is `service.state.SqlStateStore`).

Claim before, confirm after: a key is first claimed as `pending` for a short time, and
only marked `done` (for the whole window) once the command is durably queued. A crash in
between leaves a pending claim that expires, so the sender's retry is accepted rather
than lost as a "duplicate". A retry that arrives while the claim is pending is told to
come back (`in_progress`).

Besides claims, the stores keep plain values with a TTL (`get` / `put`): the double-submit
guard's "latest accepted fingerprint per (source, lead)" is one.
"""

from __future__ import annotations

from typing import Protocol

import redis

from service.domain.state import Claim


class DedupUnavailable(Exception):
    """The dedup store cannot answer: refuse new work rather than risk a double delivery."""


class DedupStore(Protocol):
    def claim(self, key: str, pending_seconds: int) -> Claim: ...

    def confirm(self, key: str, window_seconds: int) -> None: ...

    def release(self, key: str) -> None: ...

    def get(self, key: str) -> str | None:
        """The value `put` under `key`, None when absent or expired."""

    def put(self, key: str, value: str, ttl_seconds: int) -> None:
        """Store `value` under `key` for `ttl_seconds`, replacing what was there."""

    def ping(self) -> None: ...


# Release only our own pending claim, never a confirmed one.
_RELEASE_PENDING = """
if redis.call('GET', KEYS[1]) == 'pending' then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisDedupStore:
    def __init__(self, client: redis.Redis, prefix: str = "leadrelay:") -> None:
        self.client = client
        self.prefix = prefix + "dedup:"
        self._release = client.register_script(_RELEASE_PENDING)

    def claim(self, key: str, pending_seconds: int) -> Claim:
        name = self.prefix + key
        try:
            if self.client.set(name, "pending", nx=True, ex=pending_seconds):
                return Claim.CLAIMED
            state = self.client.get(name)
        except redis.RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from None
        if state is None:  # expired between SET and GET: try once more
            return self.claim(key, pending_seconds)
        return Claim.DUPLICATE if state in (b"done", "done") else Claim.IN_PROGRESS

    def confirm(self, key: str, window_seconds: int) -> None:
        try:
            self.client.set(self.prefix + key, "done", ex=window_seconds)
        except redis.RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from None

    def release(self, key: str) -> None:
        try:
            self._release(keys=[self.prefix + key])
        except redis.RedisError:
            pass  # the pending claim expires on its own

    def get(self, key: str) -> str | None:
        try:
            value = self.client.get(self.prefix + key)
        except redis.RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from None
        return value.decode() if isinstance(value, bytes) else value

    def put(self, key: str, value: str, ttl_seconds: int) -> None:
        try:
            self.client.set(self.prefix + key, value, ex=ttl_seconds)
        except redis.RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from None

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from None
