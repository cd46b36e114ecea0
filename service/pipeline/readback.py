"""Crash recovery's read-back: did a call left in flight by a dead dispatcher land?

The read-back (and the lead look-up it needs, `prepare`) takes rate-limit slots and passes
the provider's breaker like every call. Anything that stops it from answering now (no
slot, a 429, a failure, an open breaker) means "ask again later", never "send again".
"""

from __future__ import annotations

from enum import StrEnum

from handlers.base import DeliveryResult, Outcome, ProviderHandler, ProviderUpdate, TransientError
from service import metrics
from service.domain.limits import RateLimiter
from service.pipeline.gate import ProviderGate


class ReadBack(StrEnum):
    APPLIED = "applied"  # the provider has it: record delivered, no second call
    NOT_APPLIED = "not_applied"  # it does not: send again
    UNKNOWN = "unknown"  # the provider cannot tell: send again (at-least-once, logged)
    LATER = "later"  # could not ask now: keep the claim, ask again


def read_back(
    provider: str,
    handler: ProviderHandler,
    update: ProviderUpdate,
    limiter: RateLimiter,
    limit: tuple[int, float] | None,
    gate: ProviderGate,
) -> ReadBack:
    if not handler.can_confirm or handler.configuration_problem():
        return ReadBack.UNKNOWN
    admission = gate.admit(provider)
    if not admission.go:
        return ReadBack.LATER
    if limit and limiter.acquire(handler.account, *limit) > 0:
        if admission.probe:
            gate.release(provider)
        return ReadBack.LATER
    found: bool | None = None
    try:
        result = handler.prepare(update)  # a look-up, if one is needed, uses this slot
        if result is None:
            try:
                found = handler.confirm_applied(update)
                result = DeliveryResult(Outcome.DELIVERED, reason="read back", status_code=200)
            except TransientError as exc:
                result = exc.result(stage="provider")
    finally:
        if limit:
            limiter.settle(handler.account)
    gate.observe(provider, result, admission.probe)
    metrics.PROVIDER_CALLS.labels(provider=provider, outcome=f"readback_{result.outcome.value}").inc()
    if result.outcome is Outcome.RATE_LIMITED:
        if limit:
            limiter.penalise(handler.account, result.retry_after or limit[1], *limit)
        return ReadBack.LATER
    if result.outcome is Outcome.TRANSIENT or (
        result.outcome is Outcome.DELIVERED and found is None and result.reason != "read back"
    ):
        return ReadBack.LATER  # the provider failed, or the look-up was this slot's call
    if found:
        return ReadBack.APPLIED
    return ReadBack.NOT_APPLIED if found is False else ReadBack.UNKNOWN
