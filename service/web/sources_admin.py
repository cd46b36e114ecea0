"""`POST /v1/sources/<name>/try`: the dry run of a configured source over the admin API (bearer token)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from service.pipeline.dry_run import sample_request, try_source
from service.runtime import Runtime
from service.web.admin import require_token
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
    spec = request.get_json(silent=True)
    if not isinstance(spec, dict) or "payload" not in spec:
        return error_response(
            400, "VALIDATION_ERROR", "expected a JSON object with a payload", {"payload": ["required"]}
        )
    headers, query = spec.get("headers") or {}, spec.get("query") or {}
    for name, value in (("headers", headers), ("query", query)):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            return error_response(400, "VALIDATION_ERROR", f"bad {name}", {name: ["an object of strings"]})
    payload = spec["payload"]
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    content_type = spec.get("content_type")
    inbound = sample_request(
        name,
        body,
        headers,
        content_type=str(content_type) if content_type else None,
        token=str(spec["token"]) if spec.get("token") else None,
        query=query,
    )
    check = bool(headers or spec.get("token") or query)
    return jsonify(try_source(adapter, inbound, runtime.config.route, check_signature=check)), 200


def try_source_openapi(sources: list[str]) -> dict[str, Any]:
    """This route's entry in the OpenAPI document (service/web/openapi.py merges it)."""
    error = {"$ref": "#/components/schemas/Error"}

    def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    request_body = {
        "type": "object",
        "required": ["payload"],
        "properties": {
            "payload": {"description": "the body as the sender posts it: a JSON value, or the raw text"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "content_type": {"type": "string"},
            "token": {"type": "string"},
            "query": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    result = {
        "type": "object",
        "required": ["ok", "commands", "errors", "ignored", "verification"],
        "properties": {
            "ok": {"type": "boolean"},
            "source": {"type": "string"},
            "verification": {"type": "string"},
            "commands": {"type": "array", "items": {"type": "object"}},
            "ignored": {"type": "array", "items": {"type": "string"}},
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
    }
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
                "requestBody": {"required": True, "content": {"application/json": {"schema": request_body}}},
                "responses": {
                    "200": answer("the commands, or every mapping and validation error", result),
                    "400": answer("the request is not a JSON object with a payload", error),
                    "404": answer("no such source", error),
                    "401": answer("a valid admin bearer token is required", error),
                    "403": answer("the admin API is off (server.admin_token is not set)", error),
                },
            }
        }
    }
