"""A mapped source bound to a source topic by its name: its records are mapped by the same
configuration as its webhooks (verification is the topic's ACLs) and land on the command topic."""

from __future__ import annotations

import json

from kafka import KafkaProducer

from tests.kafka.conftest import read_topic

MAPPED = {
    "type": "mapped",
    "verify": {"method": "api_key", "header": "X-Api-Key"},  # HTTP only; a topic has its ACLs
    "mapping": {
        "event_id": "submission.id",
        "event_type": {"const": "form.submitted"},
        "lead": {"email": "submission.email"},
        "changes": {"first_name": {"path": "submission.name", "transforms": ["split_name:first"]}},
    },
}


def test_mapped_source_records_become_commands(broker, make_sim, kafka_config, spawn) -> None:
    sim = make_sim()
    raw = kafka_config(sim.url, kafka={"sources": [{"topic": "forms.raw", "format": "webforms"}]})
    raw["sources"]["webforms"] = MAPPED
    spawn(["consume-sources"], raw, "sources")
    record = {"submission": {"id": "s-1", "email": "Kim@Example.com", "name": "Kim Lee"}}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        producer.send("forms.raw", value=json.dumps(record).encode()).get(timeout=30)
    finally:
        producer.close(timeout=10)
    (produced,) = read_topic(broker.bootstrap, "leadrelay.commands", 1, timeout=40)
    command = json.loads(produced.value)
    assert command["command_id"] == "webforms:s-1"
    assert command["lead"]["email"] == "kim@example.com"
    assert command["changes"] == {"first_name": "Kim"}
