"""Distributed pipeline benchmark: command topic -> `leadrelay kafka-dispatch` -> provider.

    .venv/bin/python bench/pipeline.py [-n 5000]

Starts a Tansu broker (memory), uses PostgreSQL (DATABASE_URL or a private server; a scratch
database) and Redis (REDIS_URL or a private server), and a
LeadSquared simulator with no rate limit in a process of its own. Two runs on the same
records:

1. leadrelay: one `kafka-dispatch` process; N commands are produced to the command topic
   once it has joined its group;
2. baseline: a plain kafka-python loop in a process of its own that consumes the same
   records and POSTs each one with a pooled `requests.Session` (no dedup, no ledger, no
   rate limiter, no retries: what a hand-written sink does).

For each: commands/s (first produce to last provider call) and p50/p99 end-to-end latency
(produce -> the simulator receiving the call), then the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kafka.conftest import TansuBroker  # noqa: E402
from tests.support import (  # noqa: E402
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    base_config,
    free_port,
    shared_redis_url,
    wait_http_ok,
    wait_until,
)
from tests.support_postgres import ScratchDatabase, postgres_server  # noqa: E402

UPDATE_PATH = "/v2/LeadManagement.svc/Lead.Update"


# ---- child processes ----------------------------------------------------------------------


def sim_worker(port: int) -> None:
    from werkzeug.serving import make_server

    from handlers.leadsquared.simulator import create_leadsquared_simulator

    app = create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=(None, 5.0))
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


def baseline_worker(bootstrap: str, topic: str, sim_url: str, total: int) -> None:
    """The plain loop: consume, POST each record with a pooled session, commit per batch."""
    from kafka import KafkaConsumer

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4)
    session.mount("http://", adapter)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench-baseline",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=10000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    done = 0
    print("baseline ready", flush=True)
    while done < total:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                command = json.loads(record.value)
                body = [{"Attribute": "Notes", "Value": command["changes"]["note"]}]
                params = {"accessKey": LSQ_ACCESS_KEY, "secretKey": LSQ_SECRET_KEY, "leadId": command["lead"]["id"],
                          "postUpdatedLead": "true"}  # fmt: skip
                session.post(sim_url + UPDATE_PATH, params=params, json=body, timeout=10).raise_for_status()
                done += 1
            consumer.commit()
    consumer.close()


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---- measuring ---------------------------------------------------------------------------


def commands(total: int, run: str) -> list[dict[str, Any]]:
    from service.domain.command import LeadIdentity, LeadUpdateCommand, utcnow

    return [
        LeadUpdateCommand(
            command_id=f"bench:{run}:{n}",
            source="generic",
            event_type="lead.updated",
            occurred_at=utcnow(),
            lead=LeadIdentity(id=f"lead-{n}"),
            changes={"note": f"{run}-{n}"},
            providers=("leadsquared",),
        ).to_dict()
        for n in range(total)
    ]


def produce(bootstrap: str, topic: str, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """Produce every command (acks=all); the time each was handed to the producer."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    sent: dict[str, float] = {}
    futures = []
    for body in bodies:
        sent[body["changes"]["note"]] = time.time()
        futures.append(
            producer.send(topic, key=f"id:{body['lead']['id']}".encode(), value=json.dumps(body).encode())
        )
    for future in futures:
        future.get(timeout=60)
    producer.close()
    return sent


def sim_calls(sim_url: str) -> list[dict[str, Any]]:
    calls = requests.get(f"{sim_url}/_sim/calls", timeout=60).json()["calls"]
    return [c for c in calls if UPDATE_PATH in c["path"] and c["status"] == 200]


def measure(sim_url: str, sent: dict[str, float], total: int, run: str, timeout: float) -> dict[str, float]:
    def arrived() -> list[dict[str, Any]] | None:
        calls = [c for c in sim_calls(sim_url) if c["json"][0]["Value"].startswith(f"{run}-")]
        return calls if len(calls) >= total else None

    calls = wait_until(arrived, timeout=timeout, interval=2.0, what=f"{run}: {total} calls")
    latencies = sorted(c["at"] - sent[c["json"][0]["Value"]] for c in calls)
    elapsed = max(c["at"] for c in calls) - min(sent.values())
    notes = [c["json"][0]["Value"] for c in calls]
    return {
        "commands": len(calls),
        "duplicates": len(notes) - len(set(notes)),
        "seconds": elapsed,
        "per_second": len(calls) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def report(name: str, result: dict[str, float]) -> None:
    print(
        f"{name:<28} {result['commands']:>6.0f} commands in {result['seconds']:6.2f} s = "
        f"{result['per_second']:7.0f} commands/s   p50 {result['p50_ms']:7.1f} ms   p99 {result['p99_ms']:7.1f} ms"
        f"   duplicates {result['duplicates']:.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--commands", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sim-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sim_worker:
        sim_worker(args.sim_worker)
        return 0
    if args.baseline_worker:
        bootstrap, topic, sim_url, total = args.baseline_worker
        baseline_worker(bootstrap, topic, sim_url, int(total))
        return 0

    total = args.commands
    workdir = Path(tempfile.mkdtemp(prefix="leadrelay-bench-"))
    broker = TansuBroker(workdir / "broker.log").start()
    redis_url, private_redis = shared_redis_url()
    pg_server, private_pg = postgres_server()
    database = ScratchDatabase(pg_server)
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    children = [spawn([sys.executable, __file__, "--sim-worker", str(sim_port)], workdir / "sim.log")]
    try:
        wait_http_ok(f"{sim_url}/_sim/calls")
        leads = [{"ProspectID": f"lead-{n}"} for n in range(total)]
        for i in range(0, total, 1000):
            requests.post(f"{sim_url}/_sim/leads", json=leads[i : i + 1000], timeout=60).raise_for_status()

        raw = base_config(
            workdir,
            sim_url,
            mode="distributed",
            redis={"url": redis_url, "key_prefix": f"bench:{uuid.uuid4().hex[:8]}:"},
            database={"url": database.url},
            dispatcher={"concurrency": args.concurrency},
            logging={"level": "WARNING", "json": True},
            server={"metrics_port": 0},
            kafka={
                "bootstrap_servers": [broker.bootstrap],
                "partitions": 4,
                "consumer": {
                    "max_poll_interval_ms": 10000,
                    "session_timeout_ms": 6000,
                    "heartbeat_interval_ms": 1000,
                },
            },
        )
        raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 1_000_000, "per_seconds": 1}
        config_path = workdir / "leadrelay.yaml"
        config_path.write_text(yaml.safe_dump(raw))

        # 1. leadrelay's dispatcher consumer.
        dispatcher = spawn(
            [sys.executable, "-m", "service.cli", "kafka-dispatch"],
            workdir / "dispatcher.log",
            {"LEADRELAY_CONFIG": str(config_path)},
        )
        children.append(dispatcher)
        # Joined once a first command round-trips.
        warm = commands(1, "warm")
        warm[0]["lead"]["id"] = "lead-0"
        produce(broker.bootstrap, "leadrelay.commands", warm)
        measure(sim_url, {"warm-0": time.time()}, 1, "warm", timeout=60)
        sent = produce(broker.bootstrap, "leadrelay.commands", commands(total, "lr"))
        leadrelay = measure(sim_url, sent, total, "lr", timeout=600)
        stop(dispatcher)

        # 2. the plain kafka-python loop, same records, its own topic and group.
        baseline_log = workdir / "baseline.log"
        baseline = spawn(
            [
                sys.executable,
                __file__,
                "--baseline-worker",
                broker.bootstrap,
                "bench.commands",
                sim_url,
                str(total + 1),
            ],
            baseline_log,
        )
        children.append(baseline)
        produce(broker.bootstrap, "bench.commands", warm)
        measure(sim_url, {"warm-0": time.time()}, 2, "warm", timeout=60)
        sent = produce(broker.bootstrap, "bench.commands", commands(total, "bl"))
        plain = measure(sim_url, sent, total, "bl", timeout=600)

        print(
            f"\n{total} commands, 4 partitions, Tansu broker (memory), Redis, LeadSquared simulator (no limit)"
        )
        report(f"leadrelay kafka-dispatch (concurrency {args.concurrency})", leadrelay)
        report("plain kafka-python + requests", plain)
        print(
            f"ratio leadrelay / plain loop: {leadrelay['per_second'] / plain['per_second']:.2f}x throughput"
        )
        return 0 if leadrelay["duplicates"] == 0 else 1
    finally:
        for child in children:
            stop(child)
        broker.stop()
        if private_redis:
            private_redis.stop()
        database.drop()
        if private_pg:
            private_pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
