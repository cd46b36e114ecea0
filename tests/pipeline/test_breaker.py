"""The circuit breaker and the retry schedule as pure logic, on a fake clock."""

from __future__ import annotations

import random

from service.domain.backoff import backoff_seconds
from service.domain.state import ProviderControl
from service.pipeline.breaker import BreakerSettings, CallOutcome, CircuitBreaker
from service.pipeline.schedule import next_retry_at


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def failing(
    breaker: CircuitBreaker, clock: Clock, count: int, outcome: CallOutcome = CallOutcome.FAILURE
) -> list:
    changes = []
    for _ in range(count):
        admission, _ = breaker.admit()
        assert admission.go
        clock.now += 0.1
        changes.append(breaker.observe(outcome, admission.probe, "HTTP 500"))
    return changes


def test_opens_at_half_of_ten_calls_and_probes_on_a_doubling_interval() -> None:
    clock = Clock()
    breaker = CircuitBreaker("lsq", BreakerSettings(), "fp1", clock)
    for _ in range(5):
        breaker.admit()
        breaker.observe(CallOutcome.SUCCESS, False)
    changes = failing(breaker, clock, 4)
    assert all(c is None for c in changes)  # 4 of 9: below both bounds
    (change,) = failing(breaker, clock, 1)
    assert change is not None and change.breaker == "open"  # 5 of 10 failed
    admission, _ = breaker.admit()
    assert not admission.go and admission.retry_at == change.next_probe_at == clock.now + 5.0

    probes_at = []
    for _ in range(7):  # the provider stays down: one probe per interval, 5 s doubling to 120 s
        clock.now = breaker.control.next_probe_at
        admission, half = breaker.admit()
        assert admission.go and admission.probe and half is not None and half.breaker == "half_open"
        other, _ = breaker.admit()
        assert not other.go  # one probe at a time
        probes_at.append(clock.now)
        breaker.observe(CallOutcome.FAILURE, True, "HTTP 500")
    gaps = [round(b - a) for a, b in zip(probes_at, probes_at[1:], strict=False)]
    assert gaps == [10, 20, 40, 80, 120, 120]

    clock.now = breaker.control.next_probe_at
    admission, _ = breaker.admit()
    closed = breaker.observe(CallOutcome.SUCCESS, admission.probe)
    assert closed is not None and closed.breaker == "closed" and closed.probes == 0
    assert breaker.admit()[0].go
    assert breaker.open_seconds_since(0.0) == 5 + 10 + 20 + 40 + 80 + 120 * 3  # spends no retry horizon


def test_a_401_storm_opens_and_stays_open_until_resumed_or_reconfigured() -> None:
    clock = Clock()
    breaker = CircuitBreaker("lsq", BreakerSettings(), "fp1", clock)
    (*_, change) = failing(breaker, clock, 10, CallOutcome.AUTH)
    assert (
        change is not None and change.breaker == "open" and change.reason.startswith("credentials rejected")
    )
    clock.now += 3600
    admission, _ = breaker.admit()
    assert not admission.go and not admission.probe  # no probe: the keys will not fix themselves
    resumed = breaker.resume()
    assert resumed.breaker == "closed" and breaker.admit()[0].go

    failing(breaker, clock, 10, CallOutcome.AUTH)
    assert breaker.control.breaker == "open"
    other = CircuitBreaker("lsq", BreakerSettings(), "fp2", clock)  # a process with new keys
    clock.now += 1
    write_back = other.adopt(breaker.control)
    assert write_back is not None and write_back.breaker == "closed"


def test_429s_do_not_count_and_calls_in_flight_at_opening_do_not_move_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("lsq", BreakerSettings(min_calls=4), "fp", clock)
    for _ in range(10):
        breaker.observe(CallOutcome.NEUTRAL, False)
    assert breaker.control.breaker == "closed"
    failing(breaker, clock, 4)
    assert breaker.control.breaker == "open"
    assert breaker.observe(CallOutcome.SUCCESS, False) is None  # a late answer: not a probe
    assert breaker.control.breaker == "open"


def test_pause_holds_and_adopting_a_newer_control_follows_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("lsq", BreakerSettings(), "fp", clock)
    clock.now += 1
    breaker.adopt(ProviderControl("lsq", paused=True, updated_at=clock.now))
    admission, _ = breaker.admit()
    assert not admission.go and admission.reason == "paused by an operator"
    clock.now += 1
    breaker.adopt(ProviderControl("lsq", paused=False, updated_at=clock.now))
    assert breaker.admit()[0].go


def test_retry_schedule_runs_to_the_horizon_with_capped_delays() -> None:
    settings = {
        "retry_horizon_seconds": 86400,
        "max_attempts": 0,
        "backoff_base_seconds": 1,
        "max_backoff_seconds": 900,
    }
    random.seed(1)
    first = now = 0.0
    attempts = 0
    delays = []
    while True:
        attempts += 1
        retry_at = next_retry_at(attempts, first, now, settings)
        if retry_at is None:
            break
        delays.append(retry_at - now)
        now = retry_at
    assert 86400 <= now < 86400 + 900
    assert max(delays) <= 900 and delays[0] <= 1.0
    assert 90 < attempts < 200  # about 1 s doubling to 15 min, for a day
    # Time the breaker held the delivery is not spent: the same clock, an hour excluded.
    assert next_retry_at(5, 0.0, 86000.0, settings, excluded_seconds=3600) is not None
    assert next_retry_at(5, 0.0, 86400.0, settings) is None
    assert next_retry_at(3, 0.0, 1.0, {**settings, "max_attempts": 3}) is None
    assert all(
        0.5 * min(900, 2 ** (n - 1)) <= backoff_seconds(n, 1, 900) <= min(900, 2 ** (n - 1))
        for n in range(1, 20)
    )
