"""The command topic as the `CommandQueue` of distributed mode.

`enqueue` runs inside the ingest transaction of the SQL store: it writes the command and
its pending deliveries, then produces to the topic and returns only after the broker
acknowledged the record with `acks=all` (every in-sync replica has it). A broker failure or
timeout raises `QueueUnavailable` (the webhook answers 503 + Retry-After) and the
transaction rolls back, dedup claim included. If the commit fails after the ack, the
record is in Kafka without its row: the dispatcher registers it when it reads it. Records
are keyed by the lead key, so every command of one lead lands in one partition, in order.
"""

from __future__ import annotations

import os
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaError

from consumers.client import H_RECEIVED_AT, make_headers, make_producer
from service.config import Config
from service.domain.command import LeadUpdateCommand
from service.pipeline.ingest import QueueUnavailable
from service.state import SqlStateStore


class KafkaCommandQueue:
    def __init__(self, config: Config, store: SqlStateStore) -> None:
        self.config = config
        self.topic = config["kafka"]["topics"]["commands"]
        self.store = store
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
        """Record, then produce and wait for the ack, in the caller's transaction."""
        with self.store.transaction():
            if self.store.enqueue(command):  # False: still on record, counted as a duplicate
                self.publish(command, time.time())

    def note_duplicate(self, command_id: str) -> None:
        self.store.note_duplicate(command_id)

    def record_duplicate(self, command: LeadUpdateCommand, duplicate_of: str) -> None:
        """A double submit goes to the event log only, never to the command topic."""
        self.store.record_duplicate(command, duplicate_of)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._pid == os.getpid():
                self._producer.close(timeout=5)
            self._producer = None
