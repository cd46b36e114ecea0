"""The delivery core every mode shares: one group of deliveries -> coalesced provider call
(stale protection, breaker, rate limit) -> a `Decision`, the next state of each delivery.

`EmbeddedDispatcher` (`service.pipeline.embedded`) drives it from the SQL queue; the Kafka
dispatcher consumer drives the same core from the command topic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers import build_handlers
from handlers.base import DeliveryResult, Outcome, ProviderHandler
from service import metrics
from service.config import Config
from service.domain.backoff import backoff_seconds
from service.domain.limits import RateLimiter, RateLimitUsage
from service.domain.state import DeliveryGroup
from service.domain.statuses import DeliveryStatus
from service.pipeline.alerts import Alerts
from service.pipeline.breaker import BreakerSettings
from service.pipeline.coalesce import coalesce
from service.pipeline.gate import ProviderGate, settings_fingerprint
from service.pipeline.ratelimit import InProcessRateLimiter
from service.pipeline.readback import ReadBack, read_back
from service.pipeline.schedule import give_up_reason, next_retry_at

log = logging.getLogger("leadrelay.dispatcher")

NOT_CONFIGURED_RECHECK_SECONDS = 30.0


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


@dataclass(frozen=True)
class Readiness:
    """Which providers could take a call now (`slots`: provider -> free rate-limit slots, None
    when it has no limit) and the seconds until the soonest used-up limit frees one."""

    slots: dict[str, int | None]
    next_free_in: float | None = None


class DeliveryCore:
    """Decides each group's next state: deliver (coalesced), poll, or confirm after a crash."""

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

    def readiness(self) -> Readiness:
        """The providers a call could go to now, each with its free rate-limit slots, and when
        the soonest used-up limit frees a slot. Left out: a provider that is not configured,
        disabled or has a configuration problem, and one whose limit is used up (or paused
        after a 429). The embedded dispatcher claims only these, so a backlog it cannot send
        yet costs no claim and no write; it looks at the others on a slow recheck (`deliver`
        then records why they wait)."""
        slots: dict[str, int | None] = {}
        soonest: float | None = None
        for name, handler in self.handlers.items():
            if handler.configuration_problem():
                continue
            limit = self.rate_limit(handler)
            if limit is None:
                slots[name] = None
                continue
            calls, per_seconds = limit
            wait = self.limiter.free_in(handler.account, calls, per_seconds)
            if wait > 0:
                soonest = wait if soonest is None else min(soonest, wait)
                continue
            slots[name] = max(1, calls - self.limiter.usage(handler.account, per_seconds))
        return Readiness(slots, soonest)

    def rate_limit_usage(self) -> list[RateLimitUsage]:
        """The budget used now by every rate-limited provider that can deliver, as its limiter
        counts it (shared through Redis: every dispatcher's calls on the account)."""
        found = []
        for name, handler in sorted(self.handlers.items()):
            limit = self.rate_limit(handler)
            if limit is None or handler.configuration_problem():
                continue
            calls, per_seconds = limit
            used = self.limiter.usage(handler.account, per_seconds)
            found.append(RateLimitUsage(name, handler.account, used, calls, per_seconds))
        return found

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
