"""`/healthz` (the process answers) and `/readyz` (it can take work), plus `/metrics`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from handlers import HANDLER_KINDS
from service import metrics
from service.runtime import Runtime
from service.web.providers import provider_states

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


def readiness(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    config = runtime.config
    checks: dict[str, Any] = {"config": "loaded", "mode": config["mode"], "sandbox": config.sandbox}
    reasons: list[str] = []
    try:
        runtime.store.check_writable()
        checks["queue"] = "writable"
    except Exception as exc:  # any failure means not ready; the reason is reported
        reasons.append(f"queue not writable: {exc}")
    try:
        runtime.dedup.ping()
        checks["dedup"] = "ok"
    except Exception as exc:
        reasons.append(f"dedup store unavailable: {exc}")
    for name, check in runtime.extras.get("readiness_checks", {}).items():
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:
            reasons.append(f"{name} unavailable: {exc}")
    providers = config.enabled_providers()
    if not providers:
        reasons.append("no provider is configured")
    problems = {}
    for name, settings in providers.items():
        problem = HANDLER_KINDS[settings["type"]](name, settings).configuration_problem()
        if problem:
            problems[name] = problem
    checks["providers"] = {name: problems.get(name, "configured") for name in providers}
    try:
        # Reported, not a reason to refuse webhooks: an open breaker's deliveries wait, durably.
        checks["breakers"] = provider_states(runtime)
    except Exception as exc:  # the store's own check above already says why
        checks["breakers"] = f"unavailable: {exc}"
    if problems:
        reasons.extend(problems.values())
    unverified = sorted(name for name, adapter in runtime.adapters.items() if adapter.unverified)
    if unverified:
        # Declared on purpose (`verify: none`), so not a reason to be unready; shown so it is never a surprise.
        checks["unverified_sources"] = unverified
    if config.sandbox:
        checks["sandbox_notice"] = "SANDBOX MODE: providers are local simulators, no real CRM is called"
    checks["status"] = "ready" if not reasons else "not_ready"
    if reasons:
        checks["reasons"] = reasons
    return not reasons, checks


@health.get("/readyz")
def readyz() -> Any:
    ready, checks = readiness(current_app.extensions["leadrelay"])
    return jsonify(checks), 200 if ready else 503


@health.get("/metrics")
def metrics_endpoint() -> Response:
    payload, content_type = metrics.render()
    return Response(payload, content_type=content_type)
