"""Durable outcomes that leave the batch through Kafka: the dead-letter and retry topics.

Both return only after the broker's ack: an offset is committed only once the outcome of
its record is durable. A dead letter keeps the original bytes intact and says why in
headers; a retry record carries the original bytes, the provider, the attempt count and
the time it is due.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from consumers.client import (
    H_ATTEMPTS,
    H_COMMAND_ID,
    H_DUE_AT,
    H_KIND,
    H_ORIGIN,
    H_PROVIDER,
    H_REASON,
    H_RECEIVED_AT,
    H_REQUEST_ID,
    H_STAGE,
    make_headers,
)
from service.domain.redact import redact

ACK_TIMEOUT_SECONDS = 30.0


def origin(record: ConsumerRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


class OutcomePublisher:
    def __init__(self, producer: KafkaProducer, dlq_topic: str, retry_topic: str) -> None:
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.retry_topic = retry_topic

    def dead_letter(
        self,
        record: ConsumerRecord,
        reason: str,
        stage: str,
        provider: str | None = None,
        command_id: str | None = None,
    ) -> None:
        headers = make_headers(
            {
                H_REASON: redact(reason)[:2000],
                H_STAGE: stage,
                H_PROVIDER: provider,
                H_COMMAND_ID: command_id,
                H_ORIGIN: origin(record),
            }
        )
        # The sender's own headers travel along, after ours.
        headers += [(k, v) for k, v in record.headers or [] if not k.startswith("leadrelay-")]
        self.producer.send(self.dlq_topic, key=record.key, value=record.value, headers=headers).get(
            timeout=ACK_TIMEOUT_SECONDS
        )

    def schedule_retry(
        self,
        record: ConsumerRecord,
        provider: str,
        attempts: int,
        due_at: float,
        *,
        kind: str = "deliver",
        request_id: str | None = None,
        received_at: float | None = None,
        reason: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            H_PROVIDER: provider,
            H_ATTEMPTS: attempts,
            H_DUE_AT: f"{due_at:.3f}",
            H_KIND: kind,
            H_REQUEST_ID: request_id,
            H_RECEIVED_AT: f"{received_at or time.time():.6f}",
            H_REASON: redact(reason)[:2000] if reason else None,
            H_ORIGIN: origin(record),
        }
        self.producer.send(
            self.retry_topic, key=record.key, value=record.value, headers=make_headers(values)
        ).get(timeout=ACK_TIMEOUT_SECONDS)
