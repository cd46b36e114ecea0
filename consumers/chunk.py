"""Several groups of a batch on one worker: one claim transaction and one outcome transaction
for all of them, the provider calls one after another in between.

Claims and outcomes are the database's work per group; taking them per chunk turns a few
statements and a commit per group into a few per chunk (each a multi-row statement). What
each group does is `GroupRunner`'s, unchanged: the lead claim is held from the chunk's claim
until its outcome is written (the heartbeat renews it), a group's records count as done only
once its outcome is durable, and the guarantees of `consumers/delivery.py` hold per group.
What changes is when: a delivered group's outcome is written when the chunk ends (for a
provider that reads back; others' at once, see `GroupRunner._can_defer`), so a crash in the
middle of a chunk leaves its delivered calls in flight (recovered like any call in flight
at a crash: confirmed with the provider before a resend). Groups claimed but
not started (the dispatcher is stopping, their partition was revoked, their provider asked
for a rate-limit wait, the chunk ran `CHUNK_SECONDS`) give their claims back in the chunk's
last transaction.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka.errors import KafkaError

from consumers.batch import Deferred, Group
from consumers.delivery import BUSY_RETRY_SECONDS, STATE_RETRY_SECONDS, GroupRunner
from service.domain.state import DeliveryGroup, StateUnavailable
from service.state.dispatch_ledger import DeliveredGroup, GroupRequest, LedgerClaim

log = logging.getLogger("leadrelay.kafka.dispatcher")

MAX_CHUNK = 16  # groups per chunk: bounds the calls whose outcome waits for the chunk's end
# A chunk that has run this long hands its groups not started back to the batch, to be shared
# out again among the workers that are free: behind a slow provider call (a timeout) the
# chunk's other groups wait at most this long plus that call, and so do outcomes.
CHUNK_SECONDS = 0.5
BUG_RETRY_SECONDS = 30.0  # an unexpected error in one group: try it again much later


class ChunkRunner(GroupRunner):
    def run_chunk(self, groups: list[Group], stopping: threading.Event) -> list[float | None]:
        """Per group of `groups`: None when done, else seconds until it runs again."""
        results: dict[int, float | None] = {id(g): BUSY_RETRY_SECONDS for g in groups}
        taken: list[Group] = []
        with self._held_lock:
            for group in groups:
                lead = (self.lead_scope(group.provider), group.lead_key)
                if lead not in self._held:  # else a sibling group of this lead runs elsewhere
                    self._held.add(lead)
                    taken.append(group)
        try:
            if taken:
                self._run_taken(taken, results, stopping)
        finally:
            with self._held_lock:
                for group in taken:
                    self._held.discard((self.lead_scope(group.provider), group.lead_key))
        return [results[id(g)] for g in groups]

    def _run_taken(
        self, taken: list[Group], results: dict[int, float | None], stopping: threading.Event
    ) -> None:
        open_items = {id(g): [i for i in g.open_items() if i.command is not None] for g in taken}
        requests = [
            GroupRequest(
                g.provider,
                g.lead_key,
                [i.command.command_id for i in open_items[id(g)] if i.command is not None],
                g.kind,
                self.lead_scope(g.provider),
            )
            for g in taken
        ]
        try:
            found = self.ledger.claim_groups(requests, self.owner, time.time(), self.owner_ttl)
        except StateUnavailable as exc:
            log.warning("claims unavailable; will retry: %s", exc)
            for group in taken:
                results[id(group)] = STATE_RETRY_SECONDS
            return
        deferred = Deferred()
        started = time.monotonic()
        held: list[Group] = []  # lead claimed: released at the end unless the outcome did
        handed: list[tuple[str, str, str, str]] = []  # claims of groups that did not run
        try:
            for group, claim in zip(taken, found, strict=True):
                group.lead_released = False
                if claim is None:
                    continue  # another dispatcher has this lead now: busy
                held.append(group)
                claims, applied = claim
                items = open_items[id(group)]
                late = time.monotonic() - started > CHUNK_SECONDS
                limited = group.kind == "deliver" and group.provider in deferred.limited  # polls take no slot
                if late or limited or stopping.is_set() or not group.open_items():
                    handed += self._unused(group, items, claims)
                    results[id(group)] = self._not_started(group, stopping, deferred)
                    continue
                results[id(group)] = self._run_one(group, items, claims, applied, deferred)
            self._write_delivered(deferred, results)
        finally:
            leads = [(self.lead_scope(g.provider), g.lead_key) for g in held if not g.lead_released]
            try:
                self.ledger.hand_back(handed, leads, self.owner, time.time())
            except StateUnavailable:
                pass  # the lead claims lapse after the owner TTL; in-flight rows are confirmed later

    def _run_one(
        self,
        group: Group,
        items: list,
        claims: list[LedgerClaim],
        applied: dict[str, str],
        deferred: Deferred,
    ) -> float | None:
        try:
            return self._run_claimed(group, items, claims, applied, deferred)
        except Exception as exc:  # a bug in one group must not stop the chunk's others
            log.exception("delivery failed unexpectedly", extra={"provider": group.provider})
            return STATE_RETRY_SECONDS if isinstance(exc, KafkaError) else BUG_RETRY_SECONDS

    @staticmethod
    def _not_started(group: Group, stopping: threading.Event, deferred: Deferred) -> float | None:
        if stopping.is_set():
            return BUSY_RETRY_SECONDS  # the batch abandons it: its records are not committed
        if not group.open_items():
            return None  # revoked: the partition's next owner runs it
        if group.kind == "deliver" and group.provider in deferred.limited:
            return deferred.limited[group.provider]
        return 0.0  # the chunk ran late: due again at once, on a free worker

    @staticmethod
    def _unused(group: Group, items: list, claims: list[LedgerClaim]) -> list[tuple[str, str, str, str]]:
        return [
            (item.command.command_id, group.provider, group.kind, claim.verdict)
            for item, claim in zip(items, claims, strict=True)
        ]

    def _write_delivered(self, deferred: Deferred, results: dict[int, float | None]) -> None:
        """Every delivered group of the chunk, its field versions and lead release: one
        transaction. Only then do their records count as done."""
        if not deferred.delivered:
            return
        outcomes = [
            DeliveredGroup(
                DeliveryGroup(group.provider, group.lead_key, [d for _, d in claimed]),
                self.lead_scope(group.provider),
                decision.error,
                decision.stage,
                decision.response,
                decision.count_attempt,
                decision.field_versions,
            )
            for group, claimed, decision, _ in deferred.delivered
        ]
        try:
            self.ledger.record_delivered(outcomes, self.owner, time.time())
        except StateUnavailable as exc:
            # Not durable: the records stay uncommitted; the next run finds the claims ours
            # without an outcome and confirms with the provider before any resend.
            log.warning("outcomes not recorded; will retry: %s", exc)
            for group, _, _, _ in deferred.delivered:
                results[id(group)] = STATE_RETRY_SECONDS
            return
        for group, claimed, decision, now in deferred.delivered:
            group.lead_released = True
            self.settle_items(group, claimed, decision, now)
