"""The provider gate: one circuit breaker per provider, shared by every process through the
store's provider controls (`provider_controls` / `put_provider_control`).

Transitions made here are written at once; controls written elsewhere (another dispatcher,
an operator's pause or resume) are read at most every `refresh_seconds` and adopted. Each
transition is also a metric, a log line and an alert.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from handlers.base import DeliveryResult, Outcome
from service import metrics
from service.domain.state import ProviderControl, StateUnavailable
from service.pipeline.alerts import Alerts
from service.pipeline.breaker import Admission, BreakerSettings, CallOutcome, CircuitBreaker

log = logging.getLogger("leadrelay.breaker")

STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class ControlStore(Protocol):
    def provider_controls(self) -> dict[str, ProviderControl]: ...

    def put_provider_control(self, control: ProviderControl) -> None: ...


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """A short tag of a provider's settings: an auth-opened breaker closes when it changes."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def call_outcome(result: DeliveryResult) -> CallOutcome:
    if result.status_code in (401, 403) or (result.outcome is Outcome.PERMANENT and result.stage == "config"):
        return CallOutcome.AUTH
    if result.outcome is Outcome.TRANSIENT:
        return CallOutcome.FAILURE
    if result.outcome is Outcome.RATE_LIMITED:
        return CallOutcome.NEUTRAL
    return CallOutcome.SUCCESS


class ProviderGate:
    def __init__(
        self,
        settings: BreakerSettings,
        fingerprints: Mapping[str, str],
        alerts: Alerts | None = None,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.fingerprints = dict(fingerprints)
        self.alerts = alerts or Alerts()
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.store: ControlStore | None = None
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.RLock()
        self._refreshed_at = float("-inf")
        self._refresh_lock = threading.Lock()

    def attach(self, store: ControlStore) -> None:
        """Share breaker state and pauses through `store` (the SQL state store: SQLite embedded, PostgreSQL distributed)."""
        self.store = store
        self._refreshed_at = float("-inf")

    def breaker(self, provider: str) -> CircuitBreaker:
        with self._lock:
            found = self._breakers.get(provider)
            if found is None:
                found = CircuitBreaker(
                    provider, self.settings, self.fingerprints.get(provider, ""), self.clock
                )
                self._breakers[provider] = found
            return found

    # ---- the delivery path ---------------------------------------------------------------

    def admit(self, provider: str) -> Admission:
        self.refresh()
        with self._lock:
            breaker = self.breaker(provider)
            before = breaker.control.breaker
            admission, changed = breaker.admit()
        if changed:
            self._publish(changed, before)
        return admission

    def observe(self, provider: str, result: DeliveryResult, probe: bool) -> None:
        outcome = call_outcome(result)
        if probe:
            metrics.BREAKER_PROBES.labels(provider=provider, outcome=outcome.value).inc()
        self._change(provider, lambda b: b.observe(outcome, probe, result.reason))

    def release(self, provider: str) -> None:
        """A probe was admitted but made no call."""
        self._change(provider, lambda b: b.release_probe())

    def _change(
        self, provider: str, step: Callable[[CircuitBreaker], ProviderControl | None]
    ) -> ProviderControl | None:
        with self._lock:
            breaker = self.breaker(provider)
            before = breaker.control.breaker
            changed = step(breaker)
        if changed:
            self._publish(changed, before)
        return changed

    def open_seconds_since(self, provider: str, since: float) -> float:
        with self._lock:
            return self.breaker(provider).open_seconds_since(since)

    # ---- what every process sees -----------------------------------------------------------

    def controls(self) -> dict[str, ProviderControl]:
        self.refresh(force=True)
        with self._lock:
            return {
                name: self.breaker(name).control for name in sorted({*self.fingerprints, *self._breakers})
            }

    # ---- sharing -----------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        if self.store is None:
            return
        # Workers that arrive while a read is under way wait for it: otherwise the first
        # calls after start-up would be admitted on the default state, past an operator's pause.
        with self._refresh_lock:
            now = self.clock()
            if not force and now - self._refreshed_at < self.refresh_seconds:
                return
            self._refreshed_at = now
            try:
                controls = self.store.provider_controls()
            except StateUnavailable as exc:
                log.warning("provider controls unavailable; keeping local breaker state: %s", exc)
                return
        for name, control in controls.items():
            with self._lock:
                breaker = self.breaker(name)
                before = breaker.control.breaker
                write_back = breaker.adopt(control)
                adopted = breaker.control
            self._observe_state(adopted)
            if write_back:
                self._publish(write_back, control.breaker)
            elif before != adopted.breaker:
                log.info("breaker state adopted", extra={"provider": name, "breaker": adopted.breaker})

    def _publish(self, control: ProviderControl, before: str) -> None:
        self._observe_state(control)
        # closed -> open and back are news; open -> half_open -> open (a failed probe) is not.
        if (before == "closed") != (control.breaker == "closed"):
            self.alerts.breaker_changed(control.provider, control.breaker, control.reason)
        if self.store is None:
            return
        try:
            # The operator owns `paused` (written by the web process): keep theirs, not our copy.
            current = self.store.provider_controls().get(control.provider)
            if current is not None and current.paused != control.paused:
                control = dataclasses.replace(control, paused=current.paused)
                with self._lock:
                    self.breaker(control.provider).control = control
            self.store.put_provider_control(control)
        except StateUnavailable as exc:
            log.warning("breaker transition not shared: %s", exc, extra={"provider": control.provider})

    def _observe_state(self, control: ProviderControl) -> None:
        value = 3 if control.paused else STATE_VALUES.get(control.breaker, 0)
        metrics.BREAKER_STATE.labels(provider=control.provider).set(value)
        open_for = (
            self.clock() - control.opened_at if control.opened_at and control.breaker != "closed" else 0.0
        )
        metrics.BREAKER_OPEN_SECONDS.labels(provider=control.provider).set(open_for)
