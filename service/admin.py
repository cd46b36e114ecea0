"""The admin API: the event log and replay, behind a bearer token (`server.admin_token`)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from service.domain.state import EventFilter
from service.domain.statuses import DeliveryStatus
from service.runtime import Runtime
from service.state import SqlStateStore
from service.webhooks import error_response

admin = Blueprint("admin", __name__, url_prefix="/v1")

SQLITE_MAX_INT = 2**63 - 1
EVENT_STATUSES = tuple(DeliveryStatus)


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
    status = request.args.get("status")
    if status and status not in EVENT_STATUSES:
        return error_response(
            400, "VALIDATION_ERROR", "bad query", {"status": [f"must be one of {', '.join(EVENT_STATUSES)}"]}
        )
    try:
        limit = min(max(int(request.args.get("limit", 100)), 1), 1000)
        # Clamped to SQLite's INTEGER range: a larger cursor is simply "after everything".
        after = min(max(int(request.args.get("after", 0)), 0), SQLITE_MAX_INT)
    except ValueError:
        return error_response(400, "VALIDATION_ERROR", "bad query", {"limit": ["must be an integer"]})
    try:
        since = float(request.args["since"]) if "since" in request.args else None
        until = float(request.args["until"]) if "until" in request.args else None
    except ValueError:
        return error_response(400, "VALIDATION_ERROR", "bad query", {"since": ["epoch seconds"]})
    event_filter = EventFilter(
        status=status,
        provider=request.args.get("provider"),
        source=request.args.get("source"),
        event_type=request.args.get("event_type"),
        lead=request.args.get("lead"),
        since=since,
        until=until,
    )
    store = _runtime().store
    if isinstance(store, SqlStateStore):
        events = store.list_events(event_filter, limit=limit, after_seq=after)
    else:  # the Redis event log (distributed mode until it moves to PostgreSQL) filters by status and provider only
        events = store.list_events(
            status=status, provider=event_filter.provider, limit=limit, after_seq=after
        )
    return jsonify({"events": events, "next_after": events[-1]["seq"] if events else after})


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
