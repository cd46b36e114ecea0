"""What every provider simulator shares: a call log, programmable faults, a sliding-window
limit, and serving a Flask app on a loopback port in a thread (tests, demo, benchmarks).

Control endpoints live under `/_sim/` so they never collide with a provider path:
`GET /_sim/calls`, `POST /_sim/reset`, `POST /_sim/faults` (`{"path": "...", "status": 500,
"count": 2, "body": {...}, "headers": {...}, "delay_seconds": 0}`), `POST /_sim/latency`
(`{"seconds": 0.05}`), `POST /_sim/leads` (seed leads).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Flask, Response, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server


class SlidingWindowLimit:
    """At most `calls` in any `per_seconds` window, per key (the documented provider limit)."""

    def __init__(self, calls: int | None, per_seconds: float) -> None:
        self.calls = calls
        self.per_seconds = per_seconds
        self._hits: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, float]:
        """(allowed, seconds until a slot frees)."""
        if not self.calls:
            return True, 0.0
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.per_seconds:
                hits.popleft()
            if len(hits) >= self.calls:
                return False, hits[0] + self.per_seconds - now
            hits.append(now)
            return True, 0.0

    def usage(self, key: str) -> tuple[int, float]:
        """(calls in the current window, seconds until the oldest of them leaves it)."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.per_seconds:
                hits.popleft()
            return len(hits), (hits[0] + self.per_seconds - now) if hits else 0.0

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


@dataclass
class Fault:
    path: str  # substring of the request path
    status: int
    count: int
    body: Any = None
    delay_seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SimulatorState:
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rejected_429: int = 0
    latency_seconds: float = 0.0  # added to every provider call (crash and load tests)

    def record(self, status: int) -> None:
        body = request.get_data(as_text=True)
        with self.lock:
            self.calls.append(
                {
                    "at": time.time(),
                    "method": request.method,
                    "path": request.path,
                    "query": request.args.to_dict(),
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                    "body": body,
                    "json": request.get_json(silent=True),
                    "status": status,
                }
            )
            if status == 429:
                self.rejected_429 += 1

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path in path and fault.count > 0:
                    fault.count -= 1
                    return fault
        return None


def serve_fault(state: SimulatorState, default_body: Any) -> tuple[Response, int] | None:
    """Answer with a programmed fault for this path, if one is armed."""
    fault = state.take_fault(request.path)
    if fault is None:
        return None
    if fault.delay_seconds:
        time.sleep(fault.delay_seconds)
    state.record(fault.status)
    answer = jsonify(fault.body if fault.body is not None else default_body)
    answer.headers.update(fault.headers)
    return answer, fault.status


def add_control_routes(
    app: Flask, state: SimulatorState, reset_extra: Any = None, seed_leads: Any = None
) -> None:
    @app.get("/_sim/calls")
    def sim_calls() -> Response:
        with state.lock:
            return jsonify({"calls": list(state.calls), "rejected_429": state.rejected_429})

    @app.post("/_sim/reset")
    def sim_reset() -> Response:
        with state.lock:
            state.calls.clear()
            state.faults.clear()
            state.rejected_429 = 0
        if reset_extra:
            reset_extra()
        return jsonify({"ok": True})

    @app.post("/_sim/latency")
    def sim_latency() -> Response:
        state.latency_seconds = float(request.get_json(force=True).get("seconds", 0))
        return jsonify({"ok": True})

    @app.post("/_sim/faults")
    def sim_faults() -> Response:
        spec = request.get_json(force=True)
        with state.lock:
            state.faults.append(
                Fault(
                    path=spec.get("path", ""),
                    status=int(spec["status"]),
                    count=int(spec.get("count", 1)),
                    body=spec.get("body"),
                    delay_seconds=float(spec.get("delay_seconds", 0)),
                    headers=dict(spec.get("headers") or {}),
                )
            )
        return jsonify({"ok": True})

    @app.delete("/_sim/faults")
    def sim_clear_faults() -> Response:
        """The outage is over: every programmed fault is dropped (the call log is kept)."""
        with state.lock:
            state.faults.clear()
        return jsonify({"ok": True})

    if seed_leads:

        @app.post("/_sim/leads")
        def sim_leads() -> Response:
            return jsonify(seed_leads(request.get_json(force=True)))


class LeadStore(Protocol):
    lock: threading.Lock
    leads: dict[str, Any]

    def add(self, fields: dict[str, Any]) -> str: ...


def simulator_app(
    name: str,
    store: LeadStore,
    rate_limit: tuple[int | None, float],
    fault_body: Any,
    on_reset: Callable[[], None] | None = None,
    error: Callable[[int, str, str], Any] | None = None,
) -> tuple[Flask, SimulatorState, SlidingWindowLimit]:
    """A simulator's Flask app with what every simulator shares: the control routes, seeding,
    reset, and a first gate that adds latency and serves programmed faults. The provider's
    own gate (auth, limit) runs next and should pass `is_control_request()` through.
    `error(status, code, message)` renders unknown paths and methods in the provider's shape."""
    app = Flask(name)
    state = SimulatorState()
    limit = SlidingWindowLimit(rate_limit[0], rate_limit[1])
    app.extensions.update(sim_state=state, sim_store=store, sim_limit=limit)

    def seed(leads: list[dict[str, Any]]) -> dict[str, Any]:
        return {"ids": [store.add(lead) for lead in leads]}

    def reset() -> None:
        limit.reset()
        if on_reset:
            on_reset()
        with store.lock:
            store.leads.clear()

    add_control_routes(app, state, reset_extra=reset, seed_leads=seed)

    @app.before_request
    def latency_and_faults() -> Any:
        if is_control_request():
            return None
        if state.latency_seconds:
            time.sleep(state.latency_seconds)
        return serve_fault(state, fault_body)

    if error is not None:

        @app.errorhandler(404)
        def not_found(_: Any) -> Any:
            state.record(404)
            return error(404, "NOT_FOUND", "Not found")

        @app.errorhandler(405)
        def not_allowed(_: Any) -> Any:
            state.record(405)
            return error(405, "METHOD_NOT_ALLOWED", "Method not allowed")

    return app, state, limit


def is_control_request() -> bool:
    return request.path.startswith("/_sim/")


class ServedApp:
    """A WSGI app on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        # A short poll interval keeps shutdown() quick (tests start and stop many servers).
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim:{self.url}",
            daemon=True,
        )

    def start(self) -> ServedApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
