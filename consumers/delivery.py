"""One group of a dispatcher batch, on a worker thread: claim the lead, claim the ledger,
call, record the outcome (the claims and delivered outcomes of several groups are taken
together by `consumers/chunk.py`).

At most one group per (provider, lead) runs at a time across every dispatcher and both
topics: the group first takes the lead's claim in the SQL store (held for the whole call,
renewed by the owner's heartbeat), then reads the lead's applied field versions, so an
older value is never applied after a newer one. Per (command, provider) the SQL ledger is
claimed before the call and written after it. The outcome leaves durably before the record
counts as done: `delivered` in the ledger, a retry-topic record (transient failure, long
wait, async poll), or a DLQ record (permanent failure). A rate-limit wait shorter than
`kafka.max_in_batch_wait_seconds` keeps the group in the batch instead (`run_chunk` returns
the seconds to wait).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka.errors import KafkaError

from consumers.batch import Deferred, Group, Item
from consumers.outcomes import OutcomePublisher
from service import metrics
from service.domain.state import Delivery, DeliveryGroup, StateUnavailable
from service.logs import command_id_var
from service.pipeline.delivery_core import Decision, DeliveryCore
from service.state import SqlStateStore
from service.state.dispatch_ledger import BUSY, DONE, ORPHAN, UNRECORDED, LedgerClaim

log = logging.getLogger("leadrelay.kafka.dispatcher")

STATE_RETRY_SECONDS = 1.0  # the database, Redis or the broker could not answer: try the group again
BUSY_RETRY_SECONDS = 0.5  # another group of this lead runs (here or in another dispatcher)


class GroupRunner:
    def __init__(
        self,
        core: DeliveryCore,
        ledger: SqlStateStore,
        outcomes: OutcomePublisher,
        owner: str,
        max_in_batch_wait: float,
        owner_ttl: float,
    ) -> None:
        self.core = core
        self.ledger = ledger
        self.outcomes = outcomes
        self.owner = owner
        self.max_in_batch_wait = max_in_batch_wait
        self.owner_ttl = owner_ttl
        # Lead claims held by this process's workers; the heartbeat renews exactly these.
        self._held: set[tuple[str, str]] = set()
        self._held_lock = threading.Lock()

    def held_leads(self) -> list[tuple[str, str]]:
        with self._held_lock:
            return sorted(self._held)

    def lead_scope(self, provider: str) -> str:
        """What a lead claim is held on: the provider's account (two provider entries with one
        set of credentials, LeadSquared sync and async, update the same CRM record)."""
        handler = self.core.handlers.get(provider)
        return handler.account if handler is not None else provider

    def _run_claimed(
        self,
        group: Group,
        items: list[Item],
        claims: list[LedgerClaim],
        applied: dict[str, str],
        deferred: Deferred | None = None,
    ) -> float | None:
        try:
            claimed, resolved, busy, confirmed = self._sort_claims(group, items, claims)
            if confirmed and claimed:
                # A read-back recorded a delivery and its field versions: read them again.
                applied = self.ledger.applied_versions(group.lead_key, group.provider)
        except StateUnavailable as exc:
            log.warning("ledger unavailable; will retry: %s", exc, extra={"provider": group.provider})
            return STATE_RETRY_SECONDS
        for item in resolved:
            item.unresolved.discard(group.provider)
        if not claimed:
            return BUSY_RETRY_SECONDS if busy else None
        return self._deliver(group, claimed, busy, applied, deferred)

    def _sort_claims(
        self, group: Group, items: list[Item], claims: list[LedgerClaim]
    ) -> tuple[list[tuple[Item, Delivery]], list[Item], bool, bool]:
        """-> (claimed deliveries, items with nothing left to do, whether one was busy, whether
        a read-back recorded a delivery)."""
        claimed: list[tuple[Item, Delivery]] = []
        resolved: list[Item] = []
        confirmed = False
        items = [item for item in items if item.command is not None]
        for index, (item, claim) in enumerate(zip(items, claims, strict=True)):
            assert item.command is not None
            if claim.verdict == DONE:
                resolved.append(item)
                continue
            delivery = Delivery(
                command=item.command,
                provider=group.provider,
                seq=item.offset,
                attempts=max(claim.attempts, item.attempts),
                status="polling" if group.kind == "poll" else "pending",
                polls=claim.polls,
                request_id=item.request_id or claim.request_id,
                received_at=item.received_at,
                first_attempt_at=claim.first_attempt_at,
            )
            if claim.verdict == BUSY:
                # Keep order: nothing after a busy one; give back what we took after it.
                self._give_back(group, self._later(group, items, claims, index))
                return claimed, resolved, True, confirmed
            if claim.verdict in (ORPHAN, UNRECORDED) and group.kind == "deliver":
                applied_already = self._confirmed_applied(group, delivery, claim.verdict)
                if applied_already is None:
                    # Ask again later; keep order: give back what we took after it.
                    self._give_back(group, self._later(group, items, claims, index))
                    return claimed, resolved, True, confirmed
                if applied_already:
                    confirmed = True
                    resolved.append(item)
                    continue
            claimed.append((item, delivery))
        return claimed, resolved, False, confirmed

    @staticmethod
    def _later(group: Group, items: list[Item], claims: list, index: int) -> list[Delivery]:
        return [
            Delivery(command=i.command, provider=group.provider, seq=i.offset, attempts=c.attempts)
            for i, c in zip(items[index + 1 :], claims[index + 1 :], strict=True)
            if c.verdict not in (DONE, BUSY) and i.command is not None
        ]

    def _give_back(self, group: Group, deliveries: list[Delivery]) -> None:
        """Claims taken but not used: pending again, for whoever runs the lead next."""
        if deliveries:
            self.ledger.record(
                DeliveryGroup(group.provider, group.lead_key, deliveries),
                "pending",
                now=time.time(),
                count_attempt=False,
            )

    def _confirmed_applied(self, group: Group, delivery: Delivery, verdict: str) -> bool | None:
        """A call of this delivery may have landed without its outcome being written (a dead
        owner's, or an earlier attempt of ours whose record failed). True: the provider has it
        (recorded delivered); False: send again; None: the read-back could not run now (rate
        limited, provider failing): the claim stays ours and is asked again later."""
        one = DeliveryGroup(group.provider, group.lead_key, [delivery])
        decision = self.core.confirm(one, self.ledger.applied_versions(group.lead_key, group.provider))
        command_id = delivery.command.command_id
        if decision is None:
            return None
        if decision.status == "delivered":
            log.warning(
                "in-flight delivery without an outcome: provider already has it",
                extra={"command_id": command_id, "claim": verdict},
            )
            self.ledger.record(
                one, "delivered", now=time.time(), error=decision.error, count_attempt=False,
                field_versions=decision.field_versions,
            )  # fmt: skip
            return True
        # The earlier call may have landed: name what may now arrive twice.
        log.warning(
            "in-flight delivery without an outcome: sending again (may be delivered twice)",
            extra={
                "command_id": command_id,
                "provider": group.provider,
                "lead_key": group.lead_key,
                "reason": decision.error,
                "claim": verdict,
            },
        )
        return False

    def _deliver(
        self,
        group: Group,
        claimed: list[tuple[Item, Delivery]],
        busy: bool,
        applied: dict[str, str],
        deferred: Deferred | None = None,
    ) -> float | None:
        delivery_group = DeliveryGroup(group.provider, group.lead_key, [d for _, d in claimed])
        try:
            if group.kind == "poll":
                decision = self.core.poll(delivery_group)
            else:
                decision = self.core.deliver(delivery_group, applied)
        except StateUnavailable as exc:
            self._release(group, claimed)
            log.warning("shared state unavailable; will retry: %s", exc, extra={"provider": group.provider})
            return STATE_RETRY_SECONDS
        try:
            again = self._apply(group, claimed, decision, deferred)
        except (StateUnavailable, KafkaError) as exc:
            # The outcome is not durable: the records stay uncommitted and the group runs again.
            log.warning("outcome not recorded; will retry: %s", exc, extra={"provider": group.provider})
            return STATE_RETRY_SECONDS
        if again is not None:
            return again
        return BUSY_RETRY_SECONDS if busy else None

    def _release(self, group: Group, claimed: list[tuple[Item, Delivery]]) -> None:
        try:
            self._give_back(group, [d for _, d in claimed])
        except StateUnavailable:
            pass  # the claims stay ours: the next run finds them unrecorded and confirms first

    def _can_defer(self, group: Group) -> bool:
        """Whether a delivered outcome may wait for the chunk's end: a crash before it is written
        leaves the call in flight, which only a provider that reads back can confirm; for the
        others it would be resent, so theirs are written at once, as before chunks."""
        handler = self.core.handlers.get(group.provider)
        return group.kind == "deliver" and handler is not None and handler.can_confirm

    def _apply(
        self,
        group: Group,
        claimed: list[tuple[Item, Delivery]],
        decision: Decision,
        deferred: Deferred | None = None,
    ) -> float | None:
        now = time.time()
        provider = group.provider
        wait = (decision.next_attempt_at or now) - now
        if (
            decision.status == "pending"
            and not decision.count_attempt
            and decision.stage not in ("config", "breaker")
            and wait < self.max_in_batch_wait
        ):
            # A rate-limit slot frees soon: hold the group in the batch. A misconfigured, paused
            # or broken (breaker open) provider goes to the retry topic instead, so it cannot
            # hold the batch, and other providers' records behind it, for long.
            self.ledger.record(
                DeliveryGroup(provider, group.lead_key, [d for _, d in claimed]),
                "pending",
                now=now,
                next_attempt_at=decision.next_attempt_at,
                error=decision.error,
                stage=decision.stage,
                count_attempt=False,
            )
            if deferred is not None and wait > 0.01:  # a limit, not "the update goes next"
                deferred.limited[provider] = max(deferred.limited.get(provider, 0.0), wait)
            return max(0.001, wait)
        if decision.status == "delivered" and deferred is not None and self._can_defer(group):
            # Written with the chunk's other delivered groups in one transaction; the records
            # count as done only after it (`settle_items`).
            deferred.delivered.append((group, claimed, decision, now))
            return None
        if decision.status == "delivered":
            # The whole coalesced call, the lead's field versions and the lead's release: one
            # transaction (nothing durable is left to write for a delivered group).
            with self.ledger.transaction():
                self.ledger.record(
                    DeliveryGroup(provider, group.lead_key, [d for _, d in claimed]),
                    "delivered",
                    now=now,
                    error=decision.error,
                    stage=decision.stage,
                    response=decision.response,
                    count_attempt=decision.count_attempt,
                    field_versions=decision.field_versions,
                )
                self.ledger.release_lead(self.lead_scope(provider), group.lead_key, self.owner)
            group.lead_released = True
        self.settle_items(group, claimed, decision, now)
        return None

    def settle_items(
        self, group: Group, claimed: list[tuple[Item, Delivery]], decision: Decision, now: float
    ) -> None:
        """The outcome's other half (retry or DLQ record, their ledger rows; metrics and logs),
        then each record is done for this provider."""
        provider = group.provider
        for item, delivery in claimed:
            command_id = delivery.command.command_id
            token = command_id_var.set(command_id)
            try:
                self._record_one(group, item, delivery, decision, now)
            finally:
                command_id_var.reset(token)
            item.unresolved.discard(provider)

    def _record_one(
        self, group: Group, item: Item, delivery: Delivery, decision: Decision, now: float
    ) -> None:
        provider = group.provider
        command_id = delivery.command.command_id
        attempts = delivery.attempts + (1 if decision.count_attempt else 0)
        one = DeliveryGroup(provider, group.lead_key, [delivery])
        common = {"error": decision.error, "stage": decision.stage, "response": decision.response}
        if decision.status == "delivered":  # the ledger was written for the whole group
            metrics.DELIVERIES.labels(provider=provider, outcome="delivered").inc()
            if delivery.received_at:
                metrics.DELIVERY_LATENCY.labels(provider=provider).observe(
                    max(0.0, now - delivery.received_at)
                )
            log.info("delivered", extra={"provider": provider, "note": decision.error})
        elif decision.status == "dead_lettered":
            self.outcomes.dead_letter(
                item.record,
                decision.error or "dead-lettered",
                decision.stage or "provider",
                provider,
                command_id,
            )
            self.ledger.record(one, "dead_lettered", now=now, count_attempt=decision.count_attempt, **common)
            metrics.DELIVERIES.labels(provider=provider, outcome="dead_lettered").inc()
            metrics.DEAD_LETTERS.labels(provider=provider, stage=decision.stage or "provider").inc()
            log.warning(
                "dead-lettered",
                extra={"provider": provider, "reason": decision.error, "stage": decision.stage},
            )
            self.core.alerts.dead_lettered(provider, decision.error)
        else:  # pending (transient, long wait) or polling: durably scheduled on the retry topic
            due_at = decision.next_attempt_at or now
            kind = "poll" if decision.status == "polling" else "deliver"
            request_id = decision.request_id or delivery.request_id
            self.outcomes.schedule_retry(
                item.record,
                provider,
                attempts,
                due_at,
                kind=kind,
                request_id=request_id,
                received_at=delivery.received_at,
                reason=decision.error,
            )
            # An attempt made starts the retry horizon (the ledger keeps the first one's time).
            self.ledger.record(
                one,
                decision.status,
                now=now,
                count_attempt=decision.count_attempt,
                count_poll=decision.count_poll,
                next_attempt_at=due_at,
                request_id=decision.request_id,
                **common,
            )
            log.info(
                "rescheduled", extra={"provider": provider, "reason": decision.error, "retry_at": due_at}
            )
