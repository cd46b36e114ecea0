"""End-to-end latency at a fixed light rate: webhook sent -> the provider simulator receives the call.

    .venv/bin/python bench/latency.py [--mode embedded|distributed|both] [--rate 3] [--duration 20]

`leadrelay serve` with default settings (2 workers x 4 threads, the default dispatcher
poll interval and LeadSquared's 25-per-5-seconds limit, which 3 events/s stays under)
receives signed generic events addressing leads by id (no lookup call), one new lead per
event, sent on a fixed schedule by one client. The LeadSquared simulator (in this process)
stamps each call as it arrives; latency is that stamp minus the moment the webhook was sent.

- embedded: SQLite queue, the embedded dispatcher.
- distributed: webhook -> command topic (Tansu broker, memory) -> `kafka-dispatch`
  (PostgreSQL as the record: DATABASE_URL or a private server, a scratch database; Redis as
  the limiter: REDIS_URL or a private server) -> provider.

Prints the latency lines first (p50 / p99 / max per mode), then the run's details.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import Server, bind_of, serve_config, start_serve  # noqa: E402
from handlers.leadsquared.simulator import create_leadsquared_simulator  # noqa: E402
from handlers.simulation import ServedApp  # noqa: E402
from tests.support import signed_headers, wait_until  # noqa: E402

LSQ_LIMIT = {"calls": 25, "per_seconds": 5}  # the provider's documented limit, the default


def send_at_rate(
    server: Server, rate: float, count: int, tag: str, first_lead: int, answered_ms: list[float] | None = None
) -> dict[str, float]:
    """Send `count` events on a fixed schedule; return lead id -> when its webhook was sent.
    `answered_ms` collects how long each webhook took to be answered."""
    session = requests.Session()
    sent: dict[str, float] = {}
    start = time.monotonic() + 0.1
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the fixed schedule itself, not a wait for a condition
        lead = f"lead-{first_lead + i}"
        body = json.dumps({"lead": {"id": lead}, "changes": {"city": f"City {i}"}}).encode()
        headers = signed_headers(body, f"{tag}-{i}")
        sent[lead] = time.time()
        response = session.post(f"{server.url}/webhooks/generic", data=body, headers=headers, timeout=10)
        if answered_ms is not None:
            answered_ms.append((time.time() - sent[lead]) * 1000)
        if response.status_code != 202:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")
    return sent


def arrivals(sim: Any, leads: set[str]) -> dict[str, float]:
    """lead id -> when the simulator received the first successful update for it."""
    state = sim.extensions["sim_state"]
    with state.lock:
        calls = [c for c in state.calls if "Lead.Update" in c["path"] and c["status"] == 200]
    found: dict[str, float] = {}
    for call in calls:
        lead = call["query"].get("leadId", "")
        if lead in leads and lead not in found:
            found[lead] = call["at"]
    return found


def measure(server: Server, sim: Any, args: argparse.Namespace, tag: str, first_lead: int) -> dict[str, Any]:
    # Warm-up: one event through the whole path (in distributed mode the consumer group joins).
    warm = send_at_rate(server, args.rate, 1, f"{tag}-warm", first_lead)
    wait_until(lambda: len(arrivals(sim, set(warm))) == 1, timeout=90, interval=0.1, what="warm-up delivery")
    count = max(1, int(args.rate * args.duration))
    answered: list[float] = []
    sent = send_at_rate(server, args.rate, count, tag, first_lead + 1, answered)

    def all_arrived() -> dict[str, float] | None:
        found = arrivals(sim, set(sent))
        return found if len(found) == len(sent) else None

    arrived = wait_until(all_arrived, timeout=60, interval=0.1, what=f"{count} deliveries")
    latencies = sorted((arrived[lead] - sent[lead]) * 1000 for lead in sent)
    return {
        "events": count,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1],
        "answered_p50_ms": statistics.median(answered),
        "answered_max_ms": max(answered),
    }


def run_embedded(
    workdir: Path,
    sim: ServedApp,
    sim_app: Any,
    args: argparse.Namespace,
    tree: Path = ROOT,
    first_lead: int = 0,
) -> dict[str, Any]:
    config = serve_config(workdir, sim.url, 2, 4, providers={"leadsquared": {"rate_limit": LSQ_LIMIT}})
    serve = start_serve(config, bind_of(config), workdir / "serve.log", tree)
    try:
        return measure(serve, sim_app, args, workdir.name, first_lead)
    finally:
        serve.stop()


def run_distributed(workdir: Path, sim: ServedApp, sim_app: Any, args: argparse.Namespace) -> dict[str, Any]:
    from tests.kafka.conftest import TansuBroker
    from tests.support import shared_redis_url
    from tests.support_postgres import ScratchDatabase, postgres_server

    broker = TansuBroker(workdir / "broker.log").start()
    redis_url, private_redis = shared_redis_url()
    pg_server, private_pg = postgres_server()
    database = ScratchDatabase(pg_server)
    try:
        config = serve_config(
            workdir, sim.url, 2, 4,
            mode="distributed",
            database={"url": database.url},
            redis={"url": redis_url, "key_prefix": f"bench-latency:{uuid.uuid4().hex[:8]}:"},
            providers={"leadsquared": {"rate_limit": LSQ_LIMIT}},
            kafka={
                "bootstrap_servers": [broker.bootstrap],
                "consumer": {"max_poll_interval_ms": 10000, "session_timeout_ms": 6000,
                             "heartbeat_interval_ms": 1000},
            },
        )  # fmt: skip
        serve = start_serve(config, bind_of(config), workdir / "serve.log")
        try:
            return measure(serve, sim_app, args, "distributed", 100_000)
        finally:
            serve.stop()
    finally:
        broker.stop()
        if private_redis:
            private_redis.stop()
        database.drop()
        if private_pg:
            private_pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("embedded", "distributed", "both"), default="both")
    parser.add_argument("--rate", type=float, default=3.0, help="events per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of sending per mode")
    parser.add_argument(
        "--before", type=Path, help="another checkout of leadrelay: also measure its embedded mode"
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="leadrelay-bench-latency-"))
    sim_app = create_leadsquared_simulator("bench-ak", "bench-sk", rate_limit=(25, 5))
    sim = ServedApp(sim_app).start()
    leads = [{"ProspectID": f"lead-{n}"} for n in range(1000)]
    leads += [{"ProspectID": f"lead-{n}"} for n in range(100_000, 101_000)]
    leads += [{"ProspectID": f"lead-{n}"} for n in range(200_000, 201_000)]
    requests.post(f"{sim.url}/_sim/leads", json=leads, timeout=30).raise_for_status()
    modes = ("embedded", "distributed") if args.mode == "both" else (args.mode,)
    results: dict[str, dict[str, Any]] = {}
    try:
        for mode in modes:
            workdir = tmp / mode
            workdir.mkdir()
            runner = run_embedded if mode == "embedded" else run_distributed
            results[mode] = runner(workdir, sim, sim_app, args)
        if args.before:
            workdir = tmp / "embedded-before"
            workdir.mkdir()
            results["embedded [before]"] = run_embedded(
                workdir, sim, sim_app, args, args.before.resolve(), 200_000
            )
    finally:
        sim.stop()
    for mode, result in results.items():
        print(
            f"latency {mode}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"max {result['max_ms']:.1f} ms"
        )
    for mode, result in results.items():
        print(
            f"{mode}: {result['events']} events at {args.rate:g}/s, leads by id, webhook sent -> "
            "LeadSquared simulator received the update; of which the webhook's own answer "
            f"(202 after the durable write): p50 {result['answered_p50_ms']:.1f} ms, "
            f"max {result['answered_max_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
