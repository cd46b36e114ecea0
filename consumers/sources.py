"""Source-topic consumers: records in a sender's format -> commands on the command topic.

Each `kafka.sources` binding names a topic, a format (a configured source, or a source
type) and a consumer group. A record goes through the same adapter as the webhook
(`parse` + `normalise`; the signature check is the topic's ACLs) and the same `Ingestor`
(dedup, produce with acks=all). An invalid record is dead-lettered with the reason in its
headers and its bytes intact, and the partition moves on. When the queue or Redis cannot
take work, the partition is rewound to the record and retried: nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from marshmallow import RAISE, Schema

from consumers.client import ensure_topics, headers_dict, make_consumer, make_producer
from consumers.outcomes import OutcomePublisher
from service import metrics
from service.config import COMMON_SOURCE_FIELDS, Config
from service.domain.dedup import DedupUnavailable
from service.domain.state import StateUnavailable
from service.pipeline.ingest import Ingestor, QueueUnavailable
from service.runtime import Runtime
from service.sources import SOURCE_KINDS
from service.sources.base import AdapterError, InboundRequest, SourceAdapter

log = logging.getLogger("leadrelay.kafka.sources")

BACKOFF_SECONDS = 1.0


class Unavailable(Exception):
    """Something downstream cannot take work now: rewind and retry."""


def adapter_for(runtime: Runtime, fmt: str) -> SourceAdapter:
    """A configured source by name (its settings apply), else a source type with defaults."""
    if fmt in runtime.adapters:
        return runtime.adapters[fmt]
    kind = SOURCE_KINDS[fmt]
    schema = Schema.from_dict({**COMMON_SOURCE_FIELDS, **kind.settings_fields})(unknown=RAISE)
    return kind(fmt, schema.load({"type": fmt}))


class SourceTopicConsumer:
    def __init__(self, runtime: Runtime, binding: dict[str, Any], outcomes: OutcomePublisher) -> None:
        self.runtime = runtime
        self.config: Config = runtime.config
        self.topic = binding["topic"]
        self.adapter = adapter_for(runtime, binding["format"])
        self.group_id = binding.get("group_id") or f"leadrelay-source-{self.topic}"
        self.ingestor: Ingestor = runtime.ingestor
        self.outcomes = outcomes
        self.stopping = threading.Event()
        self.consumer: KafkaConsumer | None = None

    def inbound(self, record: ConsumerRecord) -> InboundRequest:
        headers = headers_dict(record.headers)
        return InboundRequest(
            source=self.adapter.source,
            body=record.value or b"",
            headers=headers,
            method="POST",
            url=f"kafka://{self.topic}",
            content_type=headers.get("content-type", "application/json"),
            received_at=(record.timestamp or 0) / 1000 or time.time(),
            transport="kafka",
        )

    def handle(self, record: ConsumerRecord) -> None:
        """Raise Unavailable to retry the record later; everything else ends here."""
        inbound = self.inbound(record)
        try:
            self.adapter.verify(inbound)
            payload = self.adapter.parse(inbound)
            normalised = self.adapter.normalise(payload, inbound)
            self.ingestor.refuse_unconvertible(normalised.commands)
        except AdapterError as exc:
            if exc.status >= 500:  # the adapter's own upstream is down: retry, not poison
                raise Unavailable(exc.message) from None
            stage = "authentication" if exc.status == 401 else "validation"
            details = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.details.items()) if exc.details else ""
            reason = f"{exc.code}: {exc.message}" + (f" ({details})" if details else "")
            self.dead_letter(record, reason, stage)
            metrics.WEBHOOKS_RECEIVED.labels(source=self.adapter.source, outcome="kafka_invalid").inc()
            return
        for command in normalised.commands:
            try:
                result = self.ingestor.accept(command)
            except (QueueUnavailable, DedupUnavailable, StateUnavailable) as exc:
                # Commands accepted before this one are deduplicated on the retry.
                raise Unavailable(str(exc)) from None
            if result.status == "in_progress":
                raise Unavailable(f"{command.command_id} is being accepted elsewhere")
        metrics.WEBHOOKS_RECEIVED.labels(source=self.adapter.source, outcome="kafka_accepted").inc()

    def dead_letter(self, record: ConsumerRecord, reason: str, stage: str) -> None:
        try:
            self.outcomes.dead_letter(record, reason, stage)
        except KafkaError as exc:
            raise Unavailable(f"dead-letter topic: {exc}") from None
        metrics.DEAD_LETTERS.labels(provider="none", stage=stage).inc()
        log.warning(
            "invalid source record dead-lettered",
            extra={"topic": record.topic, "offset": record.offset, "reason": reason, "stage": stage},
        )

    def process(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.consumer is not None
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        try:
            for tp, batch in records.items():
                for record in batch:
                    if self.stopping.is_set():
                        self.consumer.seek(tp, record.offset)
                        break
                    try:
                        self.handle(record)
                    except Unavailable as exc:
                        log.warning("cannot take work now; retrying: %s", exc, extra={"topic": self.topic})
                        self.consumer.seek(tp, record.offset)
                        self.stopping.wait(BACKOFF_SECONDS)
                        break
                    offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
        finally:
            if offsets:
                try:
                    self.consumer.commit(offsets)
                except (CommitFailedError, KafkaError) as exc:
                    log.warning("offset commit failed (records are deduplicated on re-read): %s", exc)

    def run(self) -> None:
        self.consumer = make_consumer(self.config, self.group_id)
        self.consumer.subscribe([self.topic])
        log.info("source consumer started", extra={"topic": self.topic, "format": self.adapter.name})
        try:
            while not self.stopping.is_set():
                metrics.heartbeat()  # liveness: the worker port's /healthz fails if this stops
                records = self.consumer.poll(timeout_ms=self.config["kafka"]["consumer"]["poll_timeout_ms"])
                if records:
                    self.process(records)
                    metrics.observe_consumer_lag(self.consumer)
        finally:
            try:
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception as exc:  # leaving the group is best effort when the broker is gone
                log.warning("consumer close: %s", exc)

    def stop(self) -> None:
        self.stopping.set()


class SourceConsumers:
    """Every configured binding, one consumer thread each."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        kafka = runtime.config["kafka"]
        if not kafka["sources"]:
            raise ValueError("no kafka.sources are configured")
        self.producer = make_producer(runtime.config)
        outcomes = OutcomePublisher(self.producer, kafka["topics"]["dlq"], kafka["topics"]["retry"])
        self.consumers = [SourceTopicConsumer(runtime, b, outcomes) for b in kafka["sources"]]
        self.threads: list[threading.Thread] = []

    def run(self) -> None:
        kafka = self.runtime.config["kafka"]
        ensure_topics(
            self.runtime.config,
            [kafka["topics"]["commands"], kafka["topics"]["dlq"], *[c.topic for c in self.consumers]],
        )
        self.threads = [
            threading.Thread(target=c.run, name=f"source:{c.topic}", daemon=True) for c in self.consumers
        ]
        for thread in self.threads:
            thread.start()
        for thread in self.threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
        self.producer.close(timeout=5)
        queue = self.runtime.queue
        if hasattr(queue, "close"):
            queue.close()

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
