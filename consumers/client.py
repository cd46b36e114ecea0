"""kafka-python clients built from the `kafka:` config section.

Everything goes through standard Kafka APIs (produce, fetch, consumer groups, offset
commits, CreateTopics, Metadata); nothing is specific to one broker implementation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from service.config import Config

log = logging.getLogger("leadrelay.kafka")

# Header names leadrelay writes on its own records (DLQ, retry topic).
H_REASON = "leadrelay-reason"
H_STAGE = "leadrelay-stage"
H_PROVIDER = "leadrelay-provider"
H_COMMAND_ID = "leadrelay-command-id"
H_ORIGIN = "leadrelay-origin"  # topic/partition/offset the bytes came from
H_ATTEMPTS = "leadrelay-attempts"
H_DUE_AT = "leadrelay-due-at"  # unix seconds, retry topic
H_KIND = "leadrelay-kind"  # retry topic: "deliver" | "poll"
H_REQUEST_ID = "leadrelay-request-id"
H_RECEIVED_AT = "leadrelay-received-at"


def connection_settings(config: Config) -> dict[str, Any]:
    """bootstrap servers, client id and the security passthrough (None values left out)."""
    kafka = config["kafka"]
    settings: dict[str, Any] = {
        "bootstrap_servers": list(kafka["bootstrap_servers"]),
        "client_id": kafka["client_id"],
    }
    settings.update({k: v for k, v in kafka["security"].items() if v is not None})
    return settings


def make_producer(config: Config, **overrides: Any) -> KafkaProducer:
    producer = config["kafka"]["producer"]
    settings = {
        **connection_settings(config),
        # Durable before we answer: every in-sync replica has the record.
        "acks": "all",
        "enable_idempotence": True,
        "request_timeout_ms": producer["request_timeout_ms"],
        "max_block_ms": producer["max_block_ms"],
        "delivery_timeout_ms": max(
            producer["delivery_timeout_ms"], producer["request_timeout_ms"] + producer["linger_ms"]
        ),
        "linger_ms": producer["linger_ms"],
        "compression_type": producer["compression_type"],
        "reconnect_backoff_max_ms": 1000,
        # Creating a producer talks to the broker too: bounded like every other wait.
        "bootstrap_timeout_ms": producer["max_block_ms"],
        **overrides,
    }
    return KafkaProducer(**settings)


def make_consumer(config: Config, group_id: str, **overrides: Any) -> KafkaConsumer:
    consumer = config["kafka"]["consumer"]
    settings = {
        **connection_settings(config),
        "group_id": group_id,
        # Offsets are committed by hand, only once the outcome of every record is durable.
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": consumer["max_poll_records"],
        "max_poll_interval_ms": consumer["max_poll_interval_ms"],
        "session_timeout_ms": consumer["session_timeout_ms"],
        "heartbeat_interval_ms": consumer["heartbeat_interval_ms"],
        "request_timeout_ms": max(consumer["request_timeout_ms"], consumer["session_timeout_ms"] + 1000),
        "fetch_max_wait_ms": consumer["fetch_max_wait_ms"],
        "reconnect_backoff_max_ms": 1000,
        **overrides,
    }
    return KafkaConsumer(**settings)


def ensure_topics(config: Config, names: list[str], timeout_ms: int = 10000) -> None:
    """Create missing topics with the configured partitions and replication."""
    kafka = config["kafka"]
    if not kafka["auto_create_topics"]:
        return
    admin = KafkaAdminClient(
        **connection_settings(config), request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
    )
    try:
        existing = set(admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return
        topics = [NewTopic(n, kafka["partitions"], kafka["replication_factor"]) for n in missing]
        try:
            admin.create_topics(topics, timeout_ms=timeout_ms)
            log.info("created topics", extra={"topics": missing})
        except TopicAlreadyExistsError:
            pass  # another replica won the race
    finally:
        admin.close()


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers or []:
        try:
            out[name.lower()] = value.decode() if isinstance(value, bytes) else str(value or "")
        except UnicodeDecodeError:
            continue
    return out


def make_headers(values: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    return [(k, str(v).encode()) for k, v in values.items() if v is not None]


class BrokerCheck:
    """Readiness: a metadata round trip to the broker with a short timeout.

    A TCP connect is not enough (a frozen broker still accepts connections); a Metadata
    request needs the broker to answer."""

    def __init__(self, config: Config, timeout_ms: int = 3000) -> None:
        self.config = config
        self.timeout_ms = timeout_ms
        self._admin: KafkaAdminClient | None = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            try:
                if self._admin is None:
                    self._admin = KafkaAdminClient(
                        **connection_settings(self.config),
                        request_timeout_ms=self.timeout_ms,
                        bootstrap_timeout_ms=self.timeout_ms,  # a probe must answer fast
                    )
                self._admin.describe_cluster()
            except KafkaError as exc:
                admin, self._admin = self._admin, None
                if admin is not None:
                    try:
                        admin.close()
                    except Exception:  # closing a broken client may fail too; it is gone either way
                        pass
                raise RuntimeError(f"kafka broker unreachable: {type(exc).__name__}") from None
