"""From normalised commands to the queue: route, dedup, enqueue, confirm.

Shared by the webhook routes and the Kafka source consumers. A command is answered
`accepted` only once `queue.enqueue` has returned, that is once it is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from service import metrics
from service.command import LeadUpdateCommand
from service.config import Config
from service.dedup import Claim, DedupStore

log = logging.getLogger("leadrelay.ingest")


class CommandQueue(Protocol):
    def enqueue(self, command: LeadUpdateCommand) -> None:
        """Return only once the command is durable (SQLite commit, Kafka ack)."""

    def note_duplicate(self, command_id: str) -> None: ...


class QueueUnavailable(Exception):
    """The queue could not take the command durably; the sender should retry."""


@dataclass(frozen=True)
class IngestResult:
    command_id: str
    status: str  # "accepted" | "duplicate" | "in_progress"
    providers: tuple[str, ...] = ()


class Ingestor:
    def __init__(
        self,
        config: Config,
        dedup: DedupStore,
        queue: CommandQueue,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.dedup = dedup
        self.queue = queue
        # Called once a command is durably queued (the embedded dispatcher's wake-up).
        self.on_enqueued = on_enqueued
        self.window = int(config["dedup"]["window_seconds"])
        self.fingerprint_window = int(config["dedup"]["fingerprint_window_seconds"])
        self.pending = int(config["dedup"]["pending_seconds"])

    def unit_of_work(self) -> AbstractContextManager[Any]:
        """When dedup keys and the queue live in one database, claim, queue and confirm in a
        single transaction: one commit instead of three, and no window between them."""
        shared = getattr(self.dedup, "store", None)
        if shared is not None and shared is self.queue:
            return shared.transaction()
        return nullcontext()

    def accept(self, command: LeadUpdateCommand) -> IngestResult:
        # Only the dedup and queue writes run inside the unit of work: with the embedded store
        # it holds the database's write lock, which every web thread and worker takes in turn.
        command = self._routed(command)
        keys = [(f"cmd:{command.command_id}", self.window)]
        if self.fingerprint_window:
            keys.append((f"fp:{command.fingerprint()}", self.fingerprint_window))
        with self.unit_of_work():
            result = self._accept(command, keys)
        if result.status == "accepted":
            metrics.COMMANDS_QUEUED.labels(source=command.source).inc()
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "command queued",
                    extra={
                        "command_id": command.command_id,
                        "lead_key": command.lead_key,
                        "providers": list(command.providers),
                    },
                )
            if self.on_enqueued is not None:
                self.on_enqueued()  # after the commit: the dispatcher must find the row
        return result

    def _routed(self, command: LeadUpdateCommand) -> LeadUpdateCommand:
        command = command.with_providers(self.config.route(command.source, command.event_type))
        if not command.providers:
            log.warning(
                "no route for this event: kept as unrouted, replay it after adding a route",
                extra={
                    "command_id": command.command_id,
                    "source": command.source,
                    "event_type": command.event_type,
                },
            )
        return command

    def _accept(self, command: LeadUpdateCommand, keys: list[tuple[str, int]]) -> IngestResult:
        claimed: list[tuple[str, int]] = []
        try:
            for key, window in keys:
                claim = self.dedup.claim(key, self.pending)
                if claim is Claim.CLAIMED:
                    claimed.append((key, window))
                    continue
                # The command id stays claimed: a retry of a double submission is a duplicate too.
                for own_key, own_window in claimed:
                    self.dedup.confirm(own_key, own_window)
                if claim is Claim.DUPLICATE and key.startswith("cmd:"):
                    self.queue.note_duplicate(command.command_id)
                log.info(
                    "event %s",
                    claim.value,
                    extra={"command_id": command.command_id, "dedup": key.split(":")[0]},
                )
                return IngestResult(command.command_id, claim.value)
            self.queue.enqueue(command)
        except BaseException:
            for key, _ in claimed:
                self.dedup.release(key)
            raise
        for key, window in claimed:
            self.dedup.confirm(key, window)
        return IngestResult(command.command_id, "accepted", command.providers)
