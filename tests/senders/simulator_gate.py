"""The request gate every sender-API simulator shares: programmed faults, then auth."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request

from handlers.simulation import SimulatorState, SlidingWindowLimit


def install_gate(
    app: Flask,
    state: SimulatorState,
    authorised: Callable[[], bool],
    unauthorised_body: dict[str, Any],
    limit: SlidingWindowLimit | None = None,
    limited_body: dict[str, Any] | None = None,
) -> None:
    @app.before_request
    def gate() -> Any:
        if request.path.startswith("/_sim/"):
            return None
        fault = state.take_fault(request.path)
        if fault:
            if fault.delay_seconds:
                time.sleep(fault.delay_seconds)
            state.record(fault.status)
            return jsonify(fault.body or {"error": "simulated fault"}), fault.status
        if not authorised():
            state.record(401)
            return jsonify(unauthorised_body), 401
        if limit is not None:
            allowed, wait = limit.allow(request.headers.get("Authorization", "anon"))
            if not allowed:
                state.record(429)
                response = jsonify(limited_body or {"error": "rate limited"})
                response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                return response, 429
        return None
