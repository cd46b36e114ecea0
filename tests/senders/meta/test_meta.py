from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from tests.senders.conftest import (
    META_VERIFY_TOKEN,
    command_of,
    fixture_bytes,
    fixture_json,
    meta_headers,
    post,
    queued,
    senders_config,
)
from tests.support import sim_calls

BODY = fixture_bytes("meta", "leadgen_notification_docs_example.json")
LEAD_ID = "9007199254740993"  # 2^53 + 1: a float would make it ...992


def graph_service(make_service: Any, tmp_path: Path, graph_sim: Any) -> Any:
    lead = fixture_json("meta", "graph_lead_docs_example.json")
    requests.post(f"{graph_sim.url}/_sim/leads", json=[lead], timeout=5).raise_for_status()
    return make_service(senders_config(tmp_path, {"graph": graph_sim.url}))


def test_handshake_answers_the_challenge_only_with_the_right_token(senders: Any) -> None:
    ok = requests.get(
        f"{senders.url}/webhooks/meta",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": META_VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
        timeout=5,
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "meatyhamhock", "hub.challenge": "1158201444"},
        {"hub.mode": "unsubscribe", "hub.verify_token": META_VERIFY_TOKEN, "hub.challenge": "1158201444"},
        {"hub.challenge": "1158201444"},
    ):
        refused = requests.get(f"{senders.url}/webhooks/meta", params=params, timeout=5)
        assert refused.status_code == 403 and "1158201444" not in refused.text


def test_leadgen_notification_fetches_the_lead_once_and_queues_one_command(
    make_service: Any, tmp_path: Path, graph_sim: Any
) -> None:
    service = graph_service(make_service, tmp_path, graph_sim)
    response = post(service, "/webhooks/meta", BODY, meta_headers(BODY))
    assert response.status_code == 202, response.text
    assert response.json()["command_id"] == f"meta:{LEAD_ID}"
    fetches = sim_calls(graph_sim.url, LEAD_ID)
    assert len(fetches) == 1
    assert fetches[0]["path"] == f"/v21.0/{LEAD_ID}"
    assert fetches[0]["headers"]["authorization"].startswith("Bearer ")
    assert "access_token" not in fetches[0]["query"]  # the token never goes into a URL
    command = command_of(service, f"meta:{LEAD_ID}")
    assert command["event_type"] == "leadgen"
    assert command["occurred_at"].startswith("2019-09-12T16:17:24")
    assert command["lead"] == {"id": None, "email": "joe@example.com", "phone": "+14155550123"}
    assert command["changes"] == {
        "email": "joe@example.com",
        "full_name": "Joe Example",
        "phone": "+14155550123",
    }
    assert command["metadata"]["leadgen_id"] == LEAD_ID
    assert command["metadata"]["page_id"] == "153125381133"
    again = post(service, "/webhooks/meta", BODY, meta_headers(BODY))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert queued(service) == 1


def test_batched_notification_gives_one_command_per_lead(
    make_service: Any, tmp_path: Path, graph_sim: Any
) -> None:
    service = graph_service(make_service, tmp_path, graph_sim)
    second = {**fixture_json("meta", "graph_lead_docs_example.json"), "id": "9007199254740995"}
    second["field_data"] = [{"name": "email", "values": ["ann@example.com"]}]
    requests.post(f"{graph_sim.url}/_sim/leads", json=[second], timeout=5).raise_for_status()
    notification = json.loads(BODY)
    change = notification["entry"][0]["changes"][0]
    notification["entry"].append(
        {"id": "153125381133", "time": 1568305099, "changes": [
            {"field": "leadgen", "value": {**change["value"], "leadgen_id": "9007199254740995"}},
            {"field": "feed", "value": {"item": "post"}},
        ]}
    )  # fmt: skip
    body = json.dumps(notification).replace(
        '"leadgen_id": "9007199254740993"', '"leadgen_id": 9007199254740993'
    )
    body_bytes = body.encode()
    response = post(service, "/webhooks/meta", body_bytes, meta_headers(body_bytes))
    assert response.status_code == 202, response.text
    assert response.json()["command_ids"] == [f"meta:{LEAD_ID}", "meta:9007199254740995"]
    assert command_of(service, "meta:9007199254740995")["lead"]["email"] == "ann@example.com"


def test_signature_problems_are_401(senders: Any) -> None:
    for headers in (
        meta_headers(BODY, secret="wrong"),
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "X-Hub-Signature-256": "sha1=abc"},
    ):
        response = post(senders, "/webhooks/meta", BODY, headers)
        assert response.status_code == 401, response.text
    assert queued(senders) == 0


def test_graph_outage_is_retried_then_503(make_service: Any, tmp_path: Path, graph_sim: Any) -> None:
    service = graph_service(make_service, tmp_path, graph_sim)
    # One transient failure (Graph's throttling code 4) is absorbed by a retry.
    throttled = {
        "error": {"message": "Application request limit reached", "type": "OAuthException", "code": 4}
    }
    requests.post(
        f"{graph_sim.url}/_sim/faults",
        json={"path": LEAD_ID, "status": 400, "count": 1, "body": throttled},
        timeout=5,
    )
    assert post(service, "/webhooks/meta", BODY, meta_headers(BODY)).status_code == 202
    assert len(sim_calls(graph_sim.url, LEAD_ID)) == 2


def test_graph_down_answers_503_and_queues_nothing(make_service: Any, tmp_path: Path, graph_sim: Any) -> None:
    service = graph_service(make_service, tmp_path, graph_sim)
    requests.post(
        f"{graph_sim.url}/_sim/faults", json={"path": LEAD_ID, "status": 500, "count": 10}, timeout=5
    )
    response = post(service, "/webhooks/meta", BODY, meta_headers(BODY))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert queued(service) == 0
    assert len(sim_calls(graph_sim.url, LEAD_ID)) == 3


def test_a_deleted_lead_is_acknowledged_and_ignored(
    make_service: Any, tmp_path: Path, graph_sim: Any
) -> None:
    service = make_service(senders_config(tmp_path, {"graph": graph_sim.url}))  # nothing seeded
    response = post(service, "/webhooks/meta", BODY, meta_headers(BODY))
    assert response.status_code == 200
    assert response.json()["ignored"] == ["leadgen:lead_not_found"]
