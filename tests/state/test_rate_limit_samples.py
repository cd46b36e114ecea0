"""Rate-limit budget samples on both engines: several dispatchers writing one grid step (the
largest count wins), the overview's five minutes of them per provider, retention after an hour."""

from __future__ import annotations

from service.domain.limits import RateLimitUsage
from service.state import SqlStateStore
from service.state.event_log import iso
from service.state.rate_limit_samples import SAMPLE_GRID_SECONDS, SAMPLES_KEPT_SECONDS, sample_moment
from tests.state.conftest import make_command

NOW = 1_790_000_000.0  # on the 5-second grid


def lsq(used: int, calls: int = 25) -> RateLimitUsage:
    return RateLimitUsage("leadsquared", "leadsquared:https://api.example:abc", used, calls, 5.0)


def test_samples_of_one_grid_step_keep_the_largest_count(store: SqlStateStore) -> None:
    assert sample_moment(NOW + 4.9) == NOW and sample_moment(NOW + SAMPLE_GRID_SECONDS) == NOW + 5
    store.record_rate_limit_usage([lsq(7)], NOW + 0.5)  # dispatcher A
    store.record_rate_limit_usage([lsq(9)], NOW + 2.0)  # dispatcher B, same step: larger
    store.record_rate_limit_usage([lsq(8)], NOW + 4.0)  # A again: smaller, kept out
    store.record_rate_limit_usage(
        [lsq(3, calls=30), RateLimitUsage("pollybot", "pollybot", 40, 1000, 3600.0)], NOW + 5.0
    )
    store.record_rate_limit_usage([], NOW + 10.0)  # nothing rate-limited: no row, no error
    assert store.rate_limit_samples(NOW - 60) == {
        "leadsquared": {
            "calls": 30,  # the latest sample's limit (the config changed)
            "per_seconds": 5.0,
            "samples": [{"at": NOW, "used": 9}, {"at": NOW + 5, "used": 3}],
        },
        "pollybot": {"calls": 1000, "per_seconds": 3600.0, "samples": [{"at": NOW + 5, "used": 40}]},
    }
    assert store.rate_limit_samples(NOW + 5)["leadsquared"]["samples"] == [{"at": NOW + 5, "used": 3}]
    assert store.rate_limit_samples(NOW + 6) == {}


def test_overview_shows_each_providers_last_five_minutes(store: SqlStateStore) -> None:
    store.enqueue(make_command(1, providers=("octanist",)))
    store.record_rate_limit_usage([lsq(2)], NOW - 400)  # older than five minutes: not shown
    store.record_rate_limit_usage([lsq(4)], NOW - 290)
    store.record_rate_limit_usage([lsq(25)], NOW - 5)
    overview = store.overview(NOW)
    # A provider with samples but no delivery rows yet is listed; one without samples has none.
    budget = overview["providers"]["leadsquared"]["rate_limit"]
    assert budget == {
        "calls": 25,
        "per_seconds": 5.0,
        "samples": [{"at": iso(NOW - 290), "used": 4}, {"at": iso(NOW - 5), "used": 25}],
    }
    assert overview["providers"]["leadsquared"]["pending"] == 0
    assert overview["providers"]["octanist"]["rate_limit"] is None


def test_retention_drops_samples_older_than_an_hour(store: SqlStateStore) -> None:
    for age in (SAMPLES_KEPT_SECONDS + 600, SAMPLES_KEPT_SECONDS + 5, SAMPLES_KEPT_SECONDS - 5, 0):
        store.record_rate_limit_usage([lsq(1)], NOW - age)
    # batch=1: the samples go one per transaction, as retention's other deletes do.
    assert store.prune(NOW, delivered_days=7, dead_letter_days=30, batch=1) == 2
    kept = store.rate_limit_samples(0)["leadsquared"]["samples"]
    assert [sample["at"] for sample in kept] == [NOW - SAMPLES_KEPT_SECONDS + 5, NOW]
    assert store.prune(NOW, delivered_days=7, dead_letter_days=30) == 0
