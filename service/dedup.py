"""Ingest dedup: one interface, two stores (SQLite embedded, Redis shared).

Claim before, confirm after: a key is first claimed as `pending` for a short time, and
only marked `done` (for the whole window) once the command is durably queued. A crash in
between leaves a pending claim that expires, so the sender's retry is accepted rather
than lost as a "duplicate". A retry that arrives while the claim is pending is told to
come back (`in_progress`).

Besides claims, the stores keep plain values with a TTL (`get` / `put`): the double-submit
guard's "latest accepted fingerprint per (source, lead)" is one.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Protocol

import redis

from service.store import EmbeddedStore


class Claim(StrEnum):
    CLAIMED = "claimed"
    DUPLICATE = "duplicate"
    IN_PROGRESS = "in_progress"


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


class SQLiteDedupStore:
    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self._last_purge = 0.0

    def claim(self, key: str, pending_seconds: int) -> Claim:
        now = time.time()
        with self.store.transaction() as db:
            row = db.execute("SELECT state, expires_at FROM dedup WHERE key = ?", (key,)).fetchone()
            if row is not None and row["expires_at"] > now:
                return Claim.DUPLICATE if row["state"] == "done" else Claim.IN_PROGRESS
            db.execute(
                "INSERT INTO dedup (key, state, expires_at) VALUES (?, 'pending', ?)"
                " ON CONFLICT (key) DO UPDATE SET state = 'pending', expires_at = excluded.expires_at",
                (key, now + pending_seconds),
            )
            if now - self._last_purge > 600:
                self._last_purge = now
                db.execute("DELETE FROM dedup WHERE expires_at < ?", (now,))
        return Claim.CLAIMED

    def confirm(self, key: str, window_seconds: int) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE dedup SET state = 'done', expires_at = ? WHERE key = ?",
                (time.time() + window_seconds, key),
            )

    def release(self, key: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM dedup WHERE key = ? AND state = 'pending'", (key,))

    # A value shares the claims' table: its `state` column holds the value (keys of the two
    # uses never collide: claims are `cmd:...`, values are named by their user).
    def get(self, key: str) -> str | None:
        row = (
            self.store.connection()
            .execute("SELECT state FROM dedup WHERE key = ? AND expires_at > ?", (key, time.time()))
            .fetchone()
        )
        return None if row is None else str(row["state"])

    def put(self, key: str, value: str, ttl_seconds: int) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO dedup (key, state, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
                (key, value, time.time() + ttl_seconds),
            )

    def ping(self) -> None:
        self.store.connection().execute("SELECT 1").fetchone()


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
