"""`POST /v1/sources/<name>/try`: the dry run of a configured source over the admin API (bearer token)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from service.admin import require_token
from service.pipeline.dry_run import sample_request, try_source
from service.runtime import Runtime
from service.webhooks import error_response

sources_admin = Blueprint("sources_admin", __name__, url_prefix="/v1")
sources_admin.before_request(require_token)


@sources_admin.post("/sources/<name>/try")
def try_configured_source(name: str) -> Any:
    """Body: {"payload": <JSON value, or the raw body as a string>, "headers": {...},
    "content_type": "...", "token": "...", "query": {...}}. Nothing is queued."""
    runtime: Runtime = current_app.extensions["leadrelay"]
    adapter = runtime.adapters.get(name)
    if adapter is None:
        return error_response(404, "UNKNOWN_SOURCE", f"no source named {name!r} is configured")
    spec = request.get_json(silent=True)
    if not isinstance(spec, dict) or "payload" not in spec:
        return error_response(
            400, "VALIDATION_ERROR", "expected a JSON object with a payload", {"payload": ["required"]}
        )
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return error_response(400, "VALIDATION_ERROR", "bad headers", {"headers": ["an object of strings"]})
    payload = spec["payload"]
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    content_type = spec.get("content_type")
    inbound = sample_request(
        name,
        body,
        headers,
        content_type=str(content_type) if content_type else None,
        token=str(spec["token"]) if spec.get("token") else None,
        query={str(k): str(v) for k, v in (spec.get("query") or {}).items()},
    )
    check = bool(headers or spec.get("token") or spec.get("query"))
    return jsonify(try_source(adapter, inbound, runtime.config.route, check_signature=check)), 200
