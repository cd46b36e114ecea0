"""Prometheus metrics. Under gunicorn set PROMETHEUS_MULTIPROC_DIR (`leadrelay serve` does)
so every worker's samples are summed at `/metrics`; the dispatcher and the consumers
serve theirs on a port of their own (`server.metrics_port`)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

WEBHOOKS_RECEIVED = Counter(
    "leadrelay_webhooks_received_total",
    "Inbound webhook requests by source and outcome",
    ["source", "outcome"],
)
COMMANDS_QUEUED = Counter("leadrelay_commands_queued_total", "Commands durably queued", ["source"])
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


def render() -> tuple[bytes, str]:
    """The exposition for `/metrics`, aggregated across gunicorn workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def serve_metrics(port: int) -> None:
    """Expose this process's metrics on its own port (dispatcher, consumers)."""
    if port:
        start_http_server(port, addr=os.environ.get("LEADRELAY_METRICS_ADDR", "0.0.0.0"))
