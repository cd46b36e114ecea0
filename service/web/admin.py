"""The admin API: the event log, replay (one or by filter) and the overview, behind a bearer token (`server.admin_token`)."""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from service.runtime import Runtime
from service.web.event_filters import parse_event_filter, whole_events
from service.web.webhooks import error_response

admin = Blueprint("admin", __name__, url_prefix="/v1")

SQLITE_MAX_INT = 2**63 - 1


def _runtime() -> Runtime:
    return current_app.extensions["leadrelay"]


@admin.before_request
def require_token() -> Any:
    expected = _runtime().config["server"].get("admin_token")
    if not expected:
        return error_response(403, "ADMIN_DISABLED", "the admin API is off: set server.admin_token")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return error_response(401, "UNAUTHORIZED", "a valid admin bearer token is required")
    return None


@admin.get("/events")
def list_events() -> Any:
    event_filter, errors = parse_event_filter(request.args)
    try:
        limit = min(max(int(request.args.get("limit", 100)), 1), 1000)
        # Clamped to SQLite's INTEGER range: a larger cursor is simply "after everything".
        after = min(max(int(request.args.get("after", 0)), 0), SQLITE_MAX_INT)
    except ValueError:
        errors["limit"] = ["limit and after must be integers"]
    if errors:
        return error_response(400, "VALIDATION_ERROR", "bad query", errors)
    rows = _runtime().store.list_events(event_filter, limit=limit + 1, after_seq=after)
    events, _ = whole_events(rows, limit)
    return jsonify({"events": events, "next_after": events[-1]["seq"] if events else after})


@admin.post("/events/replay")
def replay_matching() -> Any:
    """Bulk replay of the dead letters a filter matches; `dry_run` only counts them."""
    # The body was read before the view (a chunked one has no Content-Length): empty means no filter.
    body = request.get_json(silent=True) if request.get_data(cache=True) else {}
    if not isinstance(body, dict):
        return error_response(400, "VALIDATION_ERROR", "the body must be a JSON object")
    arguments = {**request.args.to_dict(), **{k: str(v) for k, v in body.items() if v is not None}}
    event_filter, errors = parse_event_filter(arguments)
    flag = body.get("dry_run", request.args.get("dry_run", False))
    dry_run = flag if isinstance(flag, bool) else str(flag).lower() in ("1", "true", "yes")
    if not isinstance(flag, bool) and str(flag).lower() not in ("1", "true", "yes", "0", "false", "no", ""):
        errors["dry_run"] = ["must be true or false"]  # never guess "for real" from a nonsense value
    if errors:
        return error_response(400, "VALIDATION_ERROR", "bad filter", errors)
    store = _runtime().store
    counts = store.replay_matching(event_filter, dry_run=dry_run)
    return jsonify({"dry_run": dry_run, **counts}), 200 if dry_run or not counts["deliveries"] else 202


@admin.get("/overview")
def overview() -> Any:
    store = _runtime().store
    return jsonify(store.overview(time.time()))


@admin.get("/events/<path:command_id>")
def show_event(command_id: str) -> Any:
    event = _runtime().store.get_event(command_id)
    if event is None:
        return error_response(404, "NOT_FOUND", f"no event {command_id!r}")
    return jsonify(event)


@admin.post("/events/<path:command_id>/replay")
def replay_event(command_id: str) -> Any:
    runtime = _runtime()
    provider = request.args.get("provider")
    event = runtime.store.get_event(command_id)
    if event is None:
        return error_response(404, "NOT_FOUND", f"no event {command_id!r}")
    routed = None
    if event["status"] == "unrouted":
        routed = runtime.config.route(event["source"], event["event_type"])
    providers = runtime.store.replay(command_id, provider=provider, routed=routed)
    return jsonify(
        {
            "status": "replaying" if providers else "nothing_to_replay",
            "command_id": command_id,
            "providers": providers,
        }
    ), 202 if providers else 200
