"""A small client for the look-ups some senders need (HubSpot CRM, Meta Graph, Pipedrive).

Their notifications carry ids, not the person, so the adapter fetches the record while it
handles the webhook. Nothing has been acknowledged yet, so when the look-up cannot be done
the adapter answers 503 + Retry-After and the sender redelivers later: nothing accepted is
lost. Within one request the client retries transient failures (timeouts, connection
errors, 429, 5xx) a bounded number of times with exponential backoff and full jitter, all
inside a total deadline that stays below the sender's own webhook timeout; a permanent
answer (401, 403, 400) is not retried. Successful answers are cached for a short TTL, so a
batch that names one contact many times, or a redelivery, costs one call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import requests
from marshmallow import fields, validate

from service.domain.backoff import backoff_seconds
from service.domain.http import make_session, parse_retry_after
from service.domain.redact import redact
from service.domain.ttl_cache import SharedTTLCache
from service.domain.validators import http_url

log = logging.getLogger("leadrelay.sources.fetch")


class Verdict(StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"  # the record is gone: nothing to update, retrying cannot help
    TRANSIENT = "transient"  # retry (here, then by the sender's redelivery)
    FAILED = "failed"  # permanent for this call (bad token, bad request): no retry here


class FetchError(Exception):
    def __init__(
        self, verdict: Verdict, reason: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


Classifier = Callable[[int, Any], Verdict]


def default_classifier(status: int, body: Any) -> Verdict:
    if 200 <= status < 300:
        return Verdict.OK
    if status in (404, 410):
        return Verdict.NOT_FOUND
    if status in (408, 425, 429) or status >= 500:
        return Verdict.TRANSIENT
    return Verdict.FAILED


@dataclass(frozen=True)
class FetchPolicy:
    timeout_seconds: float = 3.0
    attempts: int = 3
    backoff_base_seconds: float = 0.2
    backoff_max_seconds: float = 2.0
    deadline_seconds: float = 8.0  # all attempts of one look-up; below the sender's timeout
    cache_ttl_seconds: float = 300.0
    cache_size: int = 10_000


class FetchClient:
    def __init__(
        self,
        base_url: str,
        policy: FetchPolicy,
        name: str,
        headers: Mapping[str, str] | None = None,
        classifier: Classifier = default_classifier,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.name = name
        self.classifier = classifier
        self.cache = SharedTTLCache(policy.cache_ttl_seconds, policy.cache_size)
        self.session = make_session(16, headers)

    def deadline(self) -> float:
        """A monotonic deadline for all the look-ups of one webhook request."""
        return time.monotonic() + self.policy.deadline_seconds

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        cache_key: str | None = None,
        deadline: float | None = None,
    ) -> Any:
        """The decoded JSON answer, or FetchError with a verdict. `deadline` (monotonic)
        bounds every attempt and backoff, shared by the calls of one webhook request."""
        if cache_key:
            cached = self.cache.get(cache_key)
            if cached is not None:
                return cached
        end = deadline if deadline is not None else self.deadline()
        last: FetchError | None = None
        for attempt in range(1, self.policy.attempts + 1):
            remaining = end - time.monotonic()
            if remaining <= 0.05:
                break
            try:
                body = self._once(
                    method, path, params, json_body, min(self.policy.timeout_seconds, remaining)
                )
            except FetchError as exc:
                last = exc
                if exc.verdict is not Verdict.TRANSIENT:
                    raise
                delay = self._backoff(attempt, exc.retry_after)
                if attempt == self.policy.attempts or delay >= end - time.monotonic():
                    break
                log.info("%s: %s; retry %d in %.2fs", self.name, exc.reason, attempt, delay)
                time.sleep(delay)
                continue
            if cache_key:
                self.cache.put(cache_key, body)
            return body
        raise last or FetchError(Verdict.TRANSIENT, f"{self.name}: no attempt fitted in the deadline")

    def _once(
        self, method: str, path: str, params: Mapping[str, str] | None, json_body: Any, timeout: float
    ) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(
                method, url, params=params, json=json_body, timeout=(min(timeout, 3.0), timeout)
            )
        except requests.RequestException as exc:
            # DNS failures, refused or reset connections and timeouts are transient.
            raise FetchError(
                Verdict.TRANSIENT, f"{self.name}: {type(exc).__name__}: {redact(str(exc))}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        verdict = self.classifier(response.status_code, body)
        if verdict is Verdict.OK:
            return body
        raise FetchError(
            verdict,
            f"{self.name}: HTTP {response.status_code}",
            response.status_code,
            parse_retry_after(response.headers.get("Retry-After")),
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.policy.backoff_max_seconds)
        return backoff_seconds(attempt, self.policy.backoff_base_seconds, self.policy.backoff_max_seconds)


def policy_from(settings: Mapping[str, Any]) -> FetchPolicy:
    return FetchPolicy(
        timeout_seconds=float(settings.get("api_timeout_seconds", 3.0)),
        attempts=int(settings.get("api_attempts", 3)),
        backoff_base_seconds=float(settings.get("api_backoff_base_seconds", 0.2)),
        deadline_seconds=float(settings.get("api_deadline_seconds", 8.0)),
        cache_ttl_seconds=float(settings.get("api_cache_seconds", 300.0)),
    )


def fetch_settings(default_base_url: str, deadline_seconds: float = 8.0) -> dict[str, Any]:
    """The config keys every adapter with a look-up accepts."""
    return {
        "api_base_url": fields.String(load_default=default_base_url, validate=http_url),
        "api_timeout_seconds": fields.Float(load_default=3.0, validate=validate.Range(min=0.1, max=30)),
        "api_attempts": fields.Integer(load_default=3, validate=validate.Range(min=1, max=10)),
        "api_backoff_base_seconds": fields.Float(load_default=0.2, validate=validate.Range(min=0, max=10)),
        "api_deadline_seconds": fields.Float(
            load_default=deadline_seconds, validate=validate.Range(min=0.5, max=60)
        ),
        "api_cache_seconds": fields.Float(load_default=300.0, validate=validate.Range(min=0)),
    }
