"""The embedded dispatcher: a loop that claims due groups from the state store and runs them
through `DeliveryCore` on a pool of worker threads, recording each outcome."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from service import metrics
from service.config import Config
from service.domain.state import Delivery, DeliveryGroup, StateStore, StateUnavailable
from service.domain.statuses import DeliveryStatus
from service.logs import command_id_var
from service.pipeline.budget import BudgetSampler
from service.pipeline.delivery_core import Decision, DeliveryCore
from service.pipeline.wakeup import Waiter, wakeup_address

log = logging.getLogger("leadrelay.dispatcher")

DATABASE_RETRY_SECONDS = 1.0
CONFIRM_RETRY_SECONDS = 1.0  # a read-back that could not run (rate limited) is asked again this soon
# After a tick that started nothing, a wake-up waits this many times that tick's CPU time.
WAKE_REST_FACTOR = 10.0
# Ticks caused by wake-ups are at least this far apart (at most 40 passes a second under load).
WAKE_MIN_GAP_SECONDS = 0.025
# Deliveries of providers that cannot take a call (not configured, limit used up) are claimed
# this often, so each records why it waits (the delivery core's decision).
RECHECK_SECONDS = 5.0


class EmbeddedDispatcher:
    """Drives `DeliveryCore` from the SQLite queue with a pool of worker threads."""

    def __init__(self, config: Config, store: StateStore, core: DeliveryCore | None = None) -> None:
        self.config = config
        self.store = store
        self.core = core or DeliveryCore(config)
        self.core.counts_polls = True  # the SQLite ledger keeps `polls`
        self.core.gate.attach(store)  # breaker transitions and pauses shared with the web process
        self.settings = config["dispatcher"]
        self.concurrency = int(self.settings["concurrency"])
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="deliver")
        self.stopping = threading.Event()
        self._busy: set[tuple[str, str]] = set()
        self._busy_lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._last_recheck = float("-inf")  # the first tick looks at every provider
        self._next_free_in: float | None = None  # seconds until a used-up rate limit frees a slot
        # Woken by the web workers after each enqueue, and by a delivery finishing (a free slot).
        self.waiter = Waiter(wakeup_address(config["storage"]["path"]))
        self.budget = BudgetSampler(self.core, store)  # the console's rate-limit budget

    # ---- outcome recording ----------------------------------------------------------

    def apply(self, group: DeliveryGroup, decision: Decision) -> None:
        now = time.time()
        self.store.record(
            group,
            decision.status,
            now=now,
            error=decision.error,
            stage=decision.stage,
            response=decision.response,
            next_attempt_at=decision.next_attempt_at,
            count_attempt=decision.count_attempt,
            count_poll=decision.count_poll,
            request_id=decision.request_id,
            field_versions=decision.field_versions if decision.status == DeliveryStatus.DELIVERED else None,
        )
        for delivery in group.deliveries:
            token = command_id_var.set(delivery.command.command_id)
            try:
                self._observe(group.provider, delivery, decision, now)
            finally:
                command_id_var.reset(token)

    def _observe(self, provider: str, delivery: Delivery, decision: Decision, now: float) -> None:
        if decision.status == DeliveryStatus.DELIVERED:
            metrics.DELIVERIES.labels(provider=provider, outcome=DeliveryStatus.DELIVERED).inc()
            if delivery.received_at:
                metrics.DELIVERY_LATENCY.labels(provider=provider).observe(
                    max(0.0, now - delivery.received_at)
                )
            log.info("delivered", extra={"provider": provider, "note": decision.error})
        elif decision.status == DeliveryStatus.DEAD_LETTERED:
            metrics.DELIVERIES.labels(provider=provider, outcome=DeliveryStatus.DEAD_LETTERED).inc()
            metrics.DEAD_LETTERS.labels(provider=provider, stage=decision.stage or "provider").inc()
            log.warning(
                "dead-lettered",
                extra={"provider": provider, "reason": decision.error, "stage": decision.stage},
            )
            self.core.alerts.dead_lettered(provider, decision.error)
        elif decision.error and decision.stage != "breaker":  # a held delivery is not news each time
            log.info(
                "rescheduled",
                extra={"provider": provider, "reason": decision.error, "retry_at": decision.next_attempt_at},
            )

    # ---- work -----------------------------------------------------------------------

    def _run_group(self, group: DeliveryGroup, polling: bool) -> None:
        key = (group.provider, group.lead_key)
        # Every log line of this delivery (handlers included) names the command(s) it serves.
        token = command_id_var.set(",".join(d.command.command_id for d in group.deliveries))
        try:
            if polling:
                decision = self.core.poll(group)
            else:
                decision = self.core.deliver(
                    group, self.store.applied_versions(group.lead_key, group.provider)
                )
            self.apply(group, decision)
        except Exception as exc:  # a bug in one group must not stop the others; it retries
            log.exception("delivery failed unexpectedly", extra={"provider": group.provider})
            self.apply(
                group,
                Decision(
                    DeliveryStatus.POLLING if polling else DeliveryStatus.PENDING,
                    error=f"internal error: {type(exc).__name__}: {exc}",
                    stage="leadrelay",
                    next_attempt_at=time.time() + 30,
                ),
            )
        finally:
            command_id_var.reset(token)
            with self._busy_lock:
                self._busy.discard(key)
            self.waiter.wake()

    def recover(self, groups: list[DeliveryGroup] | None = None) -> list[DeliveryGroup]:
        """Deliveries a dead dispatcher left in flight (at start: every `in_flight` row):
        read back from the provider where it can tell us (no second call), else send again
        (at-least-once, logged). -> the groups whose read-back must be asked again later."""
        later: list[DeliveryGroup] = []
        for group in self.store.orphaned_in_flight() if groups is None else groups:
            decision = self.core.confirm(group, self.store.applied_versions(group.lead_key, group.provider))
            if decision is None:
                later.append(group)
                continue
            # When sending again, the dead dispatcher's call may have landed: name what may arrive twice.
            log.warning(
                "recovered in-flight delivery: %s",
                "provider already has it"
                if decision.status == DeliveryStatus.DELIVERED
                else "sending again (may be delivered twice)",
                extra={
                    "command_ids": group.command_ids,
                    "provider": group.provider,
                    "lead_key": group.lead_key,
                    "reason": decision.error,
                },
            )
            self.apply(group, decision)
        return later

    def tick(self) -> int:
        """Claim and start what is due; returns the number of groups started."""
        with self._busy_lock:
            free = self.concurrency - len(self._busy)
            busy = set(self._busy)
        if free <= 0:
            return 0
        # The clock is read after the move: a command accepted while this tick began is due
        # now, not skipped as "not yet due" until a later tick.
        self.store.drain_inbox()
        now = time.time()
        started = 0
        providers, max_groups = self._claimable(free, time.monotonic())
        for polling, groups in (
            (True, self.store.polling_deliveries(now, free)),
            (
                False,
                self.store.claim_due_groups(
                    now,
                    int(self.settings["batch_size"]),
                    skip=busy,
                    max_groups=max_groups,
                    per_group=None if self.settings["coalesce"] else 1,
                    providers=providers,
                ),
            ),
        ):
            for group in groups:
                with self._busy_lock:
                    self._busy.add((group.provider, group.lead_key))
                future = self.pool.submit(self._run_group, group, polling)
                self._futures.add(future)
                future.add_done_callback(self._futures.discard)
                started += 1
        return started

    def _claimable(self, free: int, now: float) -> tuple[list[str] | None, int]:
        """Which providers' deliveries to claim this tick, and how many groups at most. Only
        providers a call could go to now, and no more groups than their free rate-limit slots:
        a claimed group that cannot be sent costs two writes for nothing, which under a backlog
        took CPU and the write lock from ingest. Every RECHECK_SECONDS one tick claims from
        every provider, so a delivery waiting on a provider that cannot send records why."""
        self._next_free_in = None
        if now - self._last_recheck >= RECHECK_SECONDS:
            self._last_recheck = now
            return None, free * 2
        readiness = self.core.readiness()
        # Nobody wakes the loop when a used-up limit frees a slot: it waits that long at most.
        self._next_free_in = readiness.next_free_in
        slots = list(readiness.slots.values())
        if None in slots:
            return list(readiness.slots), free * 2
        return list(readiness.slots), min(free * 2, sum(s or 0 for s in slots))

    def update_gauges(self) -> None:
        stats = self.store.queue_stats()
        metrics.QUEUE_DEPTH.set(stats["depth"])
        metrics.OLDEST_PENDING_AGE.set(stats["oldest_age_seconds"])
        self.core.alerts.backlog(stats["oldest_age_seconds"])
        self.budget.sample()  # every 5 s, the store's sample grid

    def run(self) -> None:
        with self.waiter:
            self._loop()
        self.shutdown()

    def _loop(self) -> None:
        log.info(
            "dispatcher started",
            extra={"concurrency": self.concurrency, "woken_on_enqueue": self.waiter.listening},
        )
        # None until the start-up recovery (every in-flight row) has run: it is retried like any
        # tick when the database is away at start, instead of ending the dispatcher.
        unconfirmed: list[DeliveryGroup] | None = None
        last_recover = time.monotonic()
        last_gauges = 0.0
        last_provider_metrics = 0.0
        interval = float(self.settings["provider_metrics_interval_seconds"])
        poll_interval = float(self.settings["poll_interval_seconds"])
        woken_tick_at = 0.0
        while not self.stopping.is_set():
            metrics.heartbeat()  # liveness: /healthz on the metrics port fails if this stops
            tick_cpu_started = time.thread_time()
            try:
                if unconfirmed is None:
                    unconfirmed = self.recover()
                    last_recover = time.monotonic()
                elif unconfirmed and time.monotonic() - last_recover > CONFIRM_RETRY_SECONDS:
                    unconfirmed = self.recover(unconfirmed)  # rate limited before: ask again
                    last_recover = time.monotonic()
                started = self.tick()
                tick_ended = time.monotonic()
                tick_cost = time.thread_time() - tick_cpu_started
                if time.monotonic() - last_gauges > 5:
                    self.update_gauges()
                    last_gauges = time.monotonic()
            except StateUnavailable as exc:
                # The database is away (PostgreSQL restarting): wait for it rather than exit.
                log.warning("state store unavailable: %s", exc)
                self.stopping.wait(DATABASE_RETRY_SECONDS)
                continue
            if interval and time.monotonic() - last_provider_metrics > interval:
                # In the pool: a slow provider must not hold up the dispatch loop.
                self.pool.submit(self.core.refresh_provider_metrics)
                last_provider_metrics = time.monotonic()
            timeout = poll_interval
            if self._next_free_in is not None:  # a used-up rate limit frees a slot sooner
                timeout = min(poll_interval, max(0.001, self._next_free_in))
            if not started and self.waiter.wait(timeout):
                # Woken by new work after a tick that found nothing to start. Each tick scans
                # the open deliveries of the providers that can send and each group it starts
                # costs two commits; under load, waking on every enqueue would spend
                # the CPU and the write lock on that. So wake-up ticks are 25 ms apart at least,
                # and rest ten times the last tick's CPU time (a large backlog makes ticks
                # costly). CPU, not elapsed time: a tick that waited on the disk or was stalled
                # by the machine cost nothing to repeat, and resting ten times such a wait
                # delayed single events at light load by up to the poll interval.
                now = time.monotonic()
                rest = max(
                    WAKE_REST_FACTOR * tick_cost - (now - tick_ended),
                    woken_tick_at + WAKE_MIN_GAP_SECONDS - now,
                )
                if rest > 0:
                    self.stopping.wait(min(rest, poll_interval))
                woken_tick_at = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        self.waiter.wake()

    def shutdown(self) -> None:
        """Let in-flight calls finish and record their outcome, then stop."""
        self.pool.shutdown(wait=True)
        log.info("dispatcher stopped")
