"""The one HTTP client setup: pooled sessions without hidden retries, and Retry-After parsing."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import requests
from requests.adapters import HTTPAdapter


def make_session(pool_size: int = 16, headers: Mapping[str, str] | None = None) -> requests.Session:
    """A pooled session. `max_retries=0`: every retry is ours, scheduled and counted; the caller
    passes a timeout on every call (requests has no session-wide one)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(dict(headers or {}))
    return session


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3);
    None when absent or unreadable, never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))
