"""The LeadSquared limit is kept: never more calls than allowed in any window, never a 429."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from service.pipeline.ratelimit import InProcessRateLimiter
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY, base_config, post_generic, sim_calls, wait_until


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.slow
def test_limiter_never_allows_more_than_n_in_any_window_across_threads() -> None:
    limiter = InProcessRateLimiter()
    granted: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 1.5

    def hammer() -> None:
        while time.monotonic() < deadline:
            if limiter.acquire("acct", 10, 0.5) == 0:
                with lock:
                    granted.append(time.monotonic())
            else:
                time.sleep(0.001)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max_in_any_window(granted, 0.5) <= 10
    assert len(granted) >= 20  # and it did let calls through, about 10 per window


@pytest.mark.slow
def test_dispatcher_keeps_the_provider_limit_with_no_429(make_service, tmp_path) -> None:
    sim = ServedApp(
        create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=(10, 1.0))
    ).start()
    try:
        ids = requests.post(
            f"{sim.url}/_sim/leads", json=[{"EmailAddress": f"l{i}@x.io"} for i in range(35)], timeout=5
        )
        raw = base_config(tmp_path, sim.url)
        raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 10, "per_seconds": 1.0}
        service = make_service(raw)
        for index, lead_id in enumerate(ids.json()["ids"]):
            post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "X"}}, f"r{index}")
        service.drain(seconds=20)
        calls = sim_calls(sim.url, "Lead.Update")
        assert len(calls) == 35 and all(c["status"] == 200 for c in calls)
        assert max_in_any_window([c["at"] for c in calls], 1.0) <= 10
        assert requests.get(f"{sim.url}/_sim/calls", timeout=5).json()["rejected_429"] == 0
    finally:
        sim.stop()


def test_events_arriving_behind_a_used_up_limit_are_not_claimed(make_service, tmp_path) -> None:
    # Claiming a group the limit cannot send costs two writes (claim, put back) that ingest
    # then waits for; so while the limit is used up, ticks claim nothing of that provider.
    sim = ServedApp(create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY)).start()
    try:
        raw = base_config(tmp_path, sim.url)
        raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 2, "per_seconds": 60}
        service = make_service(raw)
        dispatcher = service.dispatcher()

        def waiting_rows() -> list[tuple[str, float, float]]:
            service.runtime.store.drain_inbox()  # accepted commands join the queue tables here
            with service.runtime.store.read() as db:
                rows = db.execute(
                    "SELECT command_id, updated_at, next_attempt_at FROM deliveries"
                    " WHERE status = 'pending' ORDER BY seq"
                ).fetchall()
            return [(row["command_id"], row["updated_at"], row["next_attempt_at"]) for row in rows]

        try:
            for index in range(2):
                post_generic(
                    service.url, {"lead": {"id": f"L{index}"}, "changes": {"city": "X"}}, f"a{index}"
                )
            wait_until(lambda: dispatcher.tick() >= 0 and len(sim_calls(sim.url, "Lead.Update")) == 2)
            wait_until(lambda: not dispatcher._busy)
            assert service.core.readiness().slots == {}
            for index in range(4):
                post_generic(
                    service.url, {"lead": {"id": f"M{index}"}, "changes": {"city": "Y"}}, f"b{index}"
                )
            before = waiting_rows()
            assert len(before) == 4
            dispatcher._last_recheck = time.monotonic()  # the periodic look at every provider: not now
            assert sum(dispatcher.tick() for _ in range(20)) == 0
            assert waiting_rows() == before  # nothing claimed, nothing written
        finally:
            dispatcher.pool.shutdown(wait=True)
        assert len(sim_calls(sim.url, "Lead.Update")) == 2
    finally:
        sim.stop()
