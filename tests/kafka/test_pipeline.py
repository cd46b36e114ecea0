"""Webhook -> command topic -> dispatcher consumer -> provider, against a real broker,
PostgreSQL (the record) and Redis (the limiter)."""

from __future__ import annotations

import json

import requests

from tests.kafka.conftest import headers_of, read_topic, wait_delivered
from tests.support import admin_get, deep_merge, free_port, post_generic, wait_until


def test_webhook_to_provider_exactly_once(broker, make_sim, kafka_config, make_service, spawn) -> None:
    sim = make_sim(leads=20)
    raw = kafka_config(sim.url)
    service = make_service(raw)
    port = free_port()
    dispatcher = spawn(["kafka-dispatch"], deep_merge(raw, {"server": {"metrics_port": port}}), "dispatcher")

    for n in range(20):
        answer = post_generic(
            service.url, {"lead": {"id": f"lead-{n}"}, "changes": {"note": f"n{n}"}}, f"m{n}"
        )
        assert answer.status_code == 202, answer.text
    again = post_generic(service.url, {"lead": {"id": "lead-3"}, "changes": {"note": "n3"}}, "m3")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    # Every command reaches the command topic, keyed by its lead.
    records = read_topic(broker.bootstrap, "leadrelay.commands", 20)
    assert sorted(r.key.decode() for r in records) == sorted(f"id:lead-{n}" for n in range(20))

    counts = wait_delivered(sim, 20, timeout=30)
    wait_until(
        lambda: admin_get(service.url, "/v1/events/generic:m19").json()["status"] == "delivered",
        timeout=10,
        what="event log says delivered",
    )
    assert counts == {f"lead-{n}": 1 for n in range(20)}
    bodies = {c["query"]["leadId"]: c["json"] for c in sim.calls()}
    assert bodies["lead-7"] == [{"Attribute": "Notes", "Value": "n7"}]
    event = admin_get(service.url, "/v1/events/generic:m3").json()
    assert event["duplicates_received"] == 1
    assert event["deliveries"][0]["status"] == "delivered"
    listed = admin_get(service.url, "/v1/events?status=delivered&limit=1000").json()["events"]
    assert len(listed) == 20

    ready = requests.get(f"{service.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["kafka"] == "ok" and ready.json()["database"] == "ok"
    assert "redis" not in ready.json()  # ingest does not need Redis

    # The dispatcher's own port: its loop turns, broker, database and Redis answer, metrics move.
    worker = f"http://127.0.0.1:{port}"
    assert requests.get(f"{worker}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{worker}/readyz", timeout=10).status_code == 200
    exposition = requests.get(f"{worker}/metrics", timeout=5).text
    assert 'leadrelay_deliveries_total{outcome="delivered",provider="leadsquared"} 20.0' in exposition
    assert 'leadrelay_kafka_consumer_lag{partition="' in exposition

    # Nothing more arrives later (no redelivery after the commits).
    assert dispatcher.stop() == 0
    assert sim.successes_by_lead() == counts
    assert "kafka dispatcher stopped" in dispatcher.output()


def test_permanent_failure_dead_letters_and_replay_delivers(
    broker, make_sim, kafka_config, make_service, spawn, tmp_path
) -> None:
    sim = make_sim(leads=3)
    raw = kafka_config(sim.url)
    service = make_service(raw)
    spawn(["kafka-dispatch"], raw, "dispatcher")
    # lead-0 does not exist yet: LeadSquared rejects the update (a permanent MX error);
    # the leads after it go through.
    requests.post(f"{sim.url}/_sim/reset", timeout=5)
    sim.seed(3, start=1)
    assert (
        post_generic(service.url, {"lead": {"id": "lead-0"}, "changes": {"city": "Pune"}}, "bad").status_code
        == 202
    )
    for n in (1, 2):
        assert (
            post_generic(
                service.url, {"lead": {"id": f"lead-{n}"}, "changes": {"city": "X"}}, f"ok{n}"
            ).status_code
            == 202
        )

    dead = read_topic(broker.bootstrap, "leadrelay.dlq", 1)
    assert len(dead) == 1
    headers = headers_of(dead[0])
    assert "MXInvalidEntityReferenceException" in headers["leadrelay-reason"]
    assert headers["leadrelay-stage"] == "provider"
    assert headers["leadrelay-command-id"] == "generic:bad" and headers["leadrelay-provider"] == "leadsquared"
    assert json.loads(dead[0].value)["command_id"] == "generic:bad"  # original bytes, intact
    wait_delivered(sim, 2, timeout=20)
    wait_until(
        lambda: admin_get(service.url, "/v1/events/generic:bad").json()["status"] == "dead_lettered",
        timeout=10,
        what="dead letter in the event log",
    )

    # `leadrelay events replay` through the admin API re-produces it to the command topic.
    import subprocess
    import sys

    from tests.support import ADMIN_TOKEN, ROOT, write_config

    sim.seed(1)  # the lead exists now
    path = write_config(tmp_path, raw, "cli.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "--config", str(path), "events", "replay", "generic:bad",
         "--url", service.url, "--token", ADMIN_TOKEN],
        capture_output=True, text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["providers"] == ["leadsquared"]
    wait_until(lambda: sim.successes_by_lead().get("lead-0") == 1, timeout=20, what="replayed delivery")
    event = admin_get(service.url, "/v1/events/generic:bad").json()
    assert event["status"] == "delivered" and event["deliveries"][0]["replays"] == 1
    assert sim.successes_by_lead() == {"lead-0": 1, "lead-1": 1, "lead-2": 1}
