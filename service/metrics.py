"""Prometheus metrics. Under gunicorn PROMETHEUS_MULTIPROC_DIR is set (by the chart, by
`leadrelay serve`, else by service/web/gunicorn_conf.py) so every worker's samples are summed
at `/metrics`; the dispatcher and the consumers serve theirs on a port of their own
(`server.metrics_port`) together with `/healthz` and `/readyz` for their probes."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger("leadrelay.metrics")

WEBHOOKS_RECEIVED = Counter(
    "leadrelay_webhooks_received_total",
    "Inbound webhook requests by source and outcome",
    ["source", "outcome"],
)
# WEBHOOKS_RECEIVED children by (source, outcome): `labels()` checks names and takes a lock
# on every call, a cost on every webhook. Both labels are bounded (configured sources, our
# outcome codes), so the cache is too.
_webhook_counts: dict[tuple[str, str], Any] = {}


def count_webhook(source: str, outcome: str) -> None:
    """`WEBHOOKS_RECEIVED.labels(source=source, outcome=outcome).inc()`, the child cached."""
    child = _webhook_counts.get((source, outcome))
    if child is None:
        child = WEBHOOKS_RECEIVED.labels(source=source, outcome=outcome)
        _webhook_counts[(source, outcome)] = child
    child.inc()


COMMANDS_QUEUED = Counter("leadrelay_commands_queued_total", "Commands durably queued", ["source"])
DOUBLE_SUBMITS = Counter(
    "leadrelay_double_submits_total",
    "Commands withheld as a repeat of the lead's latest accepted change (event log status duplicate)",
    ["source"],
)
EVENTS_IGNORED = Counter(
    "leadrelay_events_ignored_total", "Unsupported event types acknowledged", ["source", "event_type"]
)
MAPPINGS_SKIPPED = Counter(
    "leadrelay_mappings_skipped_total",
    "Configured mappings naming a field the payload did not have",
    ["source"],
)
DELIVERIES = Counter(
    "leadrelay_deliveries_total", "Command deliveries by provider and outcome", ["provider", "outcome"]
)
PROVIDER_CALLS = Counter(
    "leadrelay_provider_calls_total", "HTTP calls made to providers", ["provider", "outcome"]
)
DELIVERY_LATENCY = Histogram(
    "leadrelay_delivery_latency_seconds",
    "From command received to provider success",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
PROVIDER_CALL_SECONDS = Histogram(
    "leadrelay_provider_call_seconds", "Duration of one provider call", ["provider"]
)
RETRIES = Counter(
    "leadrelay_retries_total", "Deliveries rescheduled after a transient failure", ["provider", "reason"]
)
DEAD_LETTERS = Counter("leadrelay_dead_letters_total", "Deliveries dead-lettered", ["provider", "stage"])
RATE_LIMIT_WAITS = Counter(
    "leadrelay_rate_limit_waits_total", "Calls deferred by the shared rate limiter", ["provider"]
)
RATE_LIMIT_USED_RATIO = Gauge(
    "leadrelay_rate_limit_used_ratio",
    "Share of the provider's rate limit used in the window ending at the last sample (0..1)",
    ["provider"],
    multiprocess_mode="max",
)
COALESCED = Counter("leadrelay_coalesced_commands_total", "Commands merged into another call", ["provider"])
QUEUE_DEPTH = Gauge(
    "leadrelay_queue_depth", "Open deliveries (pending, in flight, polling)", multiprocess_mode="max"
)
OLDEST_PENDING_AGE = Gauge(
    "leadrelay_oldest_pending_age_seconds", "Age of the oldest open delivery", multiprocess_mode="max"
)
CONSUMER_LAG = Gauge(
    "leadrelay_kafka_consumer_lag",
    "Kafka consumer lag by topic and partition",
    ["topic", "partition"],
    multiprocess_mode="max",
)
ASYNC_METRICS = Gauge(
    "leadrelay_provider_async_metric",
    "Provider async API metrics (LeadSquared Get Update Lead Metrics)",
    ["provider", "metric"],
    multiprocess_mode="max",
)

ALERTS = Counter(
    "leadrelay_alerts_total",
    "Alerts raised (breaker_opened, breaker_closed, first_dead_letter, backlog_old)",
    ["kind"],
)
BREAKER_STATE = Gauge(
    "leadrelay_breaker_state",
    "Circuit breaker per provider: 0 closed, 1 half-open, 2 open, 3 paused by an operator",
    ["provider"],
    multiprocess_mode="max",
)
BREAKER_OPEN_SECONDS = Gauge(
    "leadrelay_breaker_open_seconds",
    "How long the provider's breaker has been open (0: closed)",
    ["provider"],
    multiprocess_mode="max",
)
BREAKER_PROBES = Counter(
    "leadrelay_breaker_probes_total", "Probe calls sent while a breaker was open", ["provider", "outcome"]
)


def render() -> tuple[bytes, str]:
    """The exposition for `/metrics`, aggregated across gunicorn workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


# ---- the workers' own port: /metrics, /healthz, /readyz -----------------------------------

# A worker loop that stopped turning (deadlock, a wedged client) fails liveness after this.
LIVENESS_STALE_SECONDS = float(os.environ.get("LEADRELAY_LIVENESS_STALE_SECONDS", "120"))
_last_heartbeat: float | None = None
_readiness_checks: dict[str, Callable[[], object]] = {}


def heartbeat() -> None:
    """Called by a worker's main loop on every turn; `/healthz` fails when it goes stale."""
    global _last_heartbeat
    _last_heartbeat = time.monotonic()


def add_readiness_check(name: str, check: Callable[[], object]) -> None:
    """A dependency of this worker (broker, Redis): `/readyz` is 503 while `check()` raises."""
    _readiness_checks[name] = check


def health() -> tuple[bool, dict[str, Any]]:
    if _last_heartbeat is None:
        return True, {"status": "ok", "loop": "not started"}
    age = time.monotonic() - _last_heartbeat
    body = {"status": "ok" if age <= LIVENESS_STALE_SECONDS else "stalled", "loop_age_seconds": round(age, 3)}
    return age <= LIVENESS_STALE_SECONDS, body


def readiness() -> tuple[bool, dict[str, Any]]:
    alive, body = health()
    reasons = [] if alive else [f"main loop stalled for {body['loop_age_seconds']}s"]
    for name, check in list(_readiness_checks.items()):
        try:
            check()
        except Exception as exc:  # any failure means not ready; the reason is reported
            reasons.append(f"{name} unavailable: {type(exc).__name__}: {exc}")
    return not reasons, {"status": "ready" if not reasons else "not_ready", "reasons": reasons}


def _worker_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path in ("/healthz", "/readyz"):
        ok, body = health() if path == "/healthz" else readiness()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]
    if path != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]
    payload, content_type = render()
    start_response("200 OK", [("Content-Type", content_type)])
    return [payload]


class _QuietHandler(WSGIRequestHandler):
    """Scrapes and probes every few seconds would drown the worker's log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_metrics(port: int, addr: str | None = None) -> ThreadingWSGIServer | None:
    """Serve /metrics, /healthz and /readyz for this process (dispatcher, consumers) on a
    daemon thread. Returns the server (tests shut it down); port 0 turns it off."""
    if not port:
        return None
    addr = addr or os.environ.get("LEADRELAY_METRICS_ADDR", "0.0.0.0")
    server = make_server(addr, port, _worker_app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics, /healthz and /readyz served", extra={"port": port})
    return server


def observe_consumer_lag(consumer: Any) -> dict[tuple[str, int], int]:
    """Set `leadrelay_kafka_consumer_lag` for every partition a kafka-python consumer holds:
    the high watermark its last fetch reported minus its position (no extra request, so it
    can run after every poll). Partitions not fetched yet are left out. Returns the lags."""
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        position = consumer.position(tp) if highwater is not None else None
        if position is None:
            continue
        lag = max(0, int(highwater) - int(position))
        CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        lags[(tp.topic, tp.partition)] = lag
    return lags
