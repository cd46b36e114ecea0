"""SIGTERM in the middle of a batch: in-flight calls finish and are recorded, what is done
is committed, the waiting rest is left for the next owner, and the process leaves the
group at once (the next replica does not wait out the session timeout)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from tests.kafka.conftest import command, produce_commands, wait_delivered, wait_settled
from tests.support import wait_until


def test_sigterm_mid_batch_commits_done_work_and_leaves_the_group(
    broker, make_sim, kafka_config, spawn, record
) -> None:
    total = 30
    sim = make_sim(leads=total)
    # A slow provider limit makes the batch long; a long session timeout makes a replica
    # that did not leave the group visible (its partitions would stay stuck 20 s).
    raw = kafka_config(
        sim.url, kafka={"consumer": {"session_timeout_ms": 20000, "max_poll_interval_ms": 6000}}
    )
    raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 6, "per_seconds": 1}
    first = spawn(["kafka-dispatch"], raw, "dispatcher-a")
    wait_until(lambda: "partitions assigned" in first.output(), timeout=30, what="first replica assigned")
    produce_commands(broker.bootstrap, "leadrelay.commands", [command(n) for n in range(total)])
    wait_until(lambda: len(sim.successes_by_lead()) >= 8, timeout=30, what="a few delivered")

    stopped_at = time.monotonic()
    assert first.stop() == 0
    assert time.monotonic() - stopped_at < 8, "SIGTERM must not wait for the whole batch"
    done_by_first = len(sim.successes_by_lead())
    assert done_by_first < total
    assert "kafka dispatcher stopped" in first.output()

    # The group's committed offsets (read without joining the group) moved forward.
    reader = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id="leadrelay-dispatcher", enable_auto_commit=False
    )
    try:
        committed = [reader.committed(TopicPartition("leadrelay.commands", p)) or 0 for p in range(4)]
    finally:
        reader.close()
    assert 1 <= sum(committed) <= done_by_first

    restarted_at = time.monotonic()
    spawn(["kafka-dispatch"], raw, "dispatcher-b")
    wait_delivered(sim, total, timeout=30)
    # Well under the 20 s session timeout of the replica that left: it did leave the group.
    assert time.monotonic() - restarted_at < 18
    wait_settled(record, broker.bootstrap)
    assert sim.successes_by_lead() == {f"lead-{n}": 1 for n in range(total)}
