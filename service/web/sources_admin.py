"""`POST /v1/sources/<name>/try`: the dry run of a configured source over the admin API (bearer token)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError

from service.domain.validators import flatten_messages
from service.pipeline.dry_run import sample_request, try_source
from service.runtime import Runtime
from service.web.admin import require_token
from service.web.api_schemas import TrySourceRequestSchema, TrySourceResultSchema
from service.web.openapi_parts import error_body, json_body
from service.web.webhooks import error_response

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
    request_body = request.get_json(silent=True)
    if not isinstance(request_body, dict):
        return error_response(
            400, "VALIDATION_ERROR", "expected a JSON object with a payload", {"payload": ["required"]}
        )
    try:
        spec = TrySourceRequestSchema().load(request_body)
    except ValidationError as exc:
        return error_response(400, "VALIDATION_ERROR", "bad dry-run request", flatten_messages(exc.messages))
    headers, query = spec.get("headers") or {}, spec.get("query") or {}
    payload = spec["payload"]
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    inbound = sample_request(
        name,
        body,
        headers,
        content_type=spec.get("content_type") or None,
        token=spec.get("token") or None,
        query=query,
    )
    check = bool(headers or spec.get("token") or query)
    return jsonify(try_source(adapter, inbound, runtime.config.route, check_signature=check)), 200


def try_source_openapi(sources: list[str]) -> dict[str, Any]:
    """This route's entry in the OpenAPI document (service/web/openapi.py merges it)."""
    return {
        "/v1/sources/{name}/try": {
            "post": {
                "summary": "Dry run: what a payload would become through this source (nothing is queued)",
                "operationId": "trySource",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sources},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": TrySourceRequestSchema}},
                },
                "responses": {
                    "200": json_body(
                        TrySourceResultSchema, "the commands, or every mapping and validation error"
                    ),
                    "400": error_body("the request is not a JSON object with a payload"),
                    "404": error_body("no such source"),
                    "401": error_body("a valid admin bearer token is required"),
                    "403": error_body("the admin API is off (server.admin_token is not set)"),
                },
            }
        }
    }
