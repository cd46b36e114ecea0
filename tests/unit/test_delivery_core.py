"""The delivery core's pure logic: coalescing, the decision after a call, async polling,
and the in-process limiter, with a fake handler and a fake clock (no server, no network)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from handlers.base import DeliveryResult, Outcome, ProviderHandler, ProviderUpdate
from service.domain.command import LeadIdentity, LeadUpdateCommand
from service.domain.state import Delivery, DeliveryGroup
from service.domain.statuses import DeliveryStatus
from service.pipeline.coalesce import coalesce, version_stamp
from service.pipeline.delivery_core import DeliveryCore
from service.pipeline.ratelimit import InProcessRateLimiter
from tests.support import base_config, load

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
NOW = 1_800_000_000.0


def delivery(seq: int, minutes: int, lead: LeadIdentity | None = None, **changes: Any) -> Delivery:
    command = LeadUpdateCommand(
        command_id=f"generic:{seq}",
        source="generic",
        event_type="lead.updated",
        occurred_at=T0 + timedelta(minutes=minutes),
        lead=lead or LeadIdentity(email="jane@example.com"),
        changes=changes,
        metadata={f"m{seq}": seq},
        providers=("leadsquared",),
    )
    return Delivery(command=command, provider="leadsquared", seq=seq, attempts=0)


def group_of(*deliveries: Delivery) -> DeliveryGroup:
    return DeliveryGroup("leadsquared", "jane@example.com", list(deliveries))


# ---- coalesce -----------------------------------------------------------------------


def test_later_events_win_per_field_whatever_the_queue_order() -> None:
    merged = coalesce([delivery(1, 5, city="Paris"), delivery(2, 1, city="London", company="Acme")], {})
    assert dict(merged.update.changes) == {"city": "Paris", "company": "Acme"}
    assert merged.field_versions == {
        "city": version_stamp(T0 + timedelta(minutes=5)),
        "company": version_stamp(T0 + timedelta(minutes=1)),
    }
    assert dict(merged.update.metadata) == {"m1": 1, "m2": 2}
    assert merged.update.command_ids == ("generic:1", "generic:2")


def test_a_field_already_applied_from_a_newer_event_is_not_sent() -> None:
    applied = {"city": version_stamp(T0 + timedelta(minutes=10))}
    merged = coalesce([delivery(1, 5, city="Paris", company="Acme")], applied)
    assert dict(merged.update.changes) == {"company": "Acme"}
    assert merged.stale_fields == ["city"]


def test_the_most_specific_identity_wins() -> None:
    by_id = LeadIdentity(id="P-1", email="jane@example.com")
    merged = coalesce([delivery(1, 1, lead=by_id, city="A"), delivery(2, 2, city="B")], {})
    assert merged.update.lead.id == "P-1"


def test_names_are_completed_per_command_before_merging() -> None:
    merged = coalesce([delivery(1, 1, full_name="Jane Doe")], {})
    assert merged.update.changes["first_name"] == "Jane" and merged.update.changes["last_name"] == "Doe"


# ---- DeliveryCore.deliver / decide / poll with a fake handler ---------------------------


class FakeHandler(ProviderHandler):
    """Answers what the test scripted and records each update it was given."""

    kind: ClassVar[str] = "fake"

    def __init__(self, *answers: DeliveryResult) -> None:
        super().__init__("leadsquared", {"poll_interval_seconds": 2.0, "poll_max_interval_seconds": 60.0})
        self.answers = list(answers)
        self.updates: list[ProviderUpdate] = []
        self.polled: list[str] = []

    def deliver(self, update: ProviderUpdate) -> DeliveryResult:
        self.updates.append(update)
        return self.answers.pop(0)

    def poll(self, request_id: str) -> DeliveryResult:
        self.polled.append(request_id)
        return self.answers.pop(0)


@pytest.fixture
def core_for(tmp_path: Path) -> Iterator[Any]:
    config = load(base_config(tmp_path, dispatcher={"poll_max_attempts": 3}))

    def build(handler: FakeHandler) -> DeliveryCore:
        return DeliveryCore(config, handlers={"leadsquared": handler})

    yield build


def test_a_delivered_call_records_the_field_versions(core_for: Any) -> None:
    handler = FakeHandler(DeliveryResult(Outcome.DELIVERED, status_code=200))
    decision = core_for(handler).deliver(
        group_of(delivery(1, 1, city="A"), delivery(2, 2, city="B")), {}, NOW
    )
    assert decision.status == DeliveryStatus.DELIVERED
    assert decision.field_versions == {"city": version_stamp(T0 + timedelta(minutes=2))}
    assert [dict(u.changes) for u in handler.updates] == [{"city": "B"}]  # one call for two commands


def test_only_stale_fields_make_no_call(core_for: Any) -> None:
    handler = FakeHandler()
    applied = {"city": version_stamp(T0 + timedelta(minutes=9))}
    decision = core_for(handler).deliver(group_of(delivery(1, 1, city="A")), applied, NOW)
    assert decision.status == DeliveryStatus.DELIVERED and decision.error.startswith("superseded: city")
    assert handler.updates == []


def test_a_429_reschedules_after_retry_after_without_spending_an_attempt(core_for: Any) -> None:
    handler = FakeHandler(DeliveryResult(Outcome.RATE_LIMITED, status_code=429, retry_after=7.0))
    decision = core_for(handler).deliver(group_of(delivery(1, 1, city="A")), {}, NOW)
    assert decision.status == DeliveryStatus.PENDING and not decision.count_attempt
    assert decision.next_attempt_at == NOW + 7.0


def test_a_transient_failure_retries_later_and_spends_an_attempt(core_for: Any) -> None:
    handler = FakeHandler(DeliveryResult(Outcome.TRANSIENT, status_code=503, reason="HTTP 503"))
    decision = core_for(handler).deliver(group_of(delivery(1, 1, city="A")), {}, NOW)
    assert decision.status == DeliveryStatus.PENDING and decision.count_attempt
    assert decision.next_attempt_at is not None and decision.next_attempt_at > NOW


def test_a_transient_failure_past_the_attempt_budget_dead_letters(core_for: Any) -> None:
    core = core_for(FakeHandler())
    worn = delivery(1, 1, city="A")
    worn.attempts = 4  # base_config allows 5
    worn.first_attempt_at = NOW - 10
    result = DeliveryResult(Outcome.TRANSIENT, status_code=503, reason="HTTP 503")
    decision = core.decide(group_of(worn), result, {}, core.handlers["leadsquared"], None, NOW)
    assert decision.status == DeliveryStatus.DEAD_LETTERED and "HTTP 503" in decision.error


def test_a_permanent_answer_dead_letters_with_its_stage(core_for: Any) -> None:
    handler = FakeHandler(
        DeliveryResult(Outcome.PERMANENT, status_code=401, reason="bad key", stage="config")
    )
    decision = core_for(handler).deliver(group_of(delivery(1, 1, city="A")), {}, NOW)
    assert (decision.status, decision.stage, decision.error) == (
        DeliveryStatus.DEAD_LETTERED,
        "config",
        "bad key",
    )


def test_an_accepted_update_is_polled_until_it_ends(core_for: Any) -> None:
    handler = FakeHandler(
        DeliveryResult(Outcome.ACCEPTED, status_code=200, request_id="r-1"),
        DeliveryResult(Outcome.PENDING, status_code=200),
        DeliveryResult(Outcome.DELIVERED, status_code=200),
    )
    core = core_for(handler)
    item = delivery(1, 1, city="A")
    accepted = core.deliver(group_of(item), {}, NOW)
    assert accepted.status == DeliveryStatus.POLLING and accepted.request_id == "r-1"
    assert accepted.field_versions == {} and accepted.next_attempt_at == NOW + 2.0
    item.request_id, item.attempts = "r-1", 1
    waiting = core.poll(group_of(item), NOW)
    assert waiting.status == DeliveryStatus.POLLING and waiting.next_attempt_at > NOW
    item.attempts = 2
    done = core.poll(group_of(item), NOW)
    assert done.status == DeliveryStatus.DELIVERED and done.field_versions == {
        "city": version_stamp(T0 + timedelta(minutes=1))
    }
    assert handler.polled == ["r-1", "r-1"]


def test_polling_is_bounded(core_for: Any) -> None:
    core = core_for(FakeHandler(DeliveryResult(Outcome.PENDING, status_code=200)))
    item = delivery(1, 1, city="A")
    item.request_id, item.attempts = "r-1", 2  # poll_max_attempts: 3
    decision = core.poll(group_of(item), NOW)
    assert decision.status == DeliveryStatus.DEAD_LETTERED and "after 3 status polls" in decision.error


def test_polling_without_a_request_id_resends(core_for: Any) -> None:
    decision = core_for(FakeHandler()).poll(group_of(delivery(1, 1, city="A")), NOW)
    assert decision.status == DeliveryStatus.PENDING and decision.stage == "config"


# ---- the in-process limiter on a fake clock -----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_limiter_admits_n_per_window_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock)
    assert [limiter.acquire("lsq", 3, 5.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("lsq", 3, 5.0)
    assert 5.0 <= wait <= 6.0  # the window plus the safety margin
    assert limiter.acquire("other", 3, 5.0) == 0.0  # accounts are independent
    clock.now += wait
    assert limiter.acquire("lsq", 3, 5.0) == 0.0


def test_settle_restamps_a_slot_with_the_call_end() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock)
    assert limiter.acquire("lsq", 1, 5.0) == 0.0
    clock.now += 3.0  # a slow call
    limiter.settle("lsq")
    first_wait = limiter.acquire("lsq", 1, 5.0)
    assert first_wait > 5.0  # counted from the call's end, not its start


def test_a_penalty_pauses_the_account_on_top_of_the_log() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock)
    limiter.penalise("lsq", 10.0, 25, 5.0)
    assert limiter.acquire("lsq", 25, 5.0) == pytest.approx(10.0)
    clock.now += 10.0
    assert limiter.acquire("lsq", 25, 5.0) == 0.0
