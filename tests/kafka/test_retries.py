"""Transient failures go through the retry topic: the failing lead is retried with backoff
and its partition keeps moving for every other lead."""

from __future__ import annotations

import json

from tests.kafka.conftest import command, headers_of, produce_commands, read_topic, wait_delivered
from tests.support import wait_until


def test_failing_lead_does_not_stall_its_partition(broker, make_sim, kafka_config, spawn) -> None:
    sim = make_sim(leads=30)
    # One partition: every lead shares it with the failing one.
    raw = kafka_config(sim.url, kafka={"partitions": 1})
    raw["dispatcher"].update(max_attempts=3, backoff_base_seconds=0.3, max_backoff_seconds=1.0)
    # The first 2 calls fail transiently (HTTP 502, not a LeadSquared business error).
    sim.fault("Lead.Update", 502, 2, {"error": "bad gateway"})
    spawn(["kafka-dispatch"], raw, "dispatcher")
    produce_commands(broker.bootstrap, "leadrelay.commands", [command(n) for n in range(30)])

    counts = wait_delivered(sim, 30, timeout=40)
    assert counts == {f"lead-{n}": 1 for n in range(30)}
    retried = read_topic(broker.bootstrap, "leadrelay.retry", 2)
    assert len(retried) == 2
    for record in retried:
        headers = headers_of(record)
        assert headers["leadrelay-attempts"] == "1" and headers["leadrelay-provider"] == "leadsquared"
        assert "HTTP 502" in headers["leadrelay-reason"]
        assert json.loads(record.value)["command_id"].startswith("test:")


def test_transient_failures_exhaust_into_the_dlq(broker, make_sim, kafka_config, spawn) -> None:
    sim = make_sim(leads=2)
    raw = kafka_config(sim.url)
    raw["dispatcher"].update(max_attempts=2, backoff_base_seconds=0.2, max_backoff_seconds=0.5)
    sim.fault("Lead.Update", 503, 2)
    spawn(["kafka-dispatch"], raw, "dispatcher")
    produce_commands(broker.bootstrap, "leadrelay.commands", [command(0)])
    dead = read_topic(broker.bootstrap, "leadrelay.dlq", 1, timeout=30)
    assert len(dead) == 1
    assert "gave up after 2 attempts" in headers_of(dead[0])["leadrelay-reason"]
    produce_commands(broker.bootstrap, "leadrelay.commands", [command(1)])
    wait_until(lambda: sim.successes_by_lead() == {"lead-1": 1}, timeout=20, what="next command delivered")
