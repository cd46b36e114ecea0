"""A PollyBot simulator that follows the documented contract (seed 003 and the wider docs).

- `PUT /api/v1/leads/{leadId}` (and the chatbot-scoped `/api/v1/chatbots/{id}/leads/{leadId}`):
  a partial update; `metadata` keys merged, arrays replaced, `null` clears.
- `GET /api/v1/leads?search=&page=&limit=` (fuzzy search over name and email), `GET /api/v1/leads/{id}`.
- `Authorization: Bearer <key>`: missing 401 `MISSING_AUTH_HEADER`, wrong 401 `INVALID_API_KEY`;
  a body that is not a JSON object, an unknown field or status: 400 `VALIDATION_ERROR` with
  `details`; another lead's email: 409 `DUPLICATE_EMAIL` with `existingLeadId`; unknown lead: 404;
  more than the limit (1,000 per sliding hour per key): 429 with `Retry-After`. Every answer to
  an authorised call carries `X-RateLimit-Limit/Remaining/Reset` (unix seconds)/`Used`.
Every call is recorded (`GET /_sim/calls`).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request

from handlers.simulation import is_control_request, simulator_app

STATUSES = ("new", "contacted", "qualified", "converted", "lost", "follow_up")
UPDATABLE = {"name", "email", "phone", "source", "status", "metadata"}


def _error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> tuple[Response, int]:
    body: dict[str, Any] = {"success": False, "error": message, "code": code}
    if details is not None:
        body["details"] = details
    return jsonify(body), status


class PollyBotStore:
    def __init__(self) -> None:
        self.leads: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def add(self, fields: dict[str, Any]) -> str:
        lead_id = str(fields.get("id") or f"lead_{next(self._ids):016x}")
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.lock:
            self.leads[lead_id] = {
                "id": lead_id,
                "name": fields.get("name"),
                "email": fields.get("email"),
                "phone": fields.get("phone"),
                "source": fields.get("source"),
                "status": fields.get("status", "new"),
                "metadata": dict(fields.get("metadata") or {}),
                "createdAt": now,
                "updatedAt": now,
                "workspaceId": "ws_simulator",
            }
        return lead_id


def validate_update(body: Any) -> tuple[Response, int] | None:
    if not isinstance(body, dict):
        return _error(400, "VALIDATION_ERROR", "Validation failed", {"message": "Body must be a JSON object"})
    for key in body:
        if key not in UPDATABLE:
            return _error(
                400,
                "VALIDATION_ERROR",
                "Validation failed",
                {"field": key, "message": f"Unknown field; allowed: {', '.join(sorted(UPDATABLE))}"},
            )
    if "status" in body and body["status"] not in STATUSES:
        return _error(
            400,
            "VALIDATION_ERROR",
            "Validation failed",
            {
                "field": "status",
                "value": body["status"],
                "message": f"Status must be one of: {', '.join(STATUSES)}",
            },
        )
    if "metadata" in body and body["metadata"] is not None and not isinstance(body["metadata"], dict):
        return _error(
            400,
            "VALIDATION_ERROR",
            "Validation failed",
            {"field": "metadata", "message": "Must be an object"},
        )
    for key in ("name", "email", "phone", "source"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return _error(
                400, "VALIDATION_ERROR", "Validation failed", {"field": key, "message": "Must be a string"}
            )
    return None


def apply_update(lead: dict[str, Any], body: dict[str, Any]) -> None:
    """PollyBot's documented merge: fields replaced, metadata keys merged, arrays replaced,
    `null` clears (a metadata key, or a whole field)."""
    for key, value in body.items():
        if key != "metadata":
            lead[key] = value
        elif value is None:
            lead["metadata"] = {}
        else:
            for meta_key, meta_value in value.items():
                if meta_value is None:
                    lead["metadata"].pop(meta_key, None)
                else:
                    lead["metadata"][meta_key] = meta_value
    lead["updatedAt"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def create_pollybot_simulator(
    api_key: str = "sk-workspace_sim", rate_limit: tuple[int | None, float] = (1000, 3600.0)
) -> Flask:
    store = PollyBotStore()
    app, state, limit = simulator_app(
        "pollybot-simulator",
        store,
        rate_limit,
        {"success": False, "error": "Internal error", "code": "INTERNAL_ERROR"},
        error=_error,
    )

    def rate_headers(used: int, reset_in: float) -> dict[str, str]:
        cap = limit.calls or 0
        return {
            "X-RateLimit-Limit": str(cap),
            "X-RateLimit-Remaining": str(max(0, cap - used)),
            "X-RateLimit-Reset": str(math.ceil(time.time() + (reset_in or limit.per_seconds))),
            "X-RateLimit-Used": str(used),
        }

    @app.before_request
    def gate() -> Any:
        if is_control_request():
            return None
        header = request.headers.get("Authorization")
        if not header:
            state.record(401)
            return _error(401, "MISSING_AUTH_HEADER", "Missing authorization header")
        if header != f"Bearer {api_key}":
            state.record(401)
            return _error(401, "INVALID_API_KEY", "Invalid API key")
        allowed, wait = limit.allow(api_key)
        if not allowed:
            state.record(429)
            answer, status = _error(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
            used, reset_in = limit.usage(api_key)
            answer.headers.update(rate_headers(used, reset_in))
            answer.headers["Retry-After"] = str(math.ceil(wait))
            return answer, status
        return None

    @app.after_request
    def add_rate_headers(response: Response) -> Response:
        if limit.calls and not request.path.startswith("/_sim/") and response.status_code not in (401, 429):
            response.headers.update(rate_headers(*limit.usage(api_key)))
        return response

    def update(lead_id: str) -> Any:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
        invalid = validate_update(body)
        if invalid:
            state.record(400)
            return invalid
        with store.lock:
            lead = store.leads.get(lead_id)
            if lead is None:
                state.record(404)
                return _error(404, "LEAD_NOT_FOUND", "Lead not found")
            email = body.get("email")
            if email:
                other = next(
                    (
                        other
                        for other in store.leads.values()
                        if other["id"] != lead_id and (other.get("email") or "").lower() == email.lower()
                    ),
                    None,
                )
                if other:
                    state.record(409)
                    return _error(
                        409,
                        "DUPLICATE_EMAIL",
                        "Email already exists",
                        {
                            "email": email,
                            "existingLeadId": other["id"],
                            "message": "A different lead with this email already exists in your workspace",
                        },
                    )
            apply_update(lead, body)
            data = {**lead, "metadata": dict(lead["metadata"])}
        state.record(200)
        return jsonify({"success": True, "data": data})

    @app.put("/api/v1/leads/<lead_id>")
    def update_lead(lead_id: str) -> Any:
        return update(lead_id)

    @app.put("/api/v1/chatbots/<chatbot_id>/leads/<lead_id>")
    def update_chatbot_lead(chatbot_id: str, lead_id: str) -> Any:
        return update(lead_id)

    @app.get("/api/v1/leads/<lead_id>")
    def get_lead(lead_id: str) -> Any:
        with store.lock:
            lead = store.leads.get(lead_id)
            data = {**lead, "metadata": dict(lead["metadata"])} if lead else None
        if data is None:
            state.record(404)
            return _error(404, "LEAD_NOT_FOUND", "Lead not found")
        state.record(200)
        return jsonify({"success": True, "data": data})

    @app.get("/api/v1/leads")
    def list_leads() -> Any:
        try:
            page = int(request.args.get("page", 1))
            size = int(request.args.get("limit", 10))
        except ValueError:
            page, size = 0, 0
        if page < 1 or not 1 <= size <= 100:
            state.record(400)
            return _error(
                400, "VALIDATION_ERROR", "Validation failed", {"message": "page >= 1, 1 <= limit <= 100"}
            )
        needle = (request.args.get("search") or "").lower()
        wanted_status = request.args.get("status")
        with store.lock:
            found = [
                {k: lead[k] for k in ("id", "name", "email", "phone", "status", "createdAt")}
                for lead in store.leads.values()
                if (
                    not needle
                    or needle in (lead.get("email") or "").lower()
                    or needle in (lead.get("name") or "").lower()
                )
                and (not wanted_status or lead["status"] == wanted_status)
            ]
        total = len(found)
        pages = max(1, math.ceil(total / size))
        state.record(200)
        return jsonify(
            {
                "success": True,
                "data": {
                    "leads": found[(page - 1) * size : page * size],
                    "pagination": {
                        "page": page,
                        "limit": size,
                        "total": total,
                        "totalPages": pages,
                        "hasNext": page < pages,
                        "hasPrev": page > 1,
                    },
                },
            }
        )

    return app
