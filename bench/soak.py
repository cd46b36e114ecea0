"""Retention soak: ingest continuously with a short retention and print the database size
over time; with pruning on, it levels off instead of growing forever.

    .venv/bin/python bench/soak.py [--seconds 60] [--retention-seconds 5] [--engine sqlite|postgresql]

Each round accepts a batch of commands (claim + enqueue + confirm, as ingest does), delivers
them (claim due groups, record `delivered`), and every second the retention pruner removes
what is older than the retention, in batches. PostgreSQL: DATABASE_URL (a scratch database
is created and dropped). Printed every 5 s: commands accepted so far, rows left, size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.state import SqlStateStore, migrate  # noqa: E402
from service.state.engine import PostgresEngine, SQLiteEngine  # noqa: E402
from service.state.retention import RetentionPruner  # noqa: E402
from tests.state.conftest import make_command  # noqa: E402
from tests.support_postgres import ScratchDatabase  # noqa: E402

DAY = 86400.0


def soak(store: SqlStateStore, size: object, seconds: float, retention_seconds: float, batch: int) -> None:
    pruner = RetentionPruner(
        store,
        {
            "delivered_days": retention_seconds / DAY,
            "dead_letter_days": retention_seconds / DAY,
            "prune_interval_seconds": 1.0,
            "batch": 500,
        },
    )
    pruner.start()
    started = time.monotonic()
    next_report = started
    number = 0
    print(f"{'t (s)':>6} {'accepted':>9} {'commands':>9} {'size (MiB)':>11}")
    try:
        while time.monotonic() - started < seconds:
            for _ in range(batch):
                command = make_command(number)
                key = f"cmd:{command.command_id}"
                with store.transaction():
                    store.claim(key, 60)
                    store.enqueue(command)
                    store.confirm(key, int(retention_seconds))  # dedup keys expire with the retention too
                number += 1
            now = time.time()
            for group in store.claim_due_groups(now + 1, limit=batch * 2):
                store.record(group, "delivered", now=now)
            if time.monotonic() >= next_report:
                with store.read() as db:
                    left = db.execute("SELECT COUNT(*) AS n FROM commands").fetchone()["n"]
                elapsed = time.monotonic() - started
                print(f"{elapsed:6.0f} {number:9d} {left:9d} {size() / 2**20:11.2f}", flush=True)  # type: ignore[operator]
                next_report += 5
    finally:
        pruner.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--retention-seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if args.engine == "sqlite":
        with tempfile.TemporaryDirectory() as scratch:
            engine = SQLiteEngine(Path(scratch) / "soak.db")
            migrate(engine)
            soak(SqlStateStore(engine), engine.size_bytes, args.seconds, args.retention_seconds, args.batch)
            engine.close()
        return
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL for --engine postgresql")
    database = ScratchDatabase(url)
    try:
        engine = PostgresEngine(database.conninfo, pool_size=4)
        migrate(engine)
        soak(SqlStateStore(engine), engine.size_bytes, args.seconds, args.retention_seconds, args.batch)
        engine.close()
    finally:
        database.drop()


if __name__ == "__main__":
    main()
