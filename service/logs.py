"""Structured JSON logs: one object per line, the request or command id on every line,
and every line passed through the redactor (secrets never reach a log)."""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from service.domain.redact import redact

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
command_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("command_id", default=None)


def _reset_request_ids() -> None:
    global _request_id_prefix, _request_id_counter
    _request_id_prefix = os.urandom(8).hex()
    _request_id_counter = itertools.count()


_request_id_prefix = ""
_request_id_counter = itertools.count()
_reset_request_ids()
# A forked gunicorn worker draws a prefix of its own: two workers never share one.
os.register_at_fork(after_in_child=_reset_request_ids)


def new_request_id() -> str:
    """32 hex digits like uuid4().hex: a random 64-bit prefix drawn once per process, then a
    counter. Unique across workers and restarts as uuid4 was, at a seventh of its cost (no
    urandom read per request); `next` on a count is atomic under the GIL."""
    return f"{_request_id_prefix}{next(_request_id_counter):016x}"


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id_var.get():
            entry["request_id"] = request_id_var.get()
        if command_id_var.get() and "command_id" not in record.__dict__:
            entry["command_id"] = command_id_var.get()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


# gunicorn access-log atoms -> our field names. The path is `U` (no query string: a query
# can carry credentials) and the request id is the X-Request-Id the app echoes back.
ACCESS_FIELDS = {
    "method": "m",
    "path": "U",
    "status": "s",
    "bytes": "B",
    "duration_ms": "M",
    "remote": "h",
    "request_id": "{x-request-id}o",
    "command_id": "{x-command-id}o",  # a webhook that queued (or repeated) one command
    "user_agent": "a",
}


def _atom(atoms: Mapping[str, Any], name: str) -> Any:
    try:
        return atoms[name]
    except KeyError:
        return "-"


class AccessJsonFormatter(logging.Formatter):
    """gunicorn access records as JSON built from the atoms themselves, not from a format
    string: a quote in a user agent or path cannot break the line."""

    def format(self, record: logging.LogRecord) -> str:
        atoms = record.args if isinstance(record.args, Mapping) else {}
        entry: dict[str, Any] = {"ts": _timestamp(record), "level": "info", "logger": record.name}
        for name, atom in ACCESS_FIELDS.items():
            # gunicorn's SafeAtoms answers header atoms through [] only, never .get().
            value = _atom(atoms, atom)
            if value in ("-", None):
                continue
            entry[name] = int(value) if name in ("status", "duration_ms") and str(value).isdigit() else value
        if not atoms:
            entry["message"] = record.getMessage()
        return redact(json.dumps(entry, default=str))


class SkipPathsFilter(logging.Filter):
    """Leaves successful probe requests out of the access log (failing ones stay: they
    explain a pod leaving the Service)."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        super().__init__()
        self.paths = frozenset(paths)

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if not isinstance(atoms, Mapping):
            return True
        if _atom(atoms, "U") not in self.paths:
            return True
        return not str(_atom(atoms, "s")).startswith(("2", "3"))


class RedactingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "kafka", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
