"""One group of a dispatcher batch, on a worker thread: claim, call, record the outcome.

Per (command, provider) the Redis ledger is claimed before the call and written after it.
The outcome leaves durably before the record counts as done: `delivered` in the ledger,
a retry-topic record (transient failure, long wait, async poll), or a DLQ record
(permanent failure). A rate-limit wait shorter than `kafka.max_in_batch_wait_seconds`
keeps the group in the batch instead (`run_group` returns the seconds to wait).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka.errors import KafkaError

from consumers.batch import Group, Item
from consumers.outcomes import OutcomePublisher
from service import metrics
from service.dispatcher import Decision, DeliveryCore
from service.logs import command_id_var
from service.redis_state import RedisEventStore, StateUnavailable
from service.store import Delivery, DeliveryGroup

log = logging.getLogger("leadrelay.kafka.dispatcher")

STATE_RETRY_SECONDS = 1.0  # Redis or the broker could not take an outcome: try the group again
BUSY_RETRY_SECONDS = 0.5  # another live dispatcher holds the claim (rebalance overlap)


class GroupRunner:
    def __init__(
        self,
        core: DeliveryCore,
        ledger: RedisEventStore,
        outcomes: OutcomePublisher,
        owner: str,
        max_in_batch_wait: float,
    ) -> None:
        self.core = core
        self.ledger = ledger
        self.outcomes = outcomes
        self.owner = owner
        self.max_in_batch_wait = max_in_batch_wait
        # (command, provider) this process is calling right now: our own claims found in
        # the ledger that are not in here were left by a failed attempt of ours (orphans).
        self._local_in_flight: set[tuple[str, str]] = set()
        self._local_lock = threading.Lock()

    def _claim(
        self, group: Group, items: list[Item]
    ) -> tuple[list[tuple[Item, Delivery]], list[Item], bool, dict[str, str]]:
        """-> (claimed deliveries, items already resolved, whether one was busy, the lead's
        applied field versions). Claims and versions come back in one Redis round trip."""
        claimed: list[tuple[Item, Delivery]] = []
        resolved: list[Item] = []
        ids = [item.command.command_id for item in items if item.command is not None]
        verdicts, applied = self.ledger.claim_many(ids, group.provider, self.owner, group.lead_key)
        for index, (item, (verdict, previous)) in enumerate(zip(items, verdicts, strict=True)):
            assert item.command is not None
            key = (item.command.command_id, group.provider)
            if verdict == "mine":
                with self._local_lock:
                    verdict = "busy" if key in self._local_in_flight else "orphan"
            if verdict == "busy":
                # Keep order: nothing after a busy one; give back what we took after it.
                later = [i.command for i, (v, _) in zip(items[index + 1 :], verdicts[index + 1 :], strict=True)
                         if v in ("claimed", "orphan") and i.command is not None]  # fmt: skip
                for command in later:
                    self.ledger.record(command.command_id, group.provider, "pending")
                return claimed, resolved, True, applied
            if verdict == "done":
                resolved.append(item)
                continue
            delivery = Delivery(
                command=item.command,
                provider=group.provider,
                seq=item.offset,
                attempts=int(previous.get("attempts") or item.attempts),
                status="polling" if group.kind == "poll" else "pending",
                request_id=item.request_id or previous.get("request_id"),
                received_at=item.received_at,
                first_attempt_at=previous.get("first_attempt_at"),
            )
            if verdict == "orphan" and group.kind == "deliver":
                applied_already = self._confirmed_applied(group, delivery)
                if applied_already is None:
                    # Ask again later; keep order: give back what we took after it.
                    later = [i.command for i, (v, _) in zip(items[index + 1 :], verdicts[index + 1 :], strict=True)
                             if v in ("claimed", "orphan") and i.command is not None]  # fmt: skip
                    for command in later:
                        self.ledger.record(command.command_id, group.provider, "pending")
                    return claimed, resolved, True, applied
                if applied_already:
                    resolved.append(item)
                    continue
            claimed.append((item, delivery))
        return claimed, resolved, False, applied

    def _confirmed_applied(self, group: Group, delivery: Delivery) -> bool | None:
        """A dead owner left this (command, provider) in flight: did its call land? True: it
        did (recorded delivered); False: send again; None: the read-back could not run now
        (rate limited, provider failing): the claim stays ours and is asked again later."""
        decision = self.core.confirm(
            DeliveryGroup(group.provider, group.lead_key, [delivery]),
            self.ledger.applied_versions(group.lead_key, group.provider),
        )
        command_id = delivery.command.command_id
        if decision is None:
            return None
        if decision.status == "delivered":
            log.warning(
                "in-flight delivery of a dead owner: provider already has it",
                extra={"command_id": command_id},
            )
            self.ledger.record(command_id, group.provider, "delivered", last_error=decision.error)
            self.ledger.record_versions(group.lead_key, group.provider, decision.field_versions)
            return True
        # The dead owner's call may have landed: name what may now arrive twice.
        log.warning(
            "in-flight delivery of a dead owner: sending again (may be delivered twice)",
            extra={
                "command_id": command_id,
                "provider": group.provider,
                "lead_key": group.lead_key,
                "reason": decision.error,
            },
        )
        return False

    def run_group(self, group: Group) -> float | None:
        """Deliver what is open in `group`; None when done, else seconds until it runs again."""
        items = group.open_items()
        try:
            claimed, resolved, busy, applied = self._claim(group, items)
        except StateUnavailable as exc:
            log.warning("ledger unavailable; will retry: %s", exc, extra={"provider": group.provider})
            return STATE_RETRY_SECONDS
        for item in resolved:
            item.unresolved.discard(group.provider)
        if not claimed:
            return BUSY_RETRY_SECONDS if busy else None
        keys = {(d.command.command_id, group.provider) for _, d in claimed}
        with self._local_lock:
            self._local_in_flight |= keys
        try:
            return self._deliver(group, claimed, busy, applied)
        finally:
            with self._local_lock:
                self._local_in_flight -= keys

    def _deliver(
        self, group: Group, claimed: list[tuple[Item, Delivery]], busy: bool, applied: dict[str, str]
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
            again = self._apply(group, claimed, decision)
        except (StateUnavailable, KafkaError) as exc:
            # The outcome is not durable: the records stay uncommitted and the group runs again.
            log.warning("outcome not recorded; will retry: %s", exc, extra={"provider": group.provider})
            return STATE_RETRY_SECONDS
        if again is not None:
            return again
        return BUSY_RETRY_SECONDS if busy else None

    def _release(self, group: Group, claimed: list[tuple[Item, Delivery]]) -> None:
        for _, delivery in claimed:
            try:
                self.ledger.record(delivery.command.command_id, group.provider, "pending")
            except StateUnavailable:
                pass  # the claim stays ours; we re-check it as an orphan of our own

    def _apply(self, group: Group, claimed: list[tuple[Item, Delivery]], decision: Decision) -> float | None:
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
            for _, delivery in claimed:
                self.ledger.record(
                    delivery.command.command_id,
                    provider,
                    "pending",
                    next_attempt_at=decision.next_attempt_at,
                    last_error=decision.error,
                    error_stage=decision.stage,
                )
            return max(0.001, wait)
        if decision.status == "delivered":
            # The whole coalesced call and the lead's field versions: one round trip.
            self.ledger.record_delivered(
                [d.command.command_id for _, d in claimed],
                provider,
                group.lead_key,
                decision.field_versions,
                count_attempt=decision.count_attempt,
                last_error=decision.error,
                error_stage=decision.stage,
                response=decision.response,
            )
        for item, delivery in claimed:
            command_id = delivery.command.command_id
            token = command_id_var.set(command_id)
            try:
                self._record_one(group, item, delivery, decision, now)
            finally:
                command_id_var.reset(token)
            item.unresolved.discard(provider)
        return None

    def _record_one(
        self, group: Group, item: Item, delivery: Delivery, decision: Decision, now: float
    ) -> None:
        provider = group.provider
        command_id = delivery.command.command_id
        attempts = delivery.attempts + (1 if decision.count_attempt else 0)
        common = {
            "last_error": decision.error,
            "error_stage": decision.stage,
            "response": decision.response,
        }
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
            self.ledger.record(
                command_id, provider, "dead_lettered", count_attempt=decision.count_attempt, **common
            )
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
            if decision.count_attempt:  # an attempt was made: the retry horizon counts from the first
                common["first_attempt_at"] = delivery.first_attempt_at or now
            self.ledger.record(
                command_id,
                provider,
                decision.status,
                count_attempt=decision.count_attempt,
                next_attempt_at=due_at,
                request_id=request_id,
                **common,
            )
            log.info(
                "rescheduled", extra={"provider": provider, "reason": decision.error, "retry_at": due_at}
            )
