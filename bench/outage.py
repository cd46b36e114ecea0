"""Outage benchmark: the issue's outside check in real time, with the shipped defaults.

    .venv/bin/python bench/outage.py [--outage-seconds 150] [--events 100] [--leads 50]

The LeadSquared simulator (25 calls per 5 s, leads seeded by email) answers 500 to every
call for `--outage-seconds`; meanwhile `--events` commands for `--leads` leads (two per
lead: an older and a newer city) go through the real ingest path and the real embedded
dispatcher with the default schedule and breaker (config/leadrelay.yaml's `dispatcher`).
Printed: calls to the failing API during the outage (goal <= 40), dead letters (goal 0),
seconds from recovery until every lead holds its newest value (goal <= 60), probes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage-seconds", type=float, default=150.0)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--leads", type=int, default=50)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    sim_app = create_leadsquared_simulator(ACCESS_KEY, SECRET_KEY, rate_limit=(25, 5.0))
    sim = ServedApp(sim_app).start()
    state = sim_app.extensions["sim_state"]
    emails = [f"lead{i}@example.com" for i in range(args.leads)]
    ids = requests.post(
        f"{sim.url}/_sim/leads", json=[{"EmailAddress": e} for e in emails], timeout=30
    ).json()["ids"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = validate_config(
            {
                "sandbox": "off",
                "storage": {"path": str(Path(tmp) / "bench.db")},
                "dedup": {"fingerprint_window_seconds": 0},
                "sources": {"generic": {"type": "generic", "secrets": ["whsec_" + "A" * 32]}},
                "providers": {
                    "leadsquared": {
                        "type": "leadsquared",
                        "base_url": sim.url,
                        "access_key": ACCESS_KEY,
                        "secret_key": SECRET_KEY,
                    }
                },
                "routes": [{"source": "generic", "providers": ["leadsquared"]}],
            }
        )
        runtime = build_runtime(cfg)
        dispatcher = EmbeddedDispatcher(cfg, runtime.store)
        requests.post(
            f"{sim.url}/_sim/faults",
            json={"path": "LeadManagement", "status": 500, "count": 10**9},
            timeout=5,
        )
        started = time.time()
        thread = threading.Thread(target=dispatcher.run, daemon=True)
        thread.start()
        newest: dict[str, str] = {}
        base = datetime.now(UTC) - timedelta(minutes=5)
        for n in range(args.events):
            email = emails[n % args.leads]
            city = f"city-{n}"
            runtime.ingestor.accept(
                LeadUpdateCommand(
                    command_id=f"bench:{n}",
                    source="generic",
                    event_type="form.submitted",
                    occurred_at=base + timedelta(seconds=n),
                    lead=LeadIdentity(email=email),
                    changes={"city": city},
                    providers=("leadsquared",),
                )
            )
            newest[email] = city
        while time.time() - started < args.outage_seconds:
            time.sleep(0.2)
        requests.delete(f"{sim.url}/_sim/faults", timeout=5)
        recovered = time.time()
        with state.lock:
            during = [c for c in state.calls if c["at"] <= recovered]

        while runtime.store.queue_stats()["depth"] and time.time() - recovered < 300:
            time.sleep(0.1)
        settled = time.time() - recovered
        dispatcher.stop()
        thread.join(timeout=30)
        dead = runtime.store.list_events(status="dead_lettered", limit=1000)
        wrong = 0
        for email, lead_id in zip(emails, ids, strict=True):
            params = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY, "id": lead_id}
            while True:
                answer = requests.get(
                    f"{sim.url}/v2/LeadManagement.svc/Leads.GetById", params=params, timeout=5
                )
                if answer.status_code == 200:
                    break
                time.sleep(0.2)  # the read-back is counted against the account's limit too
            wrong += answer.json()[0].get("mx_City") != newest[email]
    sim.stop()
    print(f"outage {args.outage_seconds:g} s, {args.events} events for {args.leads} leads, default settings")
    print(f"  calls to the failing API during the outage: {len(during)} (goal <= 40)")
    print(f"  dead letters: {len(dead)} (goal 0)")
    print(
        f"  every delivery settled {settled:.1f} s after recovery (goal <= 60); leads not on their newest value: {wrong}"
    )
    return 0 if len(during) <= 40 and not dead and settled <= 60 and not wrong else 1


if __name__ == "__main__":
    raise SystemExit(main())
