"""The DedupStore of both modes (the SQL state store) against a real SQLite file; the same
statements on PostgreSQL are covered by the contract suite in tests/state/."""

from __future__ import annotations

import time

import pytest

from service.domain.state import Claim
from service.state import SqlStateStore, migrate
from service.state.engine import SQLiteEngine
from tests.support import wait_until


@pytest.fixture
def dedup(tmp_path):
    engine = SQLiteEngine(tmp_path / "dedup.db")
    migrate(engine)
    return SqlStateStore(engine)


def test_claim_confirm_then_duplicate(dedup) -> None:
    assert dedup.claim("cmd:a", 60) is Claim.CLAIMED
    assert dedup.claim("cmd:a", 60) is Claim.IN_PROGRESS  # a concurrent retry is told to come back
    dedup.confirm("cmd:a", 3600)
    assert dedup.claim("cmd:a", 60) is Claim.DUPLICATE


def test_released_claim_can_be_taken_again(dedup) -> None:
    assert dedup.claim("cmd:b", 60) is Claim.CLAIMED
    dedup.release("cmd:b")
    assert dedup.claim("cmd:b", 60) is Claim.CLAIMED


def test_release_never_drops_a_confirmed_key(dedup) -> None:
    dedup.claim("cmd:c", 60)
    dedup.confirm("cmd:c", 3600)
    dedup.release("cmd:c")
    assert dedup.claim("cmd:c", 60) is Claim.DUPLICATE


@pytest.mark.slow
def test_pending_claim_of_a_crashed_request_expires(dedup) -> None:
    # Claimed, then the process died before the queue write: the sender's retry must win later.
    assert dedup.claim("cmd:d", 1) is Claim.CLAIMED
    time.sleep(1.2)
    assert dedup.claim("cmd:d", 60) is Claim.CLAIMED


@pytest.mark.slow
def test_window_expires(dedup) -> None:
    dedup.claim("cmd:e", 60)
    dedup.confirm("cmd:e", 1)
    time.sleep(1.2)
    assert dedup.claim("cmd:e", 60) is Claim.CLAIMED


@pytest.mark.slow
def test_values_get_put_replace_and_expire(dedup) -> None:
    assert dedup.get("fpl:generic:email:a@example.com") is None
    dedup.put("fpl:generic:email:a@example.com", "fp1 generic:m1", 3600)
    assert dedup.get("fpl:generic:email:a@example.com") == "fp1 generic:m1"
    dedup.put("fpl:generic:email:a@example.com", "fp2 generic:m2", 1)
    assert dedup.get("fpl:generic:email:a@example.com") == "fp2 generic:m2"
    wait_until(lambda: dedup.get("fpl:generic:email:a@example.com") is None, timeout=5, what="value expiry")
