"""Several dispatcher replicas in one consumer group: a shared provider limit, and a
replica killed with SIGKILL in the middle of a run."""

from __future__ import annotations

import json

from tests.kafka.conftest import command, produce_commands, wait_delivered, wait_settled
from tests.support import Process, wait_until


def assigned(proc: Process) -> bool:
    """Whether the process's latest assignment holds at least one command-topic partition."""
    lines = [json.loads(line) for line in proc.output().splitlines() if '"partitions assigned"' in line]
    return bool(lines) and any("leadrelay.commands" in p for p in lines[-1]["partitions"])


def wait_both_assigned(a: Process, b: Process) -> None:
    wait_until(lambda: assigned(a) and assigned(b), timeout=30, interval=0.2, what="both replicas assigned")


def max_calls_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_two_dispatchers_share_the_leadsquared_limit(broker, make_sim, kafka_config, spawn, record) -> None:
    total = 70
    sim = make_sim(rate_limit=(25, 5.0), leads=total)
    raw = kafka_config(sim.url)
    raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 25, "per_seconds": 5}
    first = spawn(["kafka-dispatch"], raw, "dispatcher-a")
    second = spawn(["kafka-dispatch"], raw, "dispatcher-b")
    wait_both_assigned(first, second)

    produce_commands(broker.bootstrap, "leadrelay.commands", [command(n) for n in range(total)])
    counts = wait_delivered(sim, total, timeout=40)
    wait_settled(record, broker.bootstrap)  # nothing open, nothing uncommitted: nothing can come late

    assert sim.successes_by_lead() == {f"lead-{n}": 1 for n in range(total)} == counts
    assert sim.rejected_429 == 0
    times = [c["at"] for c in sim.calls("")]
    assert max_calls_in_any_window(times, 5.0) <= 25
    # The limit was really shared: both replicas delivered.
    for proc in (first, second):
        assert proc.output().count('"message": "delivered"') > 0, proc.output()[-2000:]

    # The dispatchers sampled the shared budget for the overview: every replica's calls, never over.
    def budget() -> list[int]:
        found = record.rate_limit_samples(0).get("leadsquared")
        return [sample["used"] for sample in found["samples"]] if found else []

    wait_until(lambda: max(budget(), default=0) > 0, timeout=15, interval=0.2, what="a budget sample")
    assert max(budget()) <= 25


def test_kill9_one_dispatcher_mid_run_delivers_everything_once(
    broker, make_sim, kafka_config, spawn, record
) -> None:
    total = 2000
    sim = make_sim(leads=total)
    raw = kafka_config(sim.url)
    victim = spawn(["kafka-dispatch"], raw, "dispatcher-a")
    wait_until(lambda: assigned(victim), timeout=30, interval=0.2, what="first replica assigned")
    produce_commands(broker.bootstrap, "leadrelay.commands", [command(n) for n in range(total)])
    # A second replica joins mid-run: the group rebalances while batches are in flight.
    wait_until(lambda: len(sim.successes_by_lead()) >= 100, timeout=60, interval=0.05, what="100 delivered")
    survivor = spawn(["kafka-dispatch"], raw, "dispatcher-b")
    wait_both_assigned(victim, survivor)
    victim.kill9()
    at_kill = len(sim.successes_by_lead())
    assert at_kill < total, "the kill came too late to test anything"

    wait_delivered(sim, total, timeout=90)
    wait_settled(record, broker.bootstrap)
    counts = sim.successes_by_lead()
    twice = {lead: n for lead, n in counts.items() if n != 1}
    assert not twice, f"delivered more than once: {twice}"
    assert len(counts) == total
    assert survivor.output().count('"message": "delivered"') > 0
