"""Rate-limit budget samples: what the dispatchers' limiter counted, per provider and moment,
kept an hour for the console and `/v1/overview` (the web process cannot see the limiter)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.domain.limits import RateLimitUsage

# Samples are kept this long; the retention pass deletes older ones.
SAMPLES_KEPT_SECONDS = 3600.0
# The moment of a sample is rounded down to this grid, so the samples of several dispatchers
# taken within it land on one row (the largest `used` wins: with the shared Redis limiter
# they all count the same log, moments apart).
SAMPLE_GRID_SECONDS = 5.0


def sample_moment(now: float) -> float:
    return float(int(now // SAMPLE_GRID_SECONDS) * SAMPLE_GRID_SECONDS)


class RateLimitSamplesMixin:
    def transaction(self) -> Any: ...

    def read(self) -> Any: ...

    def record_rate_limit_usage(self, usages: Iterable[RateLimitUsage], now: float) -> None:
        """One row per provider at `now` (on the sample grid); a second writer in the same
        grid step keeps the larger `used`."""
        at = sample_moment(now)
        rows = [(u.provider, at, u.used, u.calls, u.per_seconds) for u in usages]
        if not rows:
            return
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO rate_limit_samples (provider, at, used, calls, per_seconds) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (provider, at) DO UPDATE SET calls = excluded.calls,"
                " per_seconds = excluded.per_seconds, used = CASE WHEN excluded.used > rate_limit_samples.used"
                " THEN excluded.used ELSE rate_limit_samples.used END",
                rows,
            )

    def rate_limit_samples(self, since: float) -> dict[str, dict[str, Any]]:
        """Per provider, the samples from `since` on, oldest first: `{"calls", "per_seconds",
        "samples": [{"at", "used"}]}`; `calls` and `per_seconds` are the latest sample's."""
        with self.read() as db:
            rows = db.execute(
                "SELECT provider, at, used, calls, per_seconds FROM rate_limit_samples WHERE at >= ?"
                " ORDER BY provider, at",
                (since,),
            ).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = found.setdefault(row["provider"], {"samples": []})
            entry["calls"] = int(row["calls"])
            entry["per_seconds"] = float(row["per_seconds"])
            entry["samples"].append({"at": float(row["at"]), "used": int(row["used"])})
        return found

    def prune_rate_limit_samples(self, now: float, batch: int) -> int:
        """Delete samples older than `SAMPLES_KEPT_SECONDS`, `batch` rows per transaction."""
        removed = 0
        while True:
            with self.transaction() as db:
                count = db.execute(
                    "DELETE FROM rate_limit_samples WHERE (provider, at) IN"
                    " (SELECT provider, at FROM rate_limit_samples WHERE at < ? LIMIT ?)",
                    (now - SAMPLES_KEPT_SECONDS, batch),
                ).rowcount
            removed += count
            if count < batch:
                return removed
