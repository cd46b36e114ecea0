"""gunicorn settings for the web process.

    gunicorn -c python:service.web.gunicorn_conf 'service.cli.serve:create_web_app()'     (the image's CMD)

`leadrelay serve` passes bind/workers/threads from the leadrelay config on the command
line (which wins over this file); in a container they come from the environment:
GUNICORN_BIND, WEB_CONCURRENCY, GUNICORN_THREADS, GUNICORN_TIMEOUT,
GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE, GUNICORN_LOGLEVEL, GUNICORN_WORKER_TMP_DIR,
GUNICORN_ACCESSLOG ("-" = stdout, "" = off) and GUNICORN_ACCESSLOG_SKIP_PATHS.

Logs: gunicorn's own lines and the access log are JSON objects, one per line, redacted
like every other leadrelay log line; successful probe requests are left out of the
access log (kubelet would write one every few seconds per pod).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger
from prometheus_client import multiprocess

from service.logs import AccessJsonFormatter, JsonFormatter, SkipPathsFilter


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8080")
workers = _int_env("WEB_CONCURRENCY", 2)
threads = _int_env("GUNICORN_THREADS", 4)
worker_class = "gthread"
timeout = _int_env("GUNICORN_TIMEOUT", 30)
# After SIGTERM workers finish in-flight requests for this long (Kubernetes'
# terminationGracePeriodSeconds must be longer; the chart checks it).
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 25)
keepalive = _int_env("GUNICORN_KEEPALIVE", 5)
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None
errorlog = "-"
# gunicorn 25+ opens a control socket under $HOME by default: that fails on a read-only root
# filesystem and collides between instances on one machine. Opt in with a path.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or None
control_socket_disable = control_socket is None
# The body limit is enforced by the app (413 JSON); the request line and headers here.
limit_request_line = 8190
limit_request_fields = 100

SKIP_PATHS = tuple(
    p.strip()
    for p in os.environ.get("GUNICORN_ACCESSLOG_SKIP_PATHS", "/healthz,/readyz").split(",")
    if p.strip()
)

# Every worker writes its samples here and /metrics sums them. Set before any worker
# imports prometheus_client; without one (plain `docker run`) each run gets its own.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="leadrelay-prometheus-")


class JsonLogger(Logger):
    """gunicorn's logger with leadrelay's JSON formatters and the probe filter."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
        for handler in self.access_log.handlers:
            handler.setFormatter(AccessJsonFormatter())
        if not any(isinstance(f, SkipPathsFilter) for f in self.access_log.filters):
            self.access_log.addFilter(SkipPathsFilter(SKIP_PATHS))


logger_class = JsonLogger


def on_starting(server: Any) -> None:
    # Files left by a previous container in the same pod (emptyDir survives restarts)
    # would add dead workers' gauges to /metrics: start clean.
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)
