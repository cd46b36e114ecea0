"""Alerts: breaker opened/closed, a provider's first dead letter, a backlog older than a threshold.

Each is a metric (`leadrelay_alerts_total{kind}`) and a log line, and, when
`alerts.webhook_url` is set, a notification: a Slack-compatible JSON body (`text`) plus
structured fields, signed with Standard Webhooks (`alerts.signing_secret`), sent from a
background thread with its own timeout and bounded retries. A full queue drops the
notification (the metric and the log line remain): alerts never block delivery.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from standardwebhooks.webhooks import Webhook

from service import metrics
from service.domain.backoff import backoff_seconds
from service.domain.http import make_session

log = logging.getLogger("leadrelay.alerts")

QUEUE_SIZE = 1000


class Alerts:
    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.url: str | None = settings.get("webhook_url")
        self.secret: str | None = settings.get("signing_secret")
        self.timeout = float(settings.get("timeout_seconds", 5.0))
        self.attempts = int(settings.get("attempts", 3))
        self.backlog_age = float(settings.get("backlog_age_seconds", 900.0))
        self._dead_lettered: set[str] = set()
        self._backlog_old = False
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._session = make_session(pool_size=1)

    # ---- the events -----------------------------------------------------------------------

    def emit(self, kind: str, text: str, **fields: Any) -> None:
        metrics.ALERTS.labels(kind=kind).inc()
        log.warning(text, extra={"alert": kind, **fields})
        if not self.url:
            return
        body = {"text": f"leadrelay: {text}", "kind": kind, "at": time.time(), **fields}
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.warning("alert queue full; notification dropped", extra={"alert": kind})
            return
        self._start()

    def breaker_changed(self, provider: str, breaker: str, reason: str | None) -> None:
        if breaker == "open":
            self.emit(
                "breaker_opened", f"circuit opened for {provider}: {reason}", provider=provider, reason=reason
            )
        elif breaker == "closed":
            self.emit("breaker_closed", f"circuit closed for {provider}", provider=provider)

    def dead_lettered(self, provider: str, reason: str | None) -> None:
        """Once per provider and process: the first dead letter is the news."""
        with self._lock:
            if provider in self._dead_lettered:
                return
            self._dead_lettered.add(provider)
        self.emit(
            "first_dead_letter",
            f"first dead letter for {provider}: {reason}",
            provider=provider,
            reason=reason,
        )

    def backlog(self, oldest_age_seconds: float) -> None:
        """Alert when the oldest open delivery crosses the threshold, and again once it is
        back under it and crosses it again."""
        if not self.backlog_age:
            return
        old = oldest_age_seconds >= self.backlog_age
        with self._lock:
            crossed, self._backlog_old = old and not self._backlog_old, old
        if crossed:
            self.emit(
                "backlog_old",
                f"oldest open delivery waited {oldest_age_seconds:.0f} s (threshold {self.backlog_age:g} s)",
                oldest_age_seconds=round(oldest_age_seconds, 1),
            )

    # ---- the notifier -----------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            try:
                self._send(body)
            finally:
                self._queue.task_done()

    def _send(self, body: dict[str, Any]) -> None:
        assert self.url is not None
        payload = json.dumps(body, default=str)
        msg_id = "alert_" + secrets.token_hex(8)
        for attempt in range(1, self.attempts + 1):
            headers = {"content-type": "application/json"}
            if self.secret:
                now = datetime.now(UTC)
                headers.update(
                    {
                        "webhook-id": msg_id,
                        "webhook-timestamp": str(int(now.timestamp())),
                        "webhook-signature": Webhook(self.secret).sign(msg_id, now, payload),
                    }
                )
            try:
                response = self._session.post(
                    self.url, data=payload.encode(), headers=headers, timeout=self.timeout
                )
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    break
            except requests.RequestException as exc:
                # Only the kind: the message quotes the URL, and a Slack-style URL is itself a secret.
                problem = type(exc).__name__
            if attempt < self.attempts:
                time.sleep(backoff_seconds(attempt, 1.0, 30.0))  # on the alert thread only
        log.warning("alert notification failed", extra={"alert": body.get("kind"), "reason": problem})

    def wait_sent(self, timeout: float = 10.0) -> bool:
        """Tests and shutdown: wait until the queue is empty."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks
