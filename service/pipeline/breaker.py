"""The circuit breaker of one provider account: pure logic on an injectable clock.

closed: every call goes; the outcomes of the last `window_seconds` are kept, and when at
least `min_calls` ended and `failure_ratio` of them failed (5xx, timeout, connection error,
401/403) it opens. open: no call goes; at `next_probe_at` one real pending delivery goes
as a probe (half_open) and the interval doubles from `probe_initial_seconds` up to
`probe_max_seconds`. The probe's success (any answer but a failure) closes the breaker.
Opened by 401/403 (credentials rejected) it sends no probe: it stays open until the
provider's settings change or an operator resumes it. An operator pause holds every call.

Every transition returns the new `ProviderControl`, for the caller to write to the shared
store; `adopt` takes one written by another process or by an operator.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.domain.state import ProviderControl

AUTH_REASON = "credentials rejected"
HELD_RECHECK_SECONDS = 10.0  # paused, or open on credentials: how often a waiting delivery looks again
HALF_OPEN_RECHECK_SECONDS = 1.0  # a probe is out: the others look again soon after it ends
PROBE_STALE_SECONDS = 120.0  # a probe unanswered this long (its process died): probe again


class CallOutcome(StrEnum):
    SUCCESS = "success"  # the provider answered (delivered, accepted, or rejected the data)
    FAILURE = "failure"  # 5xx, timeout, connection error, DNS
    AUTH = "auth"  # 401 / 403: credentials rejected
    NEUTRAL = "neutral"  # a 429: the provider is up but busy; not counted


@dataclass(frozen=True)
class BreakerSettings:
    enabled: bool = True
    window_seconds: float = 30.0
    min_calls: int = 10
    failure_ratio: float = 0.5
    probe_initial_seconds: float = 5.0
    probe_max_seconds: float = 120.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> BreakerSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})


@dataclass(frozen=True)
class Admission:
    go: bool
    probe: bool = False
    retry_at: float | None = None  # when not `go`: look again then
    reason: str | None = None


def paused(control: ProviderControl, now: float) -> ProviderControl:
    """An operator pause: every delivery of the provider waits, visibly; nothing is dropped."""
    return dataclasses.replace(control, paused=True, updated_at=now)


def resumed(control: ProviderControl, now: float) -> ProviderControl:
    """An operator resume: not paused and the breaker closed (also one opened by 401/403)."""
    return dataclasses.replace(
        control,
        paused=False,
        breaker="closed",
        reason=None,
        opened_at=None,
        next_probe_at=None,
        probes=0,
        updated_at=now,
    )


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        settings: BreakerSettings,
        fingerprint: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.fingerprint = fingerprint  # of the provider's settings: a change ends an auth open
        self.clock = clock
        self.control = ProviderControl(provider=provider)
        self._calls: collections.deque[tuple[float, CallOutcome]] = collections.deque()
        # Running counts of the failures and auth failures in `_calls`: observe is called for
        # every provider call, and must not rescan the window each time.
        self._failed = 0
        self._auth = 0
        self._probe_out = False
        self._open_spans: collections.deque[tuple[float, float | None]] = collections.deque(maxlen=1000)

    @property
    def provider(self) -> str:
        return self.control.provider

    def auth_reason(self, detail: str) -> str:
        return f"{AUTH_REASON} (settings {self.fingerprint}): {detail}"

    def opened_on_auth(self) -> bool:
        return self.control.breaker != "closed" and (self.control.reason or "").startswith(AUTH_REASON)

    # ---- decisions -------------------------------------------------------------------

    def admit(self) -> tuple[Admission, ProviderControl | None]:
        """May a call go now? -> (the answer, the new control if this was a transition)."""
        now = self.clock()
        control = self.control
        if control.paused:
            return Admission(False, retry_at=now + HELD_RECHECK_SECONDS, reason="paused by an operator"), None
        if control.breaker == "closed":
            return Admission(True), None
        if self.opened_on_auth():
            return Admission(False, retry_at=now + HELD_RECHECK_SECONDS, reason=control.reason), None
        stale = control.breaker == "half_open" and now - control.updated_at > PROBE_STALE_SECONDS
        due = control.breaker == "open" and now >= (control.next_probe_at or 0.0)
        if (due or stale) and not self._probe_out:
            self._probe_out = True
            return Admission(True, probe=True), self._transition(breaker="half_open")
        if control.breaker == "half_open":
            retry_at = now + HALF_OPEN_RECHECK_SECONDS
        else:
            retry_at = control.next_probe_at or now + HALF_OPEN_RECHECK_SECONDS
        return Admission(False, retry_at=retry_at, reason=f"circuit open: {control.reason}"), None

    def release_probe(self) -> ProviderControl | None:
        """The probe made no call (no rate-limit slot): another may go at once."""
        if not self._probe_out:
            return None
        self._probe_out = False
        return self._transition(breaker="open", next_probe_at=self.clock())

    def observe(self, outcome: CallOutcome, probe: bool, detail: str = "") -> ProviderControl | None:
        """A call ended; -> the new control if the breaker changed state."""
        now = self.clock()
        if probe:
            self._probe_out = False
            if outcome in (CallOutcome.FAILURE, CallOutcome.AUTH):
                probes = self.control.probes + 1
                interval = min(
                    self.settings.probe_max_seconds, self.settings.probe_initial_seconds * 2**probes
                )
                reason = self.auth_reason(detail) if outcome is CallOutcome.AUTH else self.control.reason
                return self._transition(
                    breaker="open", probes=probes, next_probe_at=now + interval, reason=reason
                )
            return self._close(now)
        if outcome is CallOutcome.NEUTRAL or self.control.breaker != "closed":
            return None  # calls that were in flight when it opened do not move it
        self._calls.append((now, outcome))
        self._count(outcome, 1)
        while self._calls and self._calls[0][0] < now - self.settings.window_seconds:
            self._count(self._calls.popleft()[1], -1)
        if not self.settings.enabled or len(self._calls) < self.settings.min_calls:
            return None
        if self._failed < self.settings.failure_ratio * len(self._calls):
            return None
        ratio = f"{self._failed} of {len(self._calls)} calls failed in {self.settings.window_seconds:g} s"
        reason = (
            self.auth_reason(f"{ratio}; last: {detail}")
            if self._auth * 2 >= self._failed
            else f"{ratio}; last: {detail}"
        )
        self._open_spans.append((now, None))
        return self._transition(
            breaker="open", reason=reason, opened_at=now, probes=0,
            next_probe_at=now + self.settings.probe_initial_seconds,
        )  # fmt: skip

    def _count(self, outcome: CallOutcome, step: int) -> None:
        if outcome is not CallOutcome.SUCCESS:
            self._failed += step
            if outcome is CallOutcome.AUTH:
                self._auth += step

    def _forget_calls(self) -> None:
        self._calls.clear()
        self._failed = self._auth = 0

    def _close(self, now: float) -> ProviderControl:
        self._forget_calls()
        self._end_span(now)
        return self._transition(breaker="closed", reason=None, opened_at=None, next_probe_at=None, probes=0)

    def _end_span(self, now: float) -> None:
        if self._open_spans and self._open_spans[-1][1] is None:
            self._open_spans[-1] = (self._open_spans[-1][0], now)

    def _transition(self, **changes: Any) -> ProviderControl:
        self.control = dataclasses.replace(self.control, updated_at=self.clock(), **changes)
        return self.control

    # ---- shared state -------------------------------------------------------------------

    def adopt(self, control: ProviderControl) -> ProviderControl | None:
        """Take a newer control written elsewhere (another dispatcher, an operator). An auth
        open whose settings fingerprint is not ours any more is closed: the keys changed.
        -> the control to write back, if adopting it caused a transition here."""
        if control.updated_at <= self.control.updated_at:
            return None
        now = self.clock()
        was_open = self.control.breaker != "closed"
        self.control = control
        if control.breaker == "closed":
            self._probe_out = False
            self._forget_calls()
            if was_open:
                self._end_span(now)
        elif not was_open:
            self._open_spans.append((control.opened_at or now, None))
        if self.opened_on_auth() and f"(settings {self.fingerprint})" not in (control.reason or ""):
            return self._close(now)
        return None

    def resume(self) -> ProviderControl:
        """An operator resumes (in this process): see `resumed`."""
        self._forget_calls()
        self._end_span(self.clock())
        self.control = resumed(self.control, self.clock())
        return self.control

    def open_seconds_since(self, since: float) -> float:
        """How long the breaker was open after `since` (this process's memory of it): that
        wait spends no retry horizon."""
        now = self.clock()
        total = 0.0
        for start, end in self._open_spans:
            total += max(0.0, min(end if end is not None else now, now) - max(start, since))
        return total
