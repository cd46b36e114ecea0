"""Outages of the broker (frozen with SIGSTOP: the test broker keeps its data in memory)
and of Redis: the webhook answers 503 while either is away, nothing accepted is lost,
nothing is delivered twice once they are back."""

from __future__ import annotations

import time

from tests.kafka.conftest import command, produce_commands, wait_delivered
from tests.support import post_generic, wait_until


def post(service, n: int) -> int:
    answer = post_generic(service.url, {"lead": {"id": f"lead-{n}"}, "changes": {"note": f"n{n}"}}, f"m{n}")
    if answer.status_code == 503:
        assert answer.headers.get("Retry-After"), answer.headers
    return answer.status_code


def post_until_accepted(service, n: int, timeout: float = 30.0) -> None:
    """What a sender does with a 503: retry until the event is taken."""
    wait_until(lambda: post(service, n) in (200, 202), timeout=timeout, interval=0.5, what=f"m{n} accepted")


def test_broker_outage_503_then_everything_delivered_once(
    broker, make_sim, kafka_config, make_service, spawn
) -> None:
    sim = make_sim(leads=60)
    raw = kafka_config(sim.url)
    service = make_service(raw)
    spawn(["kafka-dispatch"], raw, "dispatcher")
    for n in range(10):
        assert post(service, n) == 202
    wait_delivered(sim, 10, timeout=30)

    broker.pause()
    paused_at = time.monotonic()
    refused: list[int] = []
    n = 10
    try:
        while time.monotonic() - paused_at < 10:
            status = post(service, n)
            assert status == 503, f"m{n} answered {status} while the broker was frozen"
            refused.append(n)
            n += 1
        asked = time.monotonic()
        ready = service.app.test_client().get("/readyz")
        assert ready.status_code == 503 and "kafka" in str(ready.json["reasons"])
        assert time.monotonic() - asked < 8  # a probe answers within its own timeouts
        time.sleep(max(0.0, 20 - (time.monotonic() - paused_at)))  # frozen for 20 s in all
    finally:
        broker.resume()
    assert len(refused) >= 2

    # Senders retry what was refused; new events keep coming.
    for m in [*refused, *range(n, n + 10)]:
        post_until_accepted(service, m)
    expected = {f"lead-{m}": 1 for m in range(n + 10)}
    wait_delivered(sim, len(expected), timeout=60)
    time.sleep(1.5)
    assert sim.successes_by_lead() == expected


def test_redis_outage_503_and_no_double_delivery(
    broker, make_sim, kafka_config, make_service, spawn, private_redis
) -> None:
    sim = make_sim(leads=60)
    # A claim written while Redis was frozen lands when it thaws and is never released:
    # it holds the event "in progress" until it expires, so keep that short here.
    raw = kafka_config(sim.url, redis=private_redis.url, dedup={"pending_seconds": 5})
    service = make_service(raw)
    spawn(["kafka-dispatch"], raw, "dispatcher")
    for n in range(10):
        assert post(service, n) == 202
    wait_delivered(sim, 10, timeout=30)

    private_redis.pause()
    try:
        # Commands already on the topic (e.g. accepted just before) wait: without the
        # ledger the dispatcher does not call the provider.
        produce_commands(broker.bootstrap, "leadrelay.commands", [command(n) for n in range(40, 50)])
        refused = []
        for n in range(10, 13):
            assert post(service, n) == 503
            refused.append(n)
        ready = service.app.test_client().get("/readyz")
        assert ready.status_code == 503
        time.sleep(2.0)
        assert set(sim.successes_by_lead()) == {f"lead-{n}" for n in range(10)}
    finally:
        private_redis.resume()

    for n in [*refused, *range(13, 20)]:
        post_until_accepted(service, n)
    expected = {f"lead-{n}": 1 for n in [*range(20), *range(40, 50)]}
    wait_delivered(sim, len(expected), timeout=60)
    time.sleep(1.5)
    assert sim.successes_by_lead() == expected
