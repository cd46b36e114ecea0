"""From normalised commands to the queue: route, dedup, enqueue, confirm.

Shared by the webhook routes and the Kafka source consumers. A command is answered
`accepted` only once `queue.enqueue` has returned, that is once it is durable.

Two dedup rules. A `command_id` seen within `dedup.window_seconds` is a redelivery. For a
sender whose `double_submit_guard` is on, a command whose content fingerprint equals the
one of the *latest accepted* command of the same (source, lead) within
`dedup.fingerprint_window_seconds` is a double submit: recorded in the event log as
`duplicate` (never queued for delivery) and counted; any different change accepted in
between makes the next one new again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from handlers import build_handlers
from handlers.base import ConversionError, PermanentError, ProviderHandler
from service import metrics
from service.config import Config
from service.domain.command import LeadUpdateCommand, status_problem
from service.domain.dedup import DedupStore, DedupUnavailable
from service.domain.state import Claim
from service.sources.base import PayloadInvalid

log = logging.getLogger("leadrelay.ingest")

T = TypeVar("T")


def _run_alone(work: Callable[[], T]) -> T:
    return work()


class CommandQueue(Protocol):
    def enqueue(self, command: LeadUpdateCommand) -> None:
        """Return only once the command is durable (SQLite commit, Kafka ack)."""

    def note_duplicate(self, command_id: str) -> None: ...

    def record_duplicate(self, command: LeadUpdateCommand, duplicate_of: str) -> None:
        """Keep a double submit in the event log, status `duplicate`, with nothing to deliver."""


class QueueUnavailable(Exception):
    """The queue could not take the command durably; the sender should retry."""


@dataclass(frozen=True)
class IngestResult:
    command_id: str
    status: str  # "accepted" | "duplicate" | "in_progress"
    providers: tuple[str, ...] = ()
    duplicate_of: str | None = None  # a double submit: the command it repeats


class Ingestor:
    def __init__(
        self,
        config: Config,
        dedup: DedupStore,
        queue: CommandQueue,
        commit_together: Callable[[Callable[[], IngestResult]], IngestResult] | None = None,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        """`commit_together`: when dedup keys and the queue live in one database (the state
        store), its group commit: claim, queue and confirm of one command run in one
        transaction (shared with concurrent accepts, each in its own savepoint) and return once
        it committed, with no window between them. `on_enqueued`: called once a command is
        durably queued (the embedded dispatcher's wake-up)."""
        self.config = config
        self.dedup = dedup
        self.queue = queue
        self.commit_together = commit_together or _run_alone
        # Dedup keys in the queue's own database, written in the queue's transaction.
        self.claims_confirmed = commit_together is not None and hasattr(dedup, "claim_confirmed")
        # The queue is that database itself (embedded): its inbox row is the claim, one write.
        self.claims_in_queue = self.claims_confirmed and bool(getattr(queue, "claims_in_inbox", False))
        self.on_enqueued = on_enqueued
        self.window = int(config["dedup"]["window_seconds"])
        self.fingerprint_window = int(config["dedup"]["fingerprint_window_seconds"])
        self.pending = int(config["dedup"]["pending_seconds"])
        self._handlers: dict[str, ProviderHandler] | None = None

    def refuse_unconvertible(self, commands: list[LeadUpdateCommand]) -> None:
        """Raise PayloadInvalid (400, naming each field) when a change cannot take the type a
        routed provider's contract declares for it, or `status` is not a canonical status,
        before any command of the request is accepted. A status a provider has no mapping for is not refused here: the other
        providers still get the event, and that provider's delivery is dead-lettered at
        stage `mapping` with the reason. An unrouted command is checked when it is replayed,
        by the dispatcher (dead letter at `mapping`)."""
        if self._handlers is None:
            self._handlers = build_handlers(self.config.providers)
        problems: dict[str, list[str]] = {}
        for command in commands:
            # A sender's `field_map` may map a free-text field onto `status`.
            status = status_problem(command.changes.get("status"))
            if status:
                problems.setdefault("changes.status", []).append(status)
                continue
            for provider in self.config.route(command.source, command.event_type):
                handler = self._handlers.get(provider)
                if handler is None:
                    continue
                try:
                    handler.map_fields(command.changes)
                except ConversionError as exc:
                    problems.setdefault(f"changes.{exc.details['field']}", []).append(exc.reason)
                except PermanentError:
                    continue
        if problems:
            raise PayloadInvalid("a change does not have the type a provider's contract declares", problems)

    def accept(self, command: LeadUpdateCommand, log_level: int = logging.INFO) -> IngestResult:
        """`log_level` of the "command queued" line: a caller whose request is logged anyway
        (the web's access log) passes DEBUG, so an accept is one log line, not two."""
        # Only the dedup and queue writes run inside the shared transaction: with the embedded
        # store it holds the database's write lock, which every web thread and worker takes in
        # turn.
        command = self._routed(command)
        result = self.commit_together(lambda: self._accept(command))
        if result.status == "accepted":
            metrics.COMMANDS_QUEUED.labels(source=command.source).inc()
            if log.isEnabledFor(log_level):
                log.log(
                    log_level,
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

    def _accept(self, command: LeadUpdateCommand) -> IngestResult:
        key = f"cmd:{command.command_id}"
        # In one transaction with the queue write the claim is confirmed as it is taken: one
        # statement fewer per accept, and nobody else could have seen it pending anyway.
        confirmed = self.claims_confirmed
        latest_key = f"fpl:{command.source}:{command.lead_key}" if self.guards(command.source) else None
        if self.claims_in_queue and not latest_key:
            claim = Claim.CLAIMED  # the inbox row takes it, or finds it taken (below)
        elif self.claims_in_queue:
            claim = self.dedup.check_claim(key)  # type: ignore[attr-defined]
        elif confirmed:
            claim = self.dedup.claim_confirmed(key, self.window)  # type: ignore[attr-defined]
        else:
            claim = self.dedup.claim(key, self.pending)
        if claim is not Claim.CLAIMED:
            return self._repeat(command, claim)
        latest, stored = "", False
        try:
            if latest_key:
                fingerprint = command.fingerprint()
                latest = self.dedup.get(latest_key) or ""
                latest_fingerprint, _, duplicate_of = latest.partition(" ")
                # Our own earlier attempt (its enqueue failed, the restore too) is not a repeat.
                if latest_fingerprint == fingerprint and duplicate_of != command.command_id:
                    return self._double_submit(command, key, duplicate_of)
                # Stored before the enqueue: if it cannot be stored, nothing is accepted.
                self.dedup.put(latest_key, f"{fingerprint} {command.command_id}", self.fingerprint_window)
                stored = True
            if self.claims_in_queue:
                if not self.queue.enqueue_claimed(command, key, self.window):  # type: ignore[attr-defined]
                    # A repeat: of a command still in the inbox, or of one whose claim is live.
                    if latest_key and stored:
                        self._restore_latest(latest_key, latest)
                    claim = self.dedup.check_claim(key)  # type: ignore[attr-defined]
                    return self._repeat(command, claim if claim is Claim.IN_PROGRESS else Claim.DUPLICATE)
            else:
                self.queue.enqueue(command)
        except BaseException:
            if latest_key and stored:
                self._restore_latest(latest_key, latest)
            if not self.claims_in_queue:
                self.dedup.release(key)
            raise
        if not confirmed:
            self.dedup.confirm(key, self.window)
        return IngestResult(command.command_id, "accepted", command.providers)

    def _repeat(self, command: LeadUpdateCommand, claim: Claim) -> IngestResult:
        """A command id seen before: counted on the original (duplicate), or still being
        accepted elsewhere (in_progress: the sender retries)."""
        if claim is Claim.DUPLICATE:
            self.queue.note_duplicate(command.command_id)
        log.info("event %s", claim.value, extra={"command_id": command.command_id, "dedup": "cmd"})
        return IngestResult(command.command_id, claim.value)

    def _double_submit(self, command: LeadUpdateCommand, key: str, duplicate_of: str) -> IngestResult:
        """Recorded in the event log (status `duplicate`, nothing to deliver) and counted."""
        self.queue.record_duplicate(command, duplicate_of)
        # The command id stays claimed: a retry of a double submission is a duplicate too.
        self.dedup.confirm(key, self.window)
        metrics.DOUBLE_SUBMITS.labels(source=command.source).inc()
        log.info(
            "event duplicate",
            extra={"command_id": command.command_id, "dedup": "fingerprint", "duplicate_of": duplicate_of},
        )
        return IngestResult(command.command_id, "duplicate", duplicate_of=duplicate_of)

    def guards(self, source: str) -> bool:
        """Whether the double-submit guard applies to this source (config, else the sender's default)."""
        if not self.fingerprint_window:
            return False
        return bool((self.config.sources.get(source) or {}).get("double_submit_guard"))

    def _restore_latest(self, key: str, previous: str) -> None:
        """Undo the guard's record of a command that was not queued ("" = none). If even this
        fails, the command's own retry is still recognised by its command id."""
        try:
            self.dedup.put(key, previous, self.fingerprint_window)
        except DedupUnavailable as exc:
            log.warning("double-submit guard not restored: %s", exc, extra={"dedup": "fingerprint"})
