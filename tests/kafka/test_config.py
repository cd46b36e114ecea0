"""The `kafka:` config section is strict and comes from the file and the environment."""

from __future__ import annotations

import pytest

from consumers.client import connection_settings, make_producer
from service.config import ConfigError, load_config
from tests.support import base_config, write_config


def test_kafka_section_defaults_env_overrides_and_security_passthrough(tmp_path) -> None:
    raw = base_config(
        tmp_path,
        mode="distributed",
        redis={"url": "redis://127.0.0.1:1/0"},
        database={"url": "postgresql://leadrelay@db.example:5432/leadrelay"},
        kafka={"security": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                            "sasl_plain_username": "leadrelay"}},
    )  # fmt: skip
    path = write_config(tmp_path, raw)
    env = {
        "LEADRELAY__KAFKA__BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
        "LEADRELAY__KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "s3cret-pass",
        "LEADRELAY__KAFKA__TOPICS__DLQ": "acme.dead",
        "LEADRELAY__KAFKA__PARTITIONS": "12",
    }
    config = load_config(path, environ=env)
    kafka = config["kafka"]
    assert kafka["bootstrap_servers"] == ["k1:9092", "k2:9093"]
    assert kafka["topics"] == {
        "commands": "leadrelay.commands",
        "dlq": "acme.dead",
        "retry": "leadrelay.retry",
    }
    assert kafka["partitions"] == 12 and kafka["groups"]["dispatcher"] == "leadrelay-dispatcher"
    settings = connection_settings(config)
    assert settings["security_protocol"] == "SASL_SSL" and settings["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings["sasl_plain_password"] == "s3cret-pass" and "ssl_cafile" not in settings
    from service.domain.redact import redact

    assert "s3cret-pass" not in redact("connecting with s3cret-pass")


def test_kafka_section_rejects_unknown_keys_and_formats(tmp_path) -> None:
    raw = base_config(tmp_path, kafka={"bootstrap_server": "typo:9092"})
    with pytest.raises(ConfigError, match="kafka.bootstrap_server"):
        load_config(write_config(tmp_path, raw), environ={})
    raw = base_config(tmp_path, kafka={"sources": [{"topic": "t", "format": "nope"}]})
    with pytest.raises(ConfigError, match="kafka.sources.0.format"):
        load_config(write_config(tmp_path, raw), environ={})
    raw = base_config(tmp_path, mode="distributed")
    with pytest.raises(ConfigError, match="redis.url"):
        load_config(write_config(tmp_path, raw), environ={})


def test_producer_waits_are_bounded_by_config(tmp_path, broker) -> None:
    raw = base_config(
        tmp_path,
        kafka={
            "bootstrap_servers": [broker.bootstrap],
            "producer": {"request_timeout_ms": 1500, "max_block_ms": 1200},
        },
    )
    producer = make_producer(load_config(write_config(tmp_path, raw), environ={}))
    try:
        assert producer.config["acks"] == -1  # "all"
        assert producer.config["request_timeout_ms"] == 1500 and producer.config["max_block_ms"] == 1200
        assert producer.config["enable_idempotence"] is True
    finally:
        producer.close(timeout=5)
