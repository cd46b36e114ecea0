"""The command topic as the `CommandQueue` of distributed mode.

`enqueue` returns only after the broker acknowledged the record with `acks=all` (every
in-sync replica has it); any failure or timeout raises `QueueUnavailable`, which the
webhook answers with 503 + Retry-After. Records are keyed by the lead key, so every
command of one lead lands in one partition, in order.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaError

from consumers.client import H_RECEIVED_AT, make_headers, make_producer
from service.config import Config
from service.domain.command import LeadUpdateCommand
from service.ingest import QueueUnavailable
from service.redis_state import RedisEventStore, StateUnavailable

log = logging.getLogger("leadrelay.kafka.queue")


class KafkaCommandQueue:
    def __init__(self, config: Config, events: RedisEventStore | None = None) -> None:
        self.config = config
        self.topic = config["kafka"]["topics"]["commands"]
        self.events = events
        settings = config["kafka"]["producer"]
        # Wait a little longer than the producer's own delivery timeout, never forever.
        self.ack_timeout = (settings["delivery_timeout_ms"] + settings["max_block_ms"]) / 1000 + 1
        self._producer: KafkaProducer | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def producer(self) -> KafkaProducer:
        # Created lazily and per process: gunicorn forks workers after the app is built.
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                try:
                    self._producer = make_producer(self.config)
                except KafkaError as exc:
                    raise QueueUnavailable(f"kafka: {type(exc).__name__}: {exc}") from None
                self._pid = os.getpid()
            return self._producer

    def publish(self, command: LeadUpdateCommand, received_at: float | None = None) -> None:
        """Produce and wait for the ack; raise QueueUnavailable otherwise."""
        received_at = received_at or time.time()
        try:
            future = self.producer().send(
                self.topic,
                key=command.lead_key.encode(),
                value=command.to_json().encode(),
                headers=make_headers({H_RECEIVED_AT: f"{received_at:.6f}"}),
            )
            future.get(timeout=self.ack_timeout)
        except KafkaError as exc:
            self._discard_producer()
            raise QueueUnavailable(f"kafka: {type(exc).__name__}: {exc}") from None

    def _discard_producer(self) -> None:
        """After a failure start afresh: an idempotent producer whose batches expired can stay
        wedged on the old sequence numbers long after the broker is back."""
        with self._lock:
            broken, self._producer = self._producer, None
        if broken is not None:
            threading.Thread(target=broken.close, kwargs={"timeout": 5}, daemon=True).start()

    def enqueue(self, command: LeadUpdateCommand) -> None:
        received_at = time.time()
        self.publish(command, received_at)
        if self.events is not None:
            try:
                self.events.register(command, received_at)
            except StateUnavailable as exc:
                # The command is durable in Kafka; the dispatcher registers it when it sees it.
                log.warning("event log not updated: %s", exc, extra={"command_id": command.command_id})

    def note_duplicate(self, command_id: str) -> None:
        if self.events is not None:
            try:
                self.events.note_duplicate(command_id)
            except StateUnavailable:
                pass  # a counter only

    def record_duplicate(self, command: LeadUpdateCommand, duplicate_of: str) -> None:
        """A double submit goes to the event log only, never to the command topic."""
        if self.events is None:
            log.info("double submit not recorded: no event log", extra={"command_id": command.command_id})
            return
        try:
            self.events.record_duplicate(command, duplicate_of)
        except StateUnavailable as exc:
            raise QueueUnavailable(f"event log: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._pid == os.getpid():
                self._producer.close(timeout=5)
            self._producer = None
