"""Rate-limit benchmark: 1,000 commands for 200 leads against a LeadSquared simulator that
enforces 25 calls per 5 s (answering 429 beyond that), with and without coalescing.

    .venv/bin/python bench/ratelimit.py [--commands 1000] [--leads 200] [--per-seconds 5]
                                         [--arrival-rate 0] [--by-email] [--skip-baseline]

Commands go through the real ingest path (routing, dedup, the durable SQLite queue) and the
real embedded dispatcher (shared limiter, coalescing, ledger); the provider is the simulator
over loopback HTTP. `--arrival-rate N` feeds N commands/s while the dispatcher runs instead
of queueing them all first; `--by-email` names leads by email, so each lead's id is looked
up first (a call of its own, through the same limiter). Printed per run: 429s (goal 0), calls made (goal <= leads with
coalescing), the fraction of the rate budget used while backlogged (goal >= 95 %), wall
time, and whether every lead ended with its latest value.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handlers.leadsquared.simulator import create_leadsquared_simulator  # noqa: E402
from handlers.simulation import ServedApp  # noqa: E402
from service.config import validate_config  # noqa: E402
from service.domain.command import LeadIdentity, LeadUpdateCommand  # noqa: E402
from service.pipeline.embedded import EmbeddedDispatcher  # noqa: E402
from service.runtime import build_runtime  # noqa: E402

ACCESS_KEY, SECRET_KEY = "bench-access-key", "bench-secret-key"
CALLS = 25


@dataclass
class RunResult:
    label: str
    calls: int
    lookups: int
    rejected_429: int
    budget_used: float
    steady_rate_used: float
    backlogged_seconds: float
    wall_seconds: float
    leads_correct: int
    leads: int
    delivered: int
    commands: int


def config(storage: Path, sim_url: str, coalesce: bool, per_seconds: float) -> Any:
    return validate_config(
        {
            "sandbox": "off",
            "storage": {"path": str(storage)},
            "dedup": {"backend": "sqlite", "fingerprint_window_seconds": 0},
            "dispatcher": {"coalesce": coalesce, "poll_interval_seconds": 0.02, "concurrency": 8},
            "logging": {"level": "WARNING", "json": True},
            "sources": {
                "bench": {"type": "generic", "secrets": ["whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldA=="]}
            },
            "providers": {
                "leadsquared": {
                    "type": "leadsquared",
                    "base_url": sim_url,
                    "access_key": ACCESS_KEY,
                    "secret_key": SECRET_KEY,
                    "rate_limit": {"calls": CALLS, "per_seconds": per_seconds},
                }
            },
            "routes": [{"source": "bench", "providers": ["leadsquared"]}],
        }
    )


def commands(leads: list[LeadIdentity], count: int) -> list[LeadUpdateCommand]:
    """Command n updates lead n % leads: five interleaved rounds of changes for every lead."""
    start = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    return [
        LeadUpdateCommand(
            command_id=f"bench:{n}",
            source="bench",
            event_type="lead.updated",
            occurred_at=start + timedelta(milliseconds=n),
            lead=leads[n % len(leads)],
            changes={"city": f"city-{n}", **({"first_name": f"round-{n // len(leads)}"} if n % 2 else {})},
        )
        for n in range(count)
    ]


def budget_used(times: list[float], per_seconds: float) -> tuple[float, float, float]:
    """While backlogged (first to last call): (calls made / the most the limit allows in
    that span, steady rate after the first window's burst / the limit's rate, span)."""
    if len(times) < 2:
        return 0.0, 0.0, 0.0
    span = max(times) - min(times)
    allowed = CALLS * (math.floor(span / per_seconds) + 1)
    steady = ((len(times) - CALLS) / span) / (CALLS / per_seconds) if len(times) > CALLS else 0.0
    return len(times) / allowed, steady, span


def run(label: str, coalesce: bool, args: argparse.Namespace) -> RunResult:
    sim = ServedApp(
        create_leadsquared_simulator(ACCESS_KEY, SECRET_KEY, rate_limit=(CALLS, args.per_seconds))
    ).start()
    workdir = Path(tempfile.mkdtemp(prefix="leadrelay-bench-"))
    try:
        lead_ids = requests.post(
            f"{sim.url}/_sim/leads",
            json=[
                {"FirstName": f"lead-{i}", "EmailAddress": f"lead{i}@example.com"} for i in range(args.leads)
            ],
            timeout=10,
        ).json()["ids"]
        identities = [
            LeadIdentity(email=f"lead{i}@example.com") if args.by_email else LeadIdentity(id=lead_id)
            for i, lead_id in enumerate(lead_ids)
        ]
        cfg = config(workdir / "bench.db", sim.url, coalesce, args.per_seconds)
        runtime = build_runtime(cfg)
        queued = commands(identities, args.commands)
        expected = {lead_ids[n % args.leads]: f"city-{n}" for n in range(args.commands)}

        def feed() -> None:
            for command in queued:
                runtime.ingestor.accept(command)
                if args.arrival_rate:
                    time.sleep(1 / args.arrival_rate)

        feeder = threading.Thread(target=feed, daemon=True)
        if not args.arrival_rate:
            feed()  # a backlog: everything is queued before the dispatcher starts
        dispatcher = EmbeddedDispatcher(cfg, runtime.store)
        started = time.monotonic()
        worker = threading.Thread(target=dispatcher.run, daemon=True)
        worker.start()
        if args.arrival_rate:
            feeder.start()
        while True:
            time.sleep(0.1)
            fed = not feeder.is_alive()
            if fed and runtime.store.queue_stats()["depth"] == 0:
                break
        wall = time.monotonic() - started
        dispatcher.stop()
        worker.join(timeout=30)
        log = requests.get(f"{sim.url}/_sim/calls", timeout=30).json()
        updates = [c for c in log["calls"] if c["path"].endswith("Lead.Update")]
        lookups = [c for c in log["calls"] if c["path"].endswith("Leads.GetByEmailaddress")]
        used, steady, span = budget_used([c["at"] for c in updates + lookups], args.per_seconds)
        final = {
            lead["ProspectID"]: lead.get("mx_City")
            for lead in sim.server.app.extensions["sim_store"].find(lambda _: True)
        }
        delivered = sum(1 for e in runtime.store.list_events(status="delivered", limit=100_000))
        return RunResult(
            label=label,
            calls=len(updates),
            lookups=len(lookups),
            rejected_429=log["rejected_429"],
            budget_used=used,
            steady_rate_used=steady,
            backlogged_seconds=span,
            wall_seconds=wall,
            leads_correct=sum(1 for lead, city in expected.items() if final.get(lead) == city),
            leads=args.leads,
            delivered=delivered,
            commands=args.commands,
        )
    finally:
        sim.stop()


def report(result: RunResult) -> None:
    print(f"\n== {result.label}")
    print(f"  429 responses                : {result.rejected_429}")
    print(f"  provider update calls made   : {result.calls}")
    if result.lookups:
        print(f"  lead id lookups made         : {result.lookups}")
    print(
        f"  rate budget used (backlogged): {result.budget_used:.1%}"
        f" ({result.calls + result.lookups} calls in {result.backlogged_seconds:.1f} s at {CALLS} per window)"
    )
    print(f"  steady rate / limit rate     : {result.steady_rate_used:.1%} (after the first window's burst)")
    print(f"  wall time                    : {result.wall_seconds:.1f} s")
    print(f"  commands delivered           : {result.delivered}/{result.commands}")
    print(f"  leads with their latest value: {result.leads_correct}/{result.leads}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--per-seconds", type=float, default=5.0, help="the window of the 25-call limit")
    parser.add_argument("--arrival-rate", type=float, default=0.0, help="commands/s fed while dispatching")
    parser.add_argument("--by-email", action="store_true", help="leads named by email: ids are looked up")
    parser.add_argument("--skip-baseline", action="store_true", help="only the coalescing run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("leadrelay").setLevel(logging.ERROR)
    print(
        f"{args.commands} commands for {args.leads} leads; simulator limit {CALLS} calls per {args.per_seconds:g} s;"
        f" {f'arriving at {args.arrival_rate:g}/s' if args.arrival_rate else 'all queued before dispatch'}"
    )
    report(run("coalescing on", True, args))
    if not args.skip_baseline:
        report(run("baseline: coalescing off (dispatcher.coalesce: false)", False, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
