"""Real processes: `leadrelay serve` (gunicorn + dispatcher), `leadrelay dispatch` killed with -9,
sandbox mode and `leadrelay demo`."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
import requests

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from tests.support import (
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    Process,
    base_config,
    load,
    post_generic,
    sim_calls,
    wait_http_ok,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fast_sim():
    served = ServedApp(
        create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=(None, 5))
    ).start()
    yield served
    served.stop()


def test_serve_delivers_and_stops_cleanly_on_sigterm(tmp_path, fast_sim) -> None:
    [lead_id] = requests.post(
        f"{fast_sim.url}/_sim/leads", json=[{"EmailAddress": "a@example.com"}], timeout=5
    ).json()["ids"]
    raw = base_config(tmp_path, fast_sim.url)
    raw["server"]["metrics_port"] = 0
    config_path = write_config(tmp_path, raw)
    base = f"http://{raw['server']['bind']}"
    serve = Process(["serve"], config_path, tmp_path / "serve.log")
    try:
        wait_http_ok(f"{base}/healthz")
        assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"
        response = post_generic(base, {"lead": {"id": lead_id}, "changes": {"city": "Lima"}}, "serve-1")
        assert response.status_code == 202
        wait_until(lambda: sim_calls(fast_sim.url, "Lead.Update"), what="the Lead.Update call")
    finally:
        code = serve.stop(signal.SIGTERM, timeout=40)
    assert code == 0, serve.output()[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)
    [call] = sim_calls(fast_sim.url, "Lead.Update")
    assert call["query"]["postUpdatedLead"] == "true"
    assert "leadrelay stopped" in serve.output()


def test_kill_9_with_200_queued_delivers_each_exactly_once(tmp_path, make_service, fast_sim) -> None:
    leads = [{"EmailAddress": f"lead{i}@example.com"} for i in range(200)]
    lead_ids = requests.post(f"{fast_sim.url}/_sim/leads", json=leads, timeout=10).json()["ids"]
    raw = base_config(tmp_path, fast_sim.url, dispatcher={"concurrency": 8})
    raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 100000, "per_seconds": 1}
    raw["server"]["metrics_port"] = 0
    web = make_service(raw)  # the web side in-process; the dispatcher is a real process
    for index, lead_id in enumerate(lead_ids):
        assert (
            post_generic(
                web.url, {"lead": {"id": lead_id}, "changes": {"city": f"C{index}"}}, f"k{index}"
            ).status_code
            == 202
        )
    requests.post(f"{fast_sim.url}/_sim/latency", json={"seconds": 0.03}, timeout=5)
    config_path = write_config(tmp_path, raw)

    first = Process(["dispatch"], config_path, tmp_path / "dispatch1.log")
    wait_until(lambda: len(sim_calls(fast_sim.url, "Lead.Update")) >= 60, timeout=60, what="60 calls")
    first.kill9()
    before_restart = len(sim_calls(fast_sim.url, "Lead.Update"))
    assert before_restart < 200, "the dispatcher finished before it was killed; the test proves nothing"

    second = Process(["dispatch"], config_path, tmp_path / "dispatch2.log")
    try:
        store = web.runtime.store
        wait_until(lambda: store.queue_stats()["depth"] == 0, timeout=90, what="an empty queue")
    finally:
        second.stop()
    per_lead = Counter(
        c["query"]["leadId"] for c in sim_calls(fast_sim.url, "Lead.Update") if c["status"] == 200
    )
    assert set(per_lead) == set(lead_ids)
    assert max(per_lead.values()) == 1, [lead for lead, n in per_lead.items() if n > 1]
    events = store.list_events(limit=1000)
    assert len(events) == 200 and {e["status"] for e in events} == {"delivered"}


def test_a_second_dispatcher_on_the_same_queue_is_refused(tmp_path) -> None:
    raw = base_config(tmp_path)
    raw["server"]["metrics_port"] = 0
    config_path = write_config(tmp_path, raw)
    first = Process(["dispatch"], config_path, tmp_path / "d1.log")
    try:
        wait_until(lambda: "dispatcher started" in first.output(), what="first dispatcher")
        second = Process(["dispatch"], config_path, tmp_path / "d2.log")
        assert second.proc.wait(timeout=30) == 3
        assert "another dispatcher is running" in second.output()
    finally:
        assert first.stop() == 0


def test_sandbox_mode_without_credentials_updates_a_lead_in_a_minute(tmp_path) -> None:
    raw = base_config(tmp_path)
    raw["sandbox"] = "auto"
    raw["server"]["metrics_port"] = 0
    del raw["server"]["admin_token"]
    raw["sources"]["generic"]["secrets"] = []
    for key in ("access_key", "secret_key", "base_url"):
        raw["providers"]["leadsquared"].pop(key)
    load(raw)  # valid as it is: no secrets at all
    config_path = write_config(tmp_path, raw)
    base = f"http://{raw['server']['bind']}"
    serve = Process(["serve"], config_path, tmp_path / "serve.log")
    try:
        wait_http_ok(f"{base}/healthz")
        ready = requests.get(f"{base}/readyz", timeout=5).json()
        assert ready["sandbox"] is True and "SANDBOX" in ready["sandbox_notice"]
        demo = Process(["demo"], config_path, tmp_path / "demo.log")
        assert demo.proc.wait(timeout=60) == 0, demo.output()
        assert '"status": "delivered"' in demo.output()
    finally:
        assert serve.stop() == 0
    assert "SANDBOX MODE" in serve.output()
