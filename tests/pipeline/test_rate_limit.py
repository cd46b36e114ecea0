"""The LeadSquared limit is kept: never more calls than allowed in any window, never a 429."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from service.pipeline.ratelimit import InProcessRateLimiter
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY, base_config, post_generic, sim_calls


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
