"""The OpenAPI document for every JSON route: the inbound webhooks, the admin API, health,
metrics and this document itself, served at `GET /openapi.json` (the console's HTML pages
under /console/ are described in docs/console.md).

Built from the running configuration, so the `source` parameter lists exactly the senders
this deployment accepts. tests/senders/openapi keeps it in step with Flask's url_map and
runs schemathesis against it.
"""

from __future__ import annotations

import copy
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify

from service.web.api_schemas import COMPONENTS, HealthSchema, ReadinessSchema, WebhookResultSchema
from service.web.openapi_admin import admin_paths
from service.web.openapi_parts import error_body as _error
from service.web.openapi_parts import json_body as _json
from service.web.openapi_parts import text_body as _text
from service.web.sources_admin import try_source_openapi

openapi = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"
SOAP = {"text/xml": {"schema": {"type": "string"}}}


def _webhook_post(sources: list[str], with_token: bool) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "source",
            "in": "path",
            "required": True,
            "description": "a configured source name (its `type` picks the adapter)",
            "schema": {"type": "string", "enum": sources} if sources else {"type": "string"},
        }
    ]
    if with_token:
        parameters.append(
            {
                "name": "token",
                "in": "path",
                "required": True,
                "description": "the secret URL token, for senders that sign nothing (Unbounce)",
                "schema": {"type": "string", "minLength": 1},
            }
        )
    operation: dict[str, Any] = {
        "summary": "Receive a sender's webhook" + (" (secret token in the URL)" if with_token else ""),
        "description": "Each source verifies the request its own way (see docs/senders/): HubSpot "
        "`X-HubSpot-Signature-v3`, Typeform `Typeform-Signature`, Meta `X-Hub-Signature-256`, Pipedrive "
        "HTTP basic auth, Calendly `Calendly-Webhook-Signature`, Webflow `x-webflow-signature`, Unbounce "
        "the URL token, Google Ads the `google_key` in the body, generic Standard Webhooks headers, mapped "
        "sources their configured preset, Salesforce the OrganizationId (answers in SOAP, `text/xml`).",
        "operationId": "receiveWebhookWithToken" if with_token else "receiveWebhook",
        "tags": ["webhooks"],
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"description": "the sender's own payload"}},
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "description": "Unbounce: page fields plus data.json",
                        "properties": {"data.json": {"type": "string"}, "page_id": {"type": "string"}},
                    }
                },
                "multipart/form-data": {"schema": {"type": "object", "description": "mapped sources"}},
                "text/xml": {"schema": {"type": "string", "description": "Salesforce Outbound Messages"}},
            },
        },
        "responses": {
            "200": _json(
                WebhookResultSchema, "duplicate (already accepted) or ignored (unsupported event type)"
            ),
            "202": _json(WebhookResultSchema, "accepted: every command is durably queued"),
            "400": _error(
                "the payload fails the sender's schema (details per field), nests deeper than"
                " 64 levels, or the body could not be read (malformed chunked framing)"
            ),
            "401": _error("signature, timestamp or credentials missing or wrong; nothing queued"),
            "404": _error("no such source"),
            "413": _error("the body is larger than server.max_body_bytes"),
            "415": _error("not the media type this sender posts, or not UTF-8"),
            "503": _error(
                "cannot take the event now (queue, or a CRM/Graph look-up failed); retry: see Retry-After"
            ),
            "500": _error(
                "a bug in leadrelay (the answer names no internals); Salesforce: a SOAP Server fault, retry"
            ),
        },
    }
    for answer in operation["responses"].values():  # Salesforce: its SOAP Ack or a SOAP fault
        answer["content"].update(SOAP)
    return operation


def _handshake(sources: list[str]) -> dict[str, Any]:
    query = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("hub.mode", "hub.verify_token", "hub.challenge")
    ]
    return {
        "summary": "Verification handshake (Meta: echo hub.challenge when hub.verify_token matches)",
        "operationId": "webhookHandshake",
        "tags": ["webhooks"],
        "parameters": [
            {
                "name": "source",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": sources} if sources else {"type": "string"},
            },
            *query,
        ],
        "responses": {
            "200": _text("the hub.challenge value"),
            "403": _text("wrong verify token or mode"),
            "404": _error("no such source"),
            "405": _error("this source accepts POST only"),
        },
    }


def _ops_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers",
                "operationId": "healthz",
                "tags": ["ops"],
                "responses": {"200": _json(HealthSchema, "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: queue writable, dedup store up, providers configured",
                "operationId": "readyz",
                "tags": ["ops"],
                "responses": {
                    "200": _json(ReadinessSchema, "ready"),
                    "503": _json(ReadinessSchema, "not ready, with reasons"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "tags": ["ops"],
                "responses": {"200": _text("Prometheus text exposition format")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "tags": ["ops"],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
    }


def build_openapi(config: dict[str, Any]) -> dict[str, Any]:
    """The document: operations written here and beside their routes, every body schema a marshmallow class."""
    sources = sorted(name for name, s in (config.get("sources") or {}).items() if s.get("enabled", True))
    spec = APISpec(
        title="leadrelay",
        version="1",
        openapi_version=OPENAPI_VERSION,
        info={"description": "Webhooks in from marketing tools and CRMs, lead updates out to providers."},
        plugins=[MarshmallowPlugin()],
    )
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    spec.components.security_scheme("adminToken", {"type": "http", "scheme": "bearer"})
    paths = {
        "/webhooks/{source}": {"post": _webhook_post(sources, False), "get": _handshake(sources)},
        "/webhooks/{source}/{token}": {"post": _webhook_post(sources, True)},
        **admin_paths(),
        **try_source_openapi(sources),
        **_ops_paths(),
    }
    for path, operations in paths.items():
        # The plugin replaces schema classes in place: hand it copies, the templates stay reusable.
        spec.path(path=path, operations=copy.deepcopy(operations))
    return spec.to_dict()


@openapi.get("/openapi.json")
def openapi_document() -> Any:
    return jsonify(build_openapi(current_app.config["LEADRELAY"]))
