"""An Octanist simulator that follows the documented contract (seed 004 and the wider docs).

- `PATCH /api/leads` with `X-API-KEY`: the lead is matched by `id`, else `email`
  (case-insensitive), else `phone`; `status` / `changedTo` in `qualified | won | lost`
  (`status` wins); `value` a number or numeric string; `note`; `lossReason` kept only with `lost`.
- `GET /api/leads/{id}`.
- wrong or missing key: 401 `UNAUTHORIZED`; not a JSON object, no identifier, an unknown
  field or a bad value: 400 `VALIDATION_ERROR`; nothing matches: 404 `NOT_FOUND`; several
  leads match an email/phone and bulk updates are off: 409 `CONFLICT`. No rate limit by
  default (the docs say there is none), one can be set for tests.
Every call is recorded (`GET /_sim/calls`).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Any

from flask import Flask, Response, jsonify, request

from handlers.simulation import is_control_request, simulator_app

STATUSES = ("qualified", "won", "lost")
FIELDS = {"id", "email", "phone", "status", "changedTo", "value", "note", "lossReason"}


def _meta() -> dict[str, str]:
    return {
        "requestId": f"req_{uuid.uuid4().hex[:12]}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }


def _error(status: int, code: str, message: str, details: Any = None) -> tuple[Response, int]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return jsonify({"success": False, "error": error, "meta": _meta()}), status


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value or "") if ch.isdigit())


class OctanistStore:
    def __init__(self) -> None:
        self.leads: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def add(self, fields: dict[str, Any]) -> str:
        lead_id = str(fields.get("id") or f"lead_{next(self._ids):06d}")
        with self.lock:
            self.leads[lead_id] = {
                "id": lead_id,
                "name": fields.get("name"),
                "email": fields.get("email"),
                "phone": fields.get("phone"),
                "status": fields.get("status", "open"),
                "value": fields.get("value"),
                "note": fields.get("note"),
                "lossReason": fields.get("lossReason"),
            }
        return lead_id

    def match(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Octanist's priority: id, then email, then phone (only the first one given counts)."""
        if body.get("id"):
            lead = self.leads.get(str(body["id"]))
            return [lead] if lead else []
        if body.get("email"):
            email = str(body["email"]).strip().lower()
            return [lead for lead in self.leads.values() if (lead.get("email") or "").lower() == email]
        phone = _digits(body.get("phone"))
        return [lead for lead in self.leads.values() if phone and _digits(lead.get("phone")) == phone]


def validate_update(body: Any) -> tuple[Response, int] | None:
    if not isinstance(body, dict):
        return _error(400, "VALIDATION_ERROR", "Invalid JSON")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        return _error(400, "VALIDATION_ERROR", f"Unknown field(s): {', '.join(unknown)}", {"fields": unknown})
    if not any(body.get(key) for key in ("id", "email", "phone")):
        return _error(400, "VALIDATION_ERROR", "At least one of id, email, or phone is required")
    for key in ("status", "changedTo"):
        if key in body and body[key] not in STATUSES:
            return _error(
                400, "VALIDATION_ERROR", f"{key} must be one of: {', '.join(STATUSES)}", {"field": key}
            )
    if "value" in body:
        value = body["value"]
        try:
            if isinstance(value, bool) or value is None:
                raise ValueError
            float(value)
        except (TypeError, ValueError):
            return _error(400, "VALIDATION_ERROR", "value must be a number", {"field": "value"})
    for key in ("note", "lossReason"):
        if key in body and not isinstance(body[key], str):
            return _error(400, "VALIDATION_ERROR", f"{key} must be a string", {"field": key})
    return None


def create_octanist_simulator(
    api_key: str = "octanist-sim-key",
    rate_limit: tuple[int | None, float] = (None, 1.0),
    allow_bulk_updates: bool = False,
) -> Flask:
    store = OctanistStore()
    app, state, limit = simulator_app(
        "octanist-simulator",
        store,
        rate_limit,
        {"success": False, "error": {"code": "INTERNAL_ERROR", "message": "Server error"}},
        error=_error,
    )

    @app.before_request
    def gate() -> Any:
        if is_control_request():
            return None
        if request.headers.get("X-API-KEY") != api_key:
            state.record(401)
            return _error(401, "UNAUTHORIZED", "Invalid or missing API key")
        allowed, wait = limit.allow(api_key)
        if not allowed:
            state.record(429)
            answer, status = _error(429, "RATE_LIMITED", "Too many requests")
            answer.headers["Retry-After"] = str(max(1, round(wait)))
            return answer, status
        return None

    @app.patch("/api/leads")
    def update_lead() -> Any:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
        invalid = validate_update(body)
        if invalid:
            state.record(400)
            return invalid
        with store.lock:
            matches = store.match(body)
            if not matches:
                state.record(404)
                return _error(404, "NOT_FOUND", "No lead found matching the provided identifiers")
            if len(matches) > 1 and not allow_bulk_updates:
                state.record(409)
                return _error(
                    409,
                    "CONFLICT",
                    "Multiple leads match; provide a more specific identifier",
                    {"matches": len(matches)},
                )
            status = body.get("status", body.get("changedTo"))
            for lead in matches:
                if status:
                    lead["status"] = status
                if "value" in body:
                    lead["value"] = float(body["value"])
                if "note" in body:
                    lead["note"] = body["note"]
                if status == "lost" and "lossReason" in body:
                    lead["lossReason"] = body["lossReason"]
        state.record(200)
        return jsonify(
            {
                "success": True,
                "data": {
                    "leadId": matches[0]["id"],
                    "leadsUpdated": len(matches),
                    "message": "Lead updated successfully",
                },
                "meta": _meta(),
            }
        )

    @app.get("/api/leads/<lead_id>")
    def get_lead(lead_id: str) -> Any:
        with store.lock:
            lead = dict(store.leads[lead_id]) if lead_id in store.leads else None
        if lead is None:
            state.record(404)
            return _error(404, "NOT_FOUND", "Lead not found")
        state.record(200)
        return jsonify({"success": True, "data": lead, "meta": _meta()})

    return app
