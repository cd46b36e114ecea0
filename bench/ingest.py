"""Ingest benchmark: signed webhooks against `leadrelay serve` over loopback.

Baseline, measured in the same run with the same client and the same gunicorn settings:
a bare Flask endpoint that only answers 202. Prints accepted requests/s and p50/p99
latency for both, and the ratios.

    .venv/bin/python bench/ingest.py [--requests 3000] [--clients 8]
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
import threading
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import logging  # noqa: E402

from handlers.leadsquared.simulator import create_leadsquared_simulator  # noqa: E402
from handlers.simulation import ServedApp  # noqa: E402
from tests.support import base_config, free_port, signed_headers, wait_http_ok  # noqa: E402

BARE_APP = """
from flask import Flask, jsonify

def create_app():
    app = Flask("bare")

    @app.post("/webhooks/generic")
    def accept():
        return jsonify({"status": "accepted"}), 202

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
"""


def prepare(n: int) -> list[tuple[bytes, dict[str, str]]]:
    prepared = []
    for i in range(n):
        event = {"lead": {"email": f"lead{i % 500}@example.com"}, "changes": {"city": f"City {i}"}}
        body = json.dumps(event).encode()
        prepared.append((body, signed_headers(body, f"bench-{i}")))
    return prepared


def load(url: str, prepared: list[tuple[bytes, dict[str, str]]], clients: int) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    chunks = [prepared[i::clients] for i in range(clients)]

    def worker(chunk: list[tuple[bytes, dict[str, str]]]) -> None:
        session = requests.Session()
        mine: list[float] = []
        codes: dict[int, int] = {}
        for body, headers in chunk:
            started = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=30)
            mine.append(time.perf_counter() - started)
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
        with lock:
            latencies.extend(mine)
            for code, count in codes.items():
                statuses[code] = statuses.get(code, 0) + count

    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "accepted": statuses.get(202, 0),
        "rps": statuses.get(202, 0) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "statuses": statuses,
    }


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, cwd=str(ROOT), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the simulator's request lines
    tmp = Path(tempfile.mkdtemp(prefix="leadrelay-bench-"))
    prepared = prepare(args.requests)
    warmup = prepare(50)

    # Baseline: a bare Flask endpoint under the same gunicorn config.
    (tmp / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    gunicorn_args = ["-c", str(ROOT / "service" / "gunicorn_conf.py"), "--bind", f"127.0.0.1:{port}",
                     "--workers", str(args.workers), "--threads", str(args.threads)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp), "GUNICORN_ACCESSLOG": "-"}
    bare = start(
        [sys.executable, "-m", "gunicorn", *gunicorn_args, "bare_app:create_app()"], env, tmp / "bare.log"
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        load(f"http://127.0.0.1:{port}/webhooks/generic", warmup, args.clients)
        baseline = load(f"http://127.0.0.1:{port}/webhooks/generic", prepared, args.clients)
    finally:
        stop(bare)

    # leadrelay serve: gunicorn web + dispatcher, delivering to a simulator without a limit.
    sim = ServedApp(create_leadsquared_simulator("bench-ak", "bench-sk", rate_limit=(None, 5))).start()
    requests.post(
        f"{sim.url}/_sim/leads",
        json=[{"EmailAddress": f"lead{i}@example.com"} for i in range(500)],
        timeout=10,
    )
    raw = base_config(tmp, sim.url)
    raw["providers"]["leadsquared"].update(access_key="bench-ak", secret_key="bench-sk", rate_limit=None)
    raw["server"].update(workers=args.workers, threads=args.threads, metrics_port=0)
    raw["logging"]["level"] = "WARNING"
    raw["dedup"]["fingerprint_window_seconds"] = 0
    config_path = tmp / "leadrelay.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    serve = start(
        [sys.executable, "-m", "service.cli", "--config", str(config_path), "serve"],
        {**os.environ, "GUNICORN_ACCESSLOG": "-"},
        tmp / "serve.log",
    )
    base = f"http://{raw['server']['bind']}"
    try:
        wait_http_ok(f"{base}/healthz")
        load(
            f"{base}/webhooks/generic",
            [(b, {**h, "webhook-id": "warm-" + h["webhook-id"]}) for b, h in warmup],
            args.clients,
        )
        measured = load(f"{base}/webhooks/generic", prepared, args.clients)
    finally:
        stop(serve)
        sim.stop()

    print(f"ingest benchmark: {args.requests} signed webhooks, {args.clients} clients, "
          f"gunicorn {args.workers} workers x {args.threads} threads, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'':24}{'accepted/s':>12}{'p50 ms':>10}{'p99 ms':>10}  statuses")
    for name, result in (("bare Flask 202", baseline), ("leadrelay serve", measured)):
        print(
            f"{name:24}{result['rps']:>12.0f}{result['p50_ms']:>10.2f}{result['p99_ms']:>10.2f}  {result['statuses']}"
        )
    print(
        f"ratio leadrelay/bare: throughput {measured['rps'] / baseline['rps']:.2f}x, "
        f"p50 {measured['p50_ms'] / baseline['p50_ms']:.2f}x, p99 {measured['p99_ms'] / baseline['p99_ms']:.2f}x"
    )


if __name__ == "__main__":
    main()
