"""Durable-answer ceiling: what any server that answers only after a durable write can reach
on this machine, under the same gunicorn settings and client as `bench/ingest.py`.

    .venv/bin/python bench/durable_ceiling.py [--duration 8] [--connections 8] [--rounds 2]

Servers, each warmed up then measured under wrk with the same pre-signed requests:

  (a) bare Flask: a handler that only answers 202 (the baseline of `bench/ingest.py`);
  (d) bare Flask that first appends the request body to a file of its process and flushes it
      (`fdatasync`; the process's threads share one flush, as a group commit does): the
      least work any durable answer can do, with no parsing, no database, no signature check;
  (e) bare Flask that sleeps as long as one such flush takes here (the median of a
      measurement made at start) instead of flushing: the cost of a request thread that
      waits, whatever it waits for;
  (b) `leadrelay serve`, ingest only (the provider disabled), as in `bench/ingest.py`.

Prints the ratio lines first: (d)/(a) is the ceiling for "202 only after durable" with this
process model on this machine; no implementation of leadrelay's ingest can go above it.
Rounds alternate the servers, so a machine whose speed drifts affects each alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import add_load_arguments, measure, start_simulator  # noqa: E402
from bench.loadgen import LoadResult  # noqa: E402
from bench.servers import BARE_APP, bind_of, serve_config, start_bare_flask, start_serve  # noqa: E402

# Appends each request's body to a file of its own process, then answers once a flush that
# started after the append has returned. `CEILING_WAIT` (seconds): sleep that long instead.
DURABLE_APP = """
import os
import threading
import time

from flask import Flask, jsonify, request

WAIT = float(os.environ.get("CEILING_WAIT") or 0)


class Journal:
    def __init__(self, folder):
        self.folder = folder
        self.fd = None
        self.written = 0
        self.flushed = 0
        self.append_lock = threading.Lock()
        self.flush_lock = threading.Lock()

    def append(self, data):
        with self.append_lock:
            if self.fd is None:  # opened in the worker, after gunicorn's fork
                path = os.path.join(self.folder, f"journal-{os.getpid()}")
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self.fd, data + b"\\n")
            self.written += 1
            mine = self.written
        with self.flush_lock:
            if self.flushed >= mine:
                return  # a flush that started after our append covered it
            covers = self.written
            if WAIT:
                time.sleep(WAIT)
            else:
                os.fdatasync(self.fd)
            self.flushed = covers


def create_app():
    app = Flask("durable")
    journal = Journal(os.environ["CEILING_FOLDER"])

    @app.post("/webhooks/generic")
    def accept():
        journal.append(request.get_data())
        return jsonify({"status": "accepted"}), 202

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
"""


def flush_seconds(folder: Path, count: int = 300) -> float:
    """The median time of one append plus fdatasync of a small record, on the bench's disk."""
    path = folder / "flush-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, b"x" * 300 + b"\n")
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2, help="times each server is measured, alternating")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="leadrelay-bench-ceiling-"))
    flush = flush_seconds(tmp)

    runs: dict[str, list[tuple[LoadResult, float]]] = {}
    for round_number in range(args.rounds):
        for name in ("bare", "durable", "waiting", "leadrelay"):
            tag = f"{name}-{round_number}"
            workdir = tmp / tag
            workdir.mkdir()
            if name == "leadrelay":
                sim_app, sim = start_simulator(documented_limit=True)
                config = serve_config(
                    workdir, sim.url, args.workers, args.threads,
                    providers={"leadsquared": {"enabled": False}},
                )  # fmt: skip
                server = start_serve(config, bind_of(config), workdir / "serve.log")
            else:
                sim = None
                os.environ["CEILING_FOLDER"] = str(workdir)
                os.environ["CEILING_WAIT"] = repr(flush) if name == "waiting" else ""
                source = BARE_APP if name == "bare" else DURABLE_APP
                server = start_bare_flask(workdir, args.workers, args.threads, source, name)
            try:
                runs.setdefault(name, []).append(measure(server, args, tag))
            finally:
                server.stop()
                if sim is not None:
                    sim.stop()

    def best(name: str) -> float:
        return max(result.rps for result, _ in runs[name])

    bare = best("bare")
    print(f"ratio ceiling (bare Flask + durable append) / bare Flask: {best('durable') / bare:.2f}x")
    print(f"ratio bare Flask waiting one flush's time / bare Flask: {best('waiting') / bare:.2f}x")
    print(f"ratio leadrelay ingest-only / bare Flask: {best('leadrelay') / bare:.2f}x")
    print(f"ratio leadrelay ingest-only / ceiling: {best('leadrelay') / best('durable'):.2f}x")
    print(
        f"best of {args.rounds} alternating rounds; one append + fdatasync here: "
        f"median {flush * 1e6:.0f} us; gunicorn {args.workers} workers x {args.threads} threads; "
        f"{os.cpu_count()} CPUs; {args.duration:g} s measured per server after {args.warmup:g} s warm-up"
    )
    labels = {
        "bare": "(a) bare Flask 202",
        "durable": "(d) bare Flask, durable append first",
        "waiting": "(e) bare Flask, waits one flush's time",
        "leadrelay": "(b) leadrelay serve, ingest only",
    }
    print(f"{'':40}{'round':>6}{'2xx/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'CPU ms/req':>11}")
    for name, measured in runs.items():
        for number, (result, cpu_ms) in enumerate(measured, 1):
            print(
                f"{labels[name]:40}{number:>6}{result.rps:>8.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
                f"{result.non_2xx:>9}{cpu_ms:>11.2f}"
            )


if __name__ == "__main__":
    main()
