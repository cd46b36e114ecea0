"""Source topics: records in a sender's format become provider calls; invalid ones are
dead-lettered with the reason and their bytes intact, and do not block what follows."""

from __future__ import annotations

import json

from kafka import KafkaProducer

from tests.kafka.conftest import headers_of, read_topic, wait_delivered


def test_source_record_becomes_a_call_and_invalid_one_is_dead_lettered(
    broker, make_sim, kafka_config, spawn
) -> None:
    sim = make_sim(leads=2)
    raw = kafka_config(
        sim.url, kafka={"sources": [{"topic": "crm.form-fills", "format": "generic", "group_id": "forms"}]}
    )
    spawn(["kafka-dispatch"], raw, "dispatcher")
    spawn(["consume-sources"], raw, "sources")

    valid = [
        {"event_id": f"evt-{n}", "event_type": "form.submitted", "lead": {"id": f"lead-{n}"},
         "changes": {"first_name": f"F{n}", "city": "Leeds"}}
        for n in range(2)
    ]  # fmt: skip
    invalid = b'{"event_id": "evt-bad", "lead": {"email": "not-an-email"}, "changes": {"shoe_size": 9}}'
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        # One partition key for all three: the invalid record sits between the valid ones.
        for body in (json.dumps(valid[0]).encode(), invalid, json.dumps(valid[1]).encode()):
            producer.send("crm.form-fills", key=b"same", value=body, headers=[("origin", b"test")]).get(
                timeout=30
            )
        # The same event again (a redelivered record): deduplicated by its event id.
        producer.send("crm.form-fills", key=b"same", value=json.dumps(valid[0]).encode()).get(timeout=30)
    finally:
        producer.close(timeout=10)

    counts = wait_delivered(sim, 2, timeout=40)
    assert counts == {"lead-0": 1, "lead-1": 1}
    update = next(c for c in sim.calls() if c["query"]["leadId"] == "lead-1")
    assert {"Attribute": "FirstName", "Value": "F1"} in update["json"]

    dead = read_topic(broker.bootstrap, "leadrelay.dlq", 1)
    assert len(dead) == 1
    assert dead[0].value == invalid  # the original bytes, intact
    headers = headers_of(dead[0])
    assert headers["leadrelay-stage"] == "validation"
    assert "VALIDATION_ERROR" in headers["leadrelay-reason"]
    assert "shoe_size" in headers["leadrelay-reason"] and "lead.email" in headers["leadrelay-reason"]
    assert headers["leadrelay-origin"].startswith("crm.form-fills/")
    assert headers["origin"] == "test"  # the sender's headers travel along
    commands = read_topic(broker.bootstrap, "leadrelay.commands", 2)
    assert sorted(json.loads(r.value)["command_id"] for r in commands) == ["generic:evt-0", "generic:evt-1"]
