"""Ingest benchmark: how many signed webhooks per second `leadrelay serve` accepts durably,
as a ratio of what a bare Flask endpoint answers under the same gunicorn settings.

    .venv/bin/python bench/ingest.py [--duration 8] [--connections 8]

Load: wrk (8 connections) replaying pre-signed, unique generic events (see bench/loadgen.py;
without wrk, one Python process per connection). Three servers, one after the other, on
127.0.0.1, each warmed up then measured for `--duration` seconds:

  (a) bare Flask: a handler that only answers 202 (2 workers x 4 threads, service/web/gunicorn_conf.py);
  (b) `leadrelay serve`, ingest only: the provider disabled, so the dispatcher delivers
      nothing (deliveries wait, as they do for a disabled provider);
  (c) `leadrelay serve` with the dispatcher delivering to the LeadSquared simulator while the
      load runs: within LeadSquared's documented 25 calls per 5 s (the simulator enforces it),
      or with `--provider-limit none` as fast as the simulator answers; on two cores that
      delivery work takes CPU from ingest, so read (c) with the provider calls it made.

Prints the ratio lines first, then each run's figures and the bare-Flask ceiling this
client reached (the client was not the limit if (b) and (c) stay well below it), and the
server's CPU milliseconds per answered request (every process of the server, from /proc):
where the ratio comes from, since on two cores the load generator and the server share them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadResult, run_load, signed_event_requests  # noqa: E402
from bench.servers import (  # noqa: E402
    Server,
    bind_of,
    serve_config,
    start_bare_flask,
    start_serve,
    tree_cpu_seconds,
)
from handlers.leadsquared.simulator import create_leadsquared_simulator  # noqa: E402
from handlers.simulation import ServedApp  # noqa: E402
from tests.support import SIGNING_SECRET  # noqa: E402

LEADS = 500


def measure(server: Server, args: argparse.Namespace, tag: str) -> tuple[LoadResult, float]:
    """The load's result and the server's CPU milliseconds per answered request (every process
    of the server: gunicorn's master and workers, the dispatcher)."""
    host = server.url.removeprefix("http://")
    warmup = signed_event_requests(
        host, int(args.warmup * args.max_rate), f"warm-{tag}", SIGNING_SECRET, LEADS
    )
    run_load(server.url, warmup, args.connections, args.warmup)
    prepared = signed_event_requests(host, int(args.duration * args.max_rate), tag, SIGNING_SECRET, LEADS)
    before = tree_cpu_seconds(server.proc.pid)
    result = run_load(server.url, prepared, args.connections, args.duration)
    used = tree_cpu_seconds(server.proc.pid) - before
    answered = result.rps * result.seconds
    return result, (used * 1000 / answered if answered else 0.0)


def queued_commands(db_path: Path, tag: str) -> int:
    """Commands queued durably: on the queue tables, or still in the inbox (not yet moved on)."""
    pattern = (f"generic:{tag}-%",)
    with sqlite3.connect(db_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return sum(
            db.execute(f"SELECT COUNT(*) FROM {table} WHERE command_id LIKE ?", pattern).fetchone()[0]
            for table in ("commands", "inbox")
            if table in tables  # an older tree (`--before`) has no inbox
        )


def update_calls(sim: Any) -> int:
    state = sim.extensions["sim_state"]
    with state.lock:
        return sum(1 for c in state.calls if "Lead.Update" in c["path"] and c["status"] == 200)


def start_simulator(documented_limit: bool) -> tuple[Any, ServedApp]:
    """The LeadSquared simulator with LEADS leads known by email."""
    sim_app = create_leadsquared_simulator(
        "bench-ak", "bench-sk", rate_limit=(25 if documented_limit else None, 5)
    )
    sim = ServedApp(sim_app).start()
    leads = [{"EmailAddress": f"lead{i}@example.com"} for i in range(LEADS)]
    requests.post(f"{sim.url}/_sim/leads", json=leads, timeout=10).raise_for_status()
    return sim_app, sim


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The load and server settings every ingest benchmark shares (what `measure` reads)."""
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-rate", type=int, default=15000, help="requests prepared per second of run")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_arguments(parser)
    parser.add_argument(
        "--provider-limit", choices=("documented", "none"), default="documented",
        help="(c): LeadSquared's 25 calls per 5 s, or none (the dispatcher's full speed)",
    )  # fmt: skip
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout of leadrelay: also measure its serve, same run, same client",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the simulator's request lines
    tmp = Path(tempfile.mkdtemp(prefix="leadrelay-bench-ingest-"))

    documented = args.provider_limit == "documented"
    provider = {"rate_limit": {"calls": 25, "per_seconds": 5}} if documented else {}
    runs: dict[str, LoadResult] = {}
    cpu_ms: dict[str, float] = {}  # server CPU per answered request
    notes: dict[str, str] = {}
    bare = start_bare_flask(tmp, args.workers, args.threads)
    try:
        runs["bare"], cpu_ms["bare"] = measure(bare, args, "bare")
    finally:
        bare.stop()

    trees = [("", ROOT)] + ([("before ", args.before.resolve())] if args.before else [])
    plan = [(f"{prefix}{kind}", enabled, tree) for kind, enabled in (("ingest", False), ("delivering", True))
            for prefix, tree in trees]  # fmt: skip
    for name, enabled, tree in plan:
        workdir = tmp / name.replace(" ", "-")
        workdir.mkdir()
        # A simulator per run: one run's calls must not count against the next one's window.
        sim_app, sim = start_simulator(documented)
        config = serve_config(
            workdir,
            sim.url,
            args.workers,
            args.threads,
            providers={"leadsquared": {"enabled": enabled, **provider}},
        )
        serve = start_serve(config, bind_of(config), workdir / "serve.log", tree)
        try:
            runs[name], cpu_ms[name] = measure(serve, args, name.replace(" ", "-"))
            delivered = update_calls(sim_app)
            rejected = sim_app.extensions["sim_state"].rejected_429
        finally:
            serve.stop()
            sim.stop()
        queued = queued_commands(workdir / "leadrelay.db", name.replace(" ", "-"))
        notes[name] = f"{queued} queued durably" + (
            f", {delivered} provider updates during warm-up and run, {rejected} x 429" if enabled else ""
        )

    bare_rps = runs["bare"].rps
    for prefix, _ in trees:
        print(f"ratio {prefix}ingest-only / bare Flask: {runs[prefix + 'ingest'].rps / bare_rps:.2f}x")
        print(
            f"ratio {prefix}ingest while delivering / bare Flask: {runs[prefix + 'delivering'].rps / bare_rps:.2f}x"
        )
    print(f"bare-Flask ceiling reached with this client: {bare_rps:.0f} requests/s")
    print(
        f"client: {runs['bare'].client}; gunicorn {args.workers} workers x {args.threads} threads; "
        f"{os.cpu_count()} CPUs; {args.duration:g} s measured per server after {args.warmup:g} s warm-up; "
        f"(c) delivers {'within 25 calls per 5 s' if documented else 'without a rate limit'}"
    )
    print(
        f"{'':44}{'2xx/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'non-2xx':>9}{'errors':>8}{'CPU ms/req':>11}"
    )
    labels = {"bare": "(a) bare Flask 202", "ingest": "(b) leadrelay serve, ingest only",
              "delivering": "(c) leadrelay serve + delivering"}  # fmt: skip
    for name, result in runs.items():
        label = labels[name.removeprefix("before ")] + (" [before]" if name.startswith("before ") else "")
        print(
            f"{label:44}{result.rps:>8.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.max_ms:>9.1f}"
            f"{result.non_2xx:>9}{result.socket_errors:>8}{cpu_ms[name]:>11.2f}  {notes.get(name, '')}"
            + ("  (ran out of prepared requests: raise --max-rate)" if result.exhausted else "")
        )


if __name__ == "__main__":
    main()
