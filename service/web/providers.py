"""The provider controls in the admin API: breaker state per provider, operator pause and resume.

`GET /v1/providers`, `POST /v1/providers/<name>/pause`, `POST /v1/providers/<name>/resume`.
A pause or resume is written to the shared store; every dispatcher picks it up within a
second (its gate re-reads the controls). A paused provider's deliveries wait, visibly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify

from service.domain.state import ProviderControl, StateUnavailable
from service.pipeline.breaker import paused, resumed
from service.web.admin import require_token
from service.web.webhooks import error_response

providers_api = Blueprint("providers_api", __name__, url_prefix="/v1")
providers_api.before_request(require_token)  # the same bearer token as the rest of the admin API


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def provider_states(runtime: Any) -> dict[str, dict[str, Any]]:
    """Every configured provider's control (closed and not paused when none was written)."""
    controls: dict[str, ProviderControl] = runtime.store.provider_controls()
    now = time.time()
    states = {}
    for name in runtime.config.providers:
        control = controls.get(name) or ProviderControl(provider=name)
        states[name] = {
            "paused": control.paused,
            "breaker": control.breaker,
            "reason": control.reason,
            "opened_at": _iso(control.opened_at),
            "open_seconds": round(now - control.opened_at, 1)
            if control.opened_at and control.breaker != "closed"
            else 0.0,
            "next_probe_at": _iso(control.next_probe_at) if control.breaker != "closed" else None,
            "probes": control.probes,
            "updated_at": _iso(control.updated_at),
        }
    return states


def _set(name: str, change: Callable[[ProviderControl, float], ProviderControl]) -> Any:
    runtime = current_app.extensions["leadrelay"]
    if name not in runtime.config.providers:
        return error_response(404, "NOT_FOUND", f"no provider {name!r}")
    try:
        current = runtime.store.provider_controls().get(name) or ProviderControl(provider=name)
        runtime.store.put_provider_control(change(current, time.time()))
        state = provider_states(runtime)[name]
    except StateUnavailable as exc:
        return error_response(503, "STATE_UNAVAILABLE", f"provider controls unavailable: {exc}")
    return jsonify({"provider": name, **state})


@providers_api.get("/providers")
def list_providers() -> Any:
    try:
        return jsonify({"providers": provider_states(current_app.extensions["leadrelay"])})
    except StateUnavailable as exc:
        return error_response(503, "STATE_UNAVAILABLE", f"provider controls unavailable: {exc}")


@providers_api.post("/providers/<name>/pause")
def pause_provider(name: str) -> Any:
    return _set(name, paused)


@providers_api.post("/providers/<name>/resume")
def resume_provider(name: str) -> Any:
    """Not paused and the breaker closed (also one opened by 401/403): deliveries resume in order."""
    return _set(name, resumed)
