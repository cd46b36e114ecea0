"""Servers the benchmarks measure: a bare Flask endpoint and `leadrelay serve`, both under
the project's own gunicorn settings (`service/web/gunicorn_conf.py`), on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

from tests.support import base_config, deep_merge, free_port, wait_http_ok  # noqa: E402

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


class Server:
    """A server as a child process in its own session; its output kept in a file."""

    def __init__(
        self, command: list[str], env: dict[str, str], log: Path, url: str, cwd: Path = ROOT
    ) -> None:
        self.url = url
        self.log = log
        self.proc = subprocess.Popen(
            command, env=env, cwd=str(cwd), stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_http_ok(f"{url}/healthz")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system) used so far by `root_pid` and every live descendant (gunicorn's
    workers, the dispatcher), from /proc; 0.0 where /proc is not there."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(pid, 0.0) for pid in tree)


def start_bare_flask(
    workdir: Path, workers: int, threads: int, app_source: str = BARE_APP, name: str = "bare"
) -> Server:
    """A bare Flask app (`app_source`, a module with `create_app()`) under the project's gunicorn
    settings; `name` names its module and log file, so several can share `workdir`."""
    (workdir / f"{name}_app.py").write_text(app_source)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "service" / "web" / "gunicorn_conf.py"),
               "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
               f"{name}_app:create_app()"]  # fmt: skip
    # Both servers keep gunicorn's default access log (JSON lines, to their log file).
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    return Server(command, env, workdir / f"{name}.log", f"http://127.0.0.1:{port}")


def serve_config(workdir: Path, provider_url: str, workers: int, threads: int, **overrides: Any) -> Path:
    """A leadrelay config: the generic source -> LeadSquared at `provider_url` without a rate
    limit (unless overridden), the default dispatcher settings (the test defaults poll faster), logs at the default level (INFO)."""
    raw = base_config(workdir, provider_url)
    # No limit to speak of (the simulator enforces none): without one the handler's default,
    # LeadSquared's 25 calls per 5 s, would be the whole delivery rate.
    unlimited = {"calls": 1_000_000, "per_seconds": 1}
    raw["providers"]["leadsquared"].update(access_key="bench-ak", secret_key="bench-sk", rate_limit=unlimited)
    raw["server"].update(workers=workers, threads=threads, metrics_port=0)
    raw["logging"]["level"] = "INFO"  # the default: what a user running leadrelay pays for logs
    raw["dispatcher"] = {}
    raw = deep_merge(raw, overrides)
    path = workdir / "leadrelay.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_serve(config_path: Path, bind: str, log: Path, tree: Path = ROOT) -> Server:
    """`leadrelay serve` from the source tree `tree` (another checkout: a before/after run)."""
    command = [sys.executable, "-m", "service.cli", "--config", str(config_path), "serve"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return Server(command, env, log, f"http://{bind}", cwd=tree)


def bind_of(config_path: Path) -> str:
    return str(yaml.safe_load(config_path.read_text())["server"]["bind"])
