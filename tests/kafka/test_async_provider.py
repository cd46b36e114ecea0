"""An async provider (LeadSquared Async API) in distributed mode: the accepted request is
scheduled on the retry topic as a status poll, and the poll's answer ends the delivery."""

from __future__ import annotations

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from tests.kafka.conftest import command, headers_of, produce_commands, read_topic
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY, admin_get, wait_until

ASYNC_KEY = "lsq-async-api-key-kafka-1"


def test_async_accept_then_poll_through_the_retry_topic(broker, kafka_config, make_service, spawn) -> None:
    app = create_leadsquared_simulator(
        LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=(None, 5.0), async_api_key=ASYNC_KEY
    )
    sim = ServedApp(app).start()
    try:
        store = app.extensions["sim_store"]
        for n in range(3):
            store.add({"ProspectID": f"lead-{n}"})
        raw = kafka_config(sim.url)
        raw["providers"] = {
            "leadsquared": {
                "type": "leadsquared_async", "base_url": sim.url, "access_key": LSQ_ACCESS_KEY,
                "secret_key": LSQ_SECRET_KEY, "api_key": ASYNC_KEY, "timeout_seconds": 5,
                "poll_interval_seconds": 0.2, "poll_max_interval_seconds": 0.5,
            }
        }  # fmt: skip
        service = make_service(raw)
        spawn(["kafka-dispatch"], raw, "dispatcher")
        produce_commands(broker.bootstrap, "leadrelay.commands", [command(n, city=f"C{n}") for n in range(3)])

        def delivered() -> bool:
            events = [admin_get(service.url, f"/v1/events/test:{n}").json() for n in range(3)]
            return all(e.get("status") == "delivered" for e in events)

        wait_until(delivered, timeout=40, interval=0.3, what="async deliveries confirmed by a poll")
        polls = [
            r
            for r in read_topic(broker.bootstrap, "leadrelay.retry", 3)
            if headers_of(r)["leadrelay-kind"] == "poll"
        ]
        assert len(polls) >= 3 and all(headers_of(r).get("leadrelay-request-id") for r in polls)
        updates = [c for c in app.extensions["sim_state"].calls if c["path"].endswith("/lead/update")]
        assert len(updates) == 3  # one update per command; the rest were status polls
        assert {store.leads[f"lead-{n}"]["mx_City"] for n in range(3)} == {"C0", "C1", "C2"}
    finally:
        sim.stop()
