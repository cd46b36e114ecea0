"""The one HTTP client setup: pooled sessions without hidden retries, and Retry-After parsing."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import requests
from requests import PreparedRequest
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase


class _OwnCredentialsOnly(AuthBase):
    """The session's auth: sends nothing of its own. Set so that requests never reads ~/.netrc
    (it does, on every call, for a session without auth): a provider gets exactly the
    credentials its handler sends, never a stray netrc login, and the lookup costs nothing."""

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        return request


def make_session(pool_size: int = 16, headers: Mapping[str, str] | None = None) -> requests.Session:
    """A pooled session. `max_retries=0`: every retry is ours, scheduled and counted; the caller
    passes a timeout on every call (requests has no session-wide one). Proxies and the CA
    bundle still come from the environment (HTTPS_PROXY, REQUESTS_CA_BUNDLE)."""
    session = requests.Session()
    session.auth = _OwnCredentialsOnly()
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
