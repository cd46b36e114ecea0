"""Ingest dedup: the interface (implemented by `service.state.SqlStateStore` in both modes).

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
