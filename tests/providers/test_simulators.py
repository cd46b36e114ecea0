"""The simulators enforce the documented contracts (so a handler that breaks one fails a test)."""

from __future__ import annotations

import requests

from handlers.octanist.simulator import create_octanist_simulator
from handlers.pollybot.simulator import create_pollybot_simulator
from handlers.simulation import ServedApp
from tests.providers.helpers import LSQ_ASYNC_KEY, OCTANIST_KEY, POLLYBOT_KEY, script_async, seed
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY, wait_until

LSQ_AUTH = {"accessKey": LSQ_ACCESS_KEY, "secretKey": LSQ_SECRET_KEY}
BODY = [{"Attribute": "mx_City", "Value": "London"}]


def test_leadsquared_async_contract(lsq_async_sim) -> None:
    url = f"{lsq_async_sim.url}/lead/update"
    [lead] = seed(lsq_async_sim.url, [{"FirstName": "A"}])
    key = {"x-api-key": LSQ_ASYNC_KEY}
    query = {**LSQ_AUTH, "leadId": lead}
    assert requests.post(url, params=query, json=BODY, timeout=5).status_code == 401  # no x-api-key
    assert (
        requests.post(url, params={**query, "secretKey": "x"}, headers=key, json=BODY, timeout=5).status_code
        == 401
    )
    assert requests.post(url, params=query, headers=key, data="London", timeout=5).status_code == 400
    assert requests.post(url, params=query, headers=key, json={"mx_City": "x"}, timeout=5).status_code == 400
    script_async(lsq_async_sim.url, process_seconds=0.3)
    accepted = requests.post(url, params=query, headers=key, json=BODY, timeout=5).json()
    status_url = f"{lsq_async_sim.url}/lead/update/status"
    assert requests.get(status_url, params={"RequestID": accepted["RequestID"]}, timeout=5).status_code == 401

    def status() -> str:
        answer = requests.get(status_url, params={"RequestID": accepted["RequestID"]}, headers=key, timeout=5)
        return answer.json()["TaskStatus"]["Status"]

    assert status() == "In-Queue"  # moves on over time
    wait_until(lambda: status() == "Success", timeout=5, what="the async task to complete")
    assert requests.get(f"{lsq_async_sim.url}/lead/nope", headers=key, timeout=5).status_code == 404


def test_leadsquared_limit_is_25_per_5_seconds(lsq_async_sim) -> None:
    [lead] = seed(lsq_async_sim.url, [{"FirstName": "A"}])
    answers = [
        requests.post(
            f"{lsq_async_sim.url}/v2/LeadManagement.svc/Lead.Update",
            params={**LSQ_AUTH, "leadId": lead},
            json=BODY,
            timeout=5,
        ).status_code
        for _ in range(26)
    ]
    assert answers == [200] * 25 + [429]


def test_pollybot_contract() -> None:
    served = ServedApp(create_pollybot_simulator(POLLYBOT_KEY, rate_limit=(5, 60))).start()
    try:
        [lead] = seed(served.url, [{"name": "A", "email": "a@example.com"}])
        url = f"{served.url}/api/v1/leads/{lead}"
        auth = {"Authorization": f"Bearer {POLLYBOT_KEY}"}
        missing = requests.put(url, json={"status": "new"}, timeout=5)
        assert missing.status_code == 401 and missing.json()["code"] == "MISSING_AUTH_HEADER"
        wrong = requests.put(url, json={"status": "new"}, headers={"Authorization": "Bearer sk-x"}, timeout=5)
        assert wrong.status_code == 401
        bad = requests.put(url, json={"status": "won"}, headers=auth, timeout=5)
        assert bad.status_code == 400 and bad.json()["details"]["field"] == "status"
        gone = requests.put(
            f"{served.url}/api/v1/leads/lead_x", json={"status": "new"}, headers=auth, timeout=5
        )
        assert gone.status_code == 404
        ok = requests.put(url, json={"status": "lost"}, headers=auth, timeout=5)
        assert ok.status_code == 200 and ok.headers["X-RateLimit-Limit"] == "5"
        assert ok.headers["X-RateLimit-Used"] == "3" and ok.headers["X-RateLimit-Remaining"] == "2"
        requests.put(url, json={}, headers=auth, timeout=5)
        requests.put(url, json={}, headers=auth, timeout=5)
        limited = requests.put(url, json={}, headers=auth, timeout=5)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    finally:
        served.stop()


def test_octanist_contract() -> None:
    served = ServedApp(create_octanist_simulator(OCTANIST_KEY)).start()
    try:
        seed(served.url, [{"id": "lead_1", "email": "a@example.com"}])
        url = f"{served.url}/api/leads"
        key = {"X-API-KEY": OCTANIST_KEY}
        assert requests.patch(url, json={"id": "lead_1", "note": "x"}, timeout=5).status_code == 401
        no_id = requests.patch(url, json={"note": "x"}, headers=key, timeout=5)
        assert no_id.status_code == 400 and no_id.json()["error"]["code"] == "VALIDATION_ERROR"
        assert (
            requests.patch(url, json={"id": "lead_1", "status": "open"}, headers=key, timeout=5).status_code
            == 400
        )
        assert (
            requests.patch(url, json={"id": "lead_1", "stage": "x"}, headers=key, timeout=5).status_code
            == 400
        )
        assert (
            requests.patch(url, json={"id": "lead_9", "note": "x"}, headers=key, timeout=5).status_code == 404
        )
        ok = requests.patch(
            url, json={"id": "lead_1", "value": "5000", "status": "won"}, headers=key, timeout=5
        )
        assert ok.status_code == 200 and ok.json()["data"]["leadsUpdated"] == 1
    finally:
        served.stop()


def test_unknown_paths_and_methods_answer_in_each_providers_shape() -> None:
    from handlers.octanist.simulator import create_octanist_simulator
    from handlers.pollybot.simulator import create_pollybot_simulator

    polly = create_pollybot_simulator(api_key="k").test_client()
    answer = polly.get("/api/v9/nope", headers={"Authorization": "Bearer k"})
    assert answer.status_code == 404 and answer.get_json()["code"] == "NOT_FOUND"
    octanist = create_octanist_simulator(api_key="k").test_client()
    answer = octanist.delete("/api/leads", headers={"X-API-KEY": "k"})
    assert answer.status_code == 405 and answer.get_json()["error"]["code"] == "METHOD_NOT_ALLOWED"
