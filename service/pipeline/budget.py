"""Publishing the rate-limit budget used: a dispatcher samples its limiter every few seconds into
the state store (for `/v1/overview` and the console, which cannot see the limiter) and a gauge."""

from __future__ import annotations

import logging
import time

from service import metrics
from service.domain.limits import RateLimitUsage
from service.domain.redact import redact
from service.domain.state import StateStore
from service.pipeline.delivery_core import DeliveryCore
from service.state.rate_limit_samples import SAMPLE_GRID_SECONDS

log = logging.getLogger("leadrelay.dispatcher")

# One sample per grid step of the store: more often would only overwrite the same row.
SAMPLE_INTERVAL_SECONDS = SAMPLE_GRID_SECONDS


class BudgetSampler:
    """Samples `core`'s limiter (every provider with a rate limit) into `store`."""

    def __init__(self, core: DeliveryCore, store: StateStore) -> None:
        self.core = core
        self.store = store
        self._last_sample = float("-inf")  # monotonic

    def sample(self, now: float | None = None) -> list[RateLimitUsage]:
        """Sample now: the gauge and one store row per provider. Never raises (the figures are
        advisory; dispatch goes on without them): a failure is logged and the sample skipped."""
        self._last_sample = time.monotonic()
        try:
            usages = self.core.rate_limit_usage()
            for usage in usages:
                ratio = usage.used / usage.calls if usage.calls else 0.0
                metrics.RATE_LIMIT_USED_RATIO.labels(provider=usage.provider).set(ratio)
            self.store.record_rate_limit_usage(usages, now if now is not None else time.time())
        except Exception as exc:
            log.warning("rate-limit budget sample skipped: %s", redact(f"{type(exc).__name__}: {exc}"))
            return []
        return usages

    def sample_if_due(self) -> None:
        """For a loop that runs more often than the sample interval."""
        if time.monotonic() - self._last_sample >= SAMPLE_INTERVAL_SECONDS:
            self.sample()
