"""The dispatcher: pending deliveries -> coalesced provider calls -> recorded outcomes.

`DeliveryCore` is the part every mode shares (coalescing, stale protection, rate limits,
classification into the next state). `EmbeddedDispatcher` drives it from the SQLite
queue; the Kafka dispatcher consumer drives the same core from the command topic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from handlers import build_handlers
from handlers.base import DeliveryResult, Outcome, ProviderHandler, ProviderUpdate
from service import metrics
from service.config import Config
from service.domain.backoff import backoff_seconds
from service.domain.command import complete_names
from service.domain.limits import RateLimiter
from service.domain.state import Delivery, DeliveryGroup, StateStore, StateUnavailable
from service.domain.statuses import DeliveryStatus
from service.logs import command_id_var
from service.pipeline.alerts import Alerts
from service.pipeline.breaker import BreakerSettings
from service.pipeline.gate import ProviderGate, settings_fingerprint
from service.pipeline.ratelimit import InProcessRateLimiter
from service.pipeline.readback import ReadBack, read_back
from service.pipeline.schedule import give_up_reason, next_retry_at
from service.pipeline.wakeup import Waiter, wakeup_address

log = logging.getLogger("leadrelay.dispatcher")

NOT_CONFIGURED_RECHECK_SECONDS = 30.0
DATABASE_RETRY_SECONDS = 1.0
CONFIRM_RETRY_SECONDS = 1.0  # a read-back that could not run (rate limited) is asked again this soon
# After a tick that started nothing, a wake-up waits this many times that tick's duration.
WAKE_REST_FACTOR = 10.0
# Ticks caused by wake-ups are at least this far apart (at most 40 passes a second under load).
WAKE_MIN_GAP_SECONDS = 0.025


def version_stamp(occurred_at: datetime) -> str:
    """`occurred_at` as a fixed-width UTC string, so stored field versions compare correctly
    as strings (isoformat keeps the sender's offset and drops zero microseconds)."""
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Coalesced:
    update: ProviderUpdate
    field_versions: dict[str, str] = field(default_factory=dict)  # field -> occurred_at applied
    stale_fields: list[str] = field(default_factory=list)


def coalesce(deliveries: list[Delivery], applied: Mapping[str, str]) -> Coalesced:
    """Merge commands for one lead and provider into one update.

    Events are applied in `occurred_at` order (queue order breaks ties): later values win
    per field, metadata is merged. A field whose value comes from an event older than the
    one already applied for that lead and field is not sent (stale protection). Names are
    completed per command first (`complete_names`), so a name derived from an older event
    carries that event's version and never overwrites a newer one.
    """
    ordered = sorted(deliveries, key=lambda d: (d.command.occurred_at, d.seq))
    changes: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    versions: dict[str, str] = {}
    stale: list[str] = []
    for delivery in ordered:
        command = delivery.command
        when = version_stamp(command.occurred_at)
        for name, value in complete_names(command.changes).items():
            if name in applied and applied[name] > when:
                stale.append(name)
                continue
            changes[name] = value
            versions[name] = when
        metadata.update(command.metadata)
    last = ordered[-1].command
    # The most specific identity any of the commands carried (an id beats an email).
    lead = next((d.command.lead for d in reversed(ordered) if d.command.lead.id), last.lead)
    update = ProviderUpdate(
        lead=lead,
        changes=changes,
        metadata=metadata,
        post_updated_lead=any(d.command.post_updated_lead for d in ordered),
        command_ids=tuple(d.command.command_id for d in deliveries),
    )
    return Coalesced(update=update, field_versions=versions, stale_fields=stale)


@dataclass
class Decision:
    """The next state of every delivery in a group."""

    status: DeliveryStatus  # delivered | pending | polling | dead_lettered
    error: str | None = None
    stage: str | None = None
    response: Any = None
    next_attempt_at: float | None = None
    count_attempt: bool = True
    count_poll: bool = False  # an async status poll (bounded by `poll_max_attempts`)
    request_id: str | None = None
    field_versions: dict[str, str] = field(default_factory=dict)


class DeliveryCore:
    def __init__(
        self,
        config: Config,
        handlers: dict[str, ProviderHandler] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.settings = config["dispatcher"]
        self.handlers = handlers if handlers is not None else build_handlers(config.providers)
        self.limiter = limiter or InProcessRateLimiter()
        self.alerts = Alerts(config["alerts"])
        # Breakers per provider; the driver attaches the store that shares them (`gate.attach`).
        self.gate = ProviderGate(
            BreakerSettings.from_config(self.settings["breaker"]),
            {name: settings_fingerprint(p) for name, p in config.providers.items()},
            self.alerts,
        )
        # Whether the driver stores a poll count apart from attempts (`Delivery.polls`,
        # `Decision.count_poll`; the embedded ledger does). If not, polls count as attempts.
        self.counts_polls = False

    def rate_limit(self, handler: ProviderHandler) -> tuple[int, float] | None:
        configured = handler.settings.get("rate_limit")
        if configured:
            return int(configured["calls"]), float(configured["per_seconds"])
        return handler.default_rate_limit

    def deliver(self, group: DeliveryGroup, applied: Mapping[str, str], now: float | None = None) -> Decision:
        now = now or time.time()
        handler = self.handlers.get(group.provider)
        problem = (
            f"provider {group.provider!r} is not configured or disabled"
            if handler is None
            else handler.configuration_problem()
        )
        if problem:
            # Nothing is dropped for a misconfigured provider: it waits, visibly, and is replayable.
            return Decision(
                DeliveryStatus.PENDING,
                error=problem,
                stage="config",
                next_attempt_at=now + NOT_CONFIGURED_RECHECK_SECONDS,
                count_attempt=False,
            )
        assert handler is not None
        admission = self.gate.admit(group.provider)
        if not admission.go:
            # Breaker open or paused: wait without spending an attempt (or horizon).
            return Decision(
                DeliveryStatus.PENDING,
                error=admission.reason,
                stage="breaker",
                next_attempt_at=admission.retry_at,
                count_attempt=False,
            )
        try:
            decision, result = self._call(group, handler, applied, now)
        except BaseException:
            if admission.probe:
                self.gate.release(group.provider)
            raise
        if result is not None:
            self.gate.observe(group.provider, result, admission.probe)
        elif admission.probe:
            self.gate.release(group.provider)  # no call was made: another delivery probes
        return decision

    def _call(
        self, group: DeliveryGroup, handler: ProviderHandler, applied: Mapping[str, str], now: float
    ) -> tuple[Decision, DeliveryResult | None]:
        """Coalesce, take a rate-limit slot, make the one call. -> (the decision, the call's
        result; None when no call was made)."""
        if not self.settings["coalesce"] and len(group.deliveries) > 1:
            raise ValueError("coalescing is off: claim and deliver groups of one command")
        # With coalescing off a group is one command: the same path, minus the merging.
        merged = coalesce(group.deliveries, applied)
        if not merged.update.changes and merged.stale_fields:
            stale = ", ".join(merged.stale_fields)
            return Decision(DeliveryStatus.DELIVERED, error=f"superseded: {stale} already newer"), None
        limit = self.rate_limit(handler)
        if limit:
            wait = self.limiter.acquire(handler.account, *limit)
            if wait > 0:
                metrics.RATE_LIMIT_WAITS.labels(provider=group.provider).inc()
                return Decision(
                    DeliveryStatus.PENDING, next_attempt_at=now + wait, count_attempt=False, error=None
                ), None
        started = time.monotonic()
        try:
            step = handler.prepare(merged.update)
            result = handler.deliver(merged.update) if step is None else step
        finally:
            if limit:
                self.limiter.settle(handler.account)  # re-stamp the slot with the call's end
        if step is not None:
            # A lookup used this slot. Done: the update goes next, with a slot of its own.
            metrics.PROVIDER_CALLS.labels(
                provider=group.provider, outcome=f"lookup_{step.outcome.value}"
            ).inc()
            made_call = step.stage != "mapping"
            if step.outcome is Outcome.DELIVERED:
                return Decision(DeliveryStatus.PENDING, next_attempt_at=now, count_attempt=False), step
            return self.decide(
                group, step, merged.field_versions, handler, limit, now
            ), step if made_call else None
        metrics.PROVIDER_CALL_SECONDS.labels(provider=group.provider).observe(time.monotonic() - started)
        metrics.PROVIDER_CALLS.labels(provider=group.provider, outcome=result.outcome.value).inc()
        if len(group.deliveries) > 1 and result.ok:
            metrics.COALESCED.labels(provider=group.provider).inc(len(group.deliveries) - 1)
        # A result without a status code is either a failed attempt (transient) or no call at all.
        made_call = result.status_code is not None or result.outcome in (
            Outcome.TRANSIENT,
            Outcome.RATE_LIMITED,
        )
        return self.decide(
            group, result, merged.field_versions, handler, limit, now
        ), result if made_call else None

    def decide(
        self,
        group: DeliveryGroup,
        result: DeliveryResult,
        field_versions: dict[str, str],
        handler: ProviderHandler,
        limit: tuple[int, float] | None,
        now: float | None = None,
    ) -> Decision:
        now = now or time.time()
        attempts = max(d.attempts for d in group.deliveries) + 1
        response = {"status_code": result.status_code, "body": result.response, **result.details}
        if result.outcome is Outcome.DELIVERED:
            return Decision(
                DeliveryStatus.DELIVERED,
                response=response,
                field_versions=field_versions,
                error=result.reason or None,
            )
        if result.outcome is Outcome.ACCEPTED:
            # No field versions yet: only what the provider applied counts for stale
            # protection, and that is known when a poll reports success.
            return Decision(
                DeliveryStatus.POLLING,
                response=response,
                request_id=result.request_id,
                next_attempt_at=now + float(handler.settings.get("poll_interval_seconds", 2.0)),
            )
        if result.outcome is Outcome.RATE_LIMITED:
            wait = result.retry_after if result.retry_after is not None else (limit[1] if limit else 5.0)
            if limit:
                self.limiter.penalise(handler.account, wait, *limit)
            metrics.RETRIES.labels(provider=group.provider, reason="rate_limited").inc()
            # A 429 reschedules without using up the retry budget.
            return Decision(
                DeliveryStatus.PENDING,
                error=result.reason,
                stage="provider",
                response=response,
                next_attempt_at=now + wait,
                count_attempt=False,
            )
        if result.outcome is Outcome.TRANSIENT:
            first = min((d.first_attempt_at or now) for d in group.deliveries)
            excluded = self.gate.open_seconds_since(group.provider, first)
            retry_at = next_retry_at(attempts, first, now, self.settings, result.retry_after, excluded)
            if retry_at is None:
                return Decision(
                    DeliveryStatus.DEAD_LETTERED,
                    error=f"{give_up_reason(attempts, first, now, self.settings)}: {result.reason}",
                    stage=result.stage,
                    response=response,
                )
            metrics.RETRIES.labels(provider=group.provider, reason="transient").inc()
            return Decision(
                DeliveryStatus.PENDING,
                error=result.reason,
                stage=result.stage,
                response=response,
                next_attempt_at=retry_at,
            )
        return Decision(
            DeliveryStatus.DEAD_LETTERED, error=result.reason, stage=result.stage, response=response
        )

    def confirm(self, group: DeliveryGroup, applied: Mapping[str, str]) -> Decision | None:
        """A dead dispatcher left `group` in flight: did its call land? The read-back (and the
        lead look-up it needs) takes rate-limit slots and passes the breaker like every call.
        -> `delivered` (the provider has it), `pending` (it does not, or it cannot tell: send
        again, at-least-once), or None: the read-back could not run now (no slot, a 429, the
        provider failing or its breaker open): ask again later, never resend on that."""
        handler = self.handlers.get(group.provider)
        merged = coalesce(group.deliveries, applied)
        if handler is None:
            answer = ReadBack.UNKNOWN
        else:
            answer = read_back(
                group.provider, handler, merged.update, self.limiter, self.rate_limit(handler), self.gate
            )
        if answer is ReadBack.LATER:
            return None
        if answer is ReadBack.APPLIED:
            return Decision(
                DeliveryStatus.DELIVERED,
                error="confirmed applied after a crash",
                field_versions=merged.field_versions,
            )
        why = (
            "the provider does not have it"
            if answer is ReadBack.NOT_APPLIED
            else "the provider cannot confirm"
        )
        return Decision(DeliveryStatus.PENDING, error=f"resent after a crash: {why}", count_attempt=False)

    def poll(self, group: DeliveryGroup, now: float | None = None) -> Decision:
        """Ask an async provider how an accepted request ended."""
        now = now or time.time()
        handler = self.handlers.get(group.provider)
        request_id = group.deliveries[0].request_id
        if handler is None or not request_id:
            return Decision(
                DeliveryStatus.PENDING,
                error="cannot poll: provider gone or no request id; resending",
                stage="config",
            )
        result = handler.poll(request_id)
        if self.counts_polls:  # polls apart from delivery attempts: the update was one attempt
            polls = max(d.polls for d in group.deliveries) + 1
            ended = still = {"count_attempt": False, "count_poll": True}
        else:
            polls = max(d.attempts for d in group.deliveries) + 1
            ended, still = {"count_attempt": False}, {"count_attempt": True}
        response = {"status_code": result.status_code, "body": result.response, "request_id": request_id}
        if result.outcome is Outcome.DELIVERED:
            # The provider applied the update: record its field versions now (the same
            # coalescing rule as the call; the store only ever moves a version forward).
            versions = coalesce(group.deliveries, {}).field_versions
            return Decision(DeliveryStatus.DELIVERED, response=response, field_versions=versions, **ended)
        if result.outcome is Outcome.PERMANENT:
            return Decision(
                DeliveryStatus.DEAD_LETTERED,
                error=result.reason,
                stage=result.stage,
                response=response,
                **ended,
            )
        if result.outcome is Outcome.RATE_LIMITED:
            wait = result.retry_after if result.retry_after is not None else 5.0
            return Decision(
                DeliveryStatus.POLLING,
                error=result.reason,
                response=response,
                next_attempt_at=now + wait,
                count_attempt=False,
            )
        if polls >= int(self.settings["poll_max_attempts"]):
            return Decision(
                DeliveryStatus.DEAD_LETTERED,
                error=f"still not finished after {polls} status polls: {result.reason}",
                stage="provider",
                response=response,
                **still,
            )
        base = float(handler.settings.get("poll_interval_seconds", 2.0))
        delay = backoff_seconds(polls, base, float(handler.settings.get("poll_max_interval_seconds", 60.0)))
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        return Decision(
            DeliveryStatus.POLLING,
            error=result.reason or None,
            response=response,
            next_attempt_at=now + delay,
            **still,
        )

    def refresh_provider_metrics(self) -> dict[str, dict[str, float]]:
        """Ask every provider that reports on itself (LeadSquared Async's queue) and export
        the answers as gauges. A provider that cannot answer keeps its last values."""
        found: dict[str, dict[str, float]] = {}
        for name, handler in self.handlers.items():
            if handler.configuration_problem():
                continue
            try:
                values = handler.provider_metrics()
            except Exception as exc:  # metrics are advisory: never let them stop delivery
                log.warning("provider metrics unavailable", extra={"provider": name, "reason": str(exc)})
                continue
            if values is None:
                continue
            for metric, value in values.items():
                metrics.ASYNC_METRICS.labels(provider=name, metric=metric).set(value)
            found[name] = values
        return found


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
        # Woken by the web workers after each enqueue, and by a delivery finishing (a free slot).
        self.waiter = Waiter(wakeup_address(config["storage"]["path"]))

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
        now = time.time()
        started = 0
        for polling, groups in (
            (True, self.store.polling_deliveries(now, free)),
            (
                False,
                self.store.claim_due_groups(
                    now,
                    int(self.settings["batch_size"]),
                    skip=busy,
                    max_groups=free * 2,
                    per_group=None if self.settings["coalesce"] else 1,
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

    def update_gauges(self) -> None:
        stats = self.store.queue_stats()
        metrics.QUEUE_DEPTH.set(stats["depth"])
        metrics.OLDEST_PENDING_AGE.set(stats["oldest_age_seconds"])
        self.core.alerts.backlog(stats["oldest_age_seconds"])

    def run(self) -> None:
        with self.waiter:
            self._loop()
        self.shutdown()

    def _loop(self) -> None:
        log.info(
            "dispatcher started",
            extra={"concurrency": self.concurrency, "woken_on_enqueue": self.waiter.listening},
        )
        unconfirmed = self.recover()
        last_recover = time.monotonic()
        last_gauges = 0.0
        last_provider_metrics = 0.0
        interval = float(self.settings["provider_metrics_interval_seconds"])
        poll_interval = float(self.settings["poll_interval_seconds"])
        woken_tick_at = 0.0
        while not self.stopping.is_set():
            metrics.heartbeat()  # liveness: /healthz on the metrics port fails if this stops
            tick_started = time.monotonic()
            try:
                if unconfirmed and time.monotonic() - last_recover > CONFIRM_RETRY_SECONDS:
                    unconfirmed = self.recover(unconfirmed)  # rate limited before: ask again
                    last_recover = time.monotonic()
                started = self.tick()
                tick_ended = time.monotonic()
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
            if not started and self.waiter.wait(poll_interval):
                # Woken by new work after a tick that found nothing to start. Each tick scans
                # every open delivery and each group it starts costs two commits, even one that
                # only meets a full rate limit; under load, waking on every enqueue would spend
                # the CPU and the write lock on that. So wake-up ticks are 25 ms apart at least,
                # and rest ten times the last tick's cost (a large backlog makes ticks slow).
                # At light load neither delays anything.
                now = time.monotonic()
                rest = max(
                    WAKE_REST_FACTOR * (tick_ended - tick_started) - (now - tick_ended),
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
