"""gunicorn settings for the web process. `leadrelay serve` passes bind/workers/threads from
the leadrelay config; in a container set them with GUNICORN_* / WEB_CONCURRENCY env vars."""

from __future__ import annotations

import json
import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"
# The body limit is enforced by the app (413 JSON); the request line and headers here.
limit_request_line = 8190
limit_request_fields = 100

access_log_format = json.dumps(
    {
        "ts": "%(t)s",
        "logger": "gunicorn.access",
        "remote": "%(h)s",
        "method": "%(m)s",
        "path": "%(U)s",
        "status": "%(s)s",
        "bytes": "%(B)s",
        "duration_ms": "%(M)s",
        "request_id": "%({x-request-id}o)s",
        "user_agent": "%(a)s",
    }
)


class _QuietProbes:
    """Probes would drown the access log."""

    def filter(self, record: Any) -> bool:
        args = getattr(record, "args", None)
        if isinstance(args, dict):
            return args.get("U") not in ("/healthz", "/readyz")
        return True


def on_starting(server: Any) -> None:
    import logging

    logging.getLogger("gunicorn.access").addFilter(_QuietProbes())


def post_fork(server: Any, worker: Any) -> None:
    import logging

    logging.getLogger("gunicorn.access").addFilter(_QuietProbes())


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
