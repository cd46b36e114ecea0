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
from service.dedup import DedupStore
from service.domain.state import Claim

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
        unit_of_work: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        """`unit_of_work`: when dedup keys and the queue live in one database (the state
        store), its transaction: claim, queue and confirm then commit once, with no window
        between them."""
        self.config = config
        self.dedup = dedup
        self.queue = queue
        self.unit_of_work = unit_of_work or nullcontext
        self.window = int(config["dedup"]["window_seconds"])
        self.fingerprint_window = int(config["dedup"]["fingerprint_window_seconds"])
        self.pending = int(config["dedup"]["pending_seconds"])

    def accept(self, command: LeadUpdateCommand) -> IngestResult:
        with self.unit_of_work():
            return self._accept(command)

    def _accept(self, command: LeadUpdateCommand) -> IngestResult:
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
        claimed: list[tuple[str, int]] = []
        keys = [(f"cmd:{command.command_id}", self.window)]
        if self.fingerprint_window:
            keys.append((f"fp:{command.fingerprint()}", self.fingerprint_window))
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
        metrics.COMMANDS_QUEUED.labels(source=command.source).inc()
        log.info(
            "command queued",
            extra={
                "command_id": command.command_id,
                "lead_key": command.lead_key,
                "providers": list(command.providers),
            },
        )
        return IngestResult(command.command_id, "accepted", command.providers)
