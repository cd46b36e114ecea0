"""The OpenAPI operations of the admin API: the event log with its filters, replay (one event
or every dead letter a filter matches) and the overview."""

from __future__ import annotations

from typing import Any

from service.web.api_schemas import (
    BulkReplaySchema,
    EventFilterSchema,
    EventPageSchema,
    EventSchema,
    OverviewSchema,
    ProviderStateSchema,
    ProviderStatesSchema,
    ReplaySchema,
)
from service.web.openapi_parts import error_body, json_body

FILTER_PARAMETERS: list[dict[str, Any]] = [{"in": "query", "schema": EventFilterSchema}]


ADMIN_ERRORS = {
    "401": error_body("a valid admin bearer token is required"),
    "403": error_body("the admin API is off (server.admin_token is not set)"),
}
COMMAND_ID = {
    "name": "command_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}


def admin_paths() -> dict[str, Any]:
    return {
        "/v1/events": {
            "get": {
                "summary": "List events (commands) with their delivery status",
                "operationId": "listEvents",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [
                    *FILTER_PARAMETERS,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": json_body(
                        EventPageSchema,
                        "a page of events; pass next_after as `after` for the next page",
                    ),
                    "400": error_body("bad query"),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/v1/events/{command_id}": {
            "get": {
                "summary": "One event: the command and every delivery",
                "operationId": "getEvent",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [COMMAND_ID],
                "responses": {
                    "200": json_body(EventSchema, "the event"),
                    "404": error_body("no such event"),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/v1/events/{command_id}/replay": {
            "post": {
                "summary": "Replay dead-lettered deliveries of an event (fresh retry budget)",
                "operationId": "replayEvent",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [COMMAND_ID, {"name": "provider", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": json_body(ReplaySchema, "nothing to replay"),
                    "202": json_body(ReplaySchema, "deliveries queued again"),
                    "404": error_body("no such event"),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/v1/events/replay": {
            "post": {
                "summary": "Replay every dead-lettered delivery a filter matches; dry_run only counts them",
                "operationId": "replayMatching",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [
                    *FILTER_PARAMETERS,
                    {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                ],
                "requestBody": {
                    "required": False,
                    "description": "the same fields as the query (a body field wins)",
                    "content": {
                        "application/json": {"schema": {"type": "object", "additionalProperties": True}}
                    },
                },
                "responses": {
                    "200": json_body(BulkReplaySchema, "a dry run, or nothing matched"),
                    "202": json_body(BulkReplaySchema, "deliveries queued again"),
                    "400": error_body("bad filter"),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/v1/overview": {
            "get": {
                "summary": "Per provider and per source counts and per-minute series over the last hour",
                "operationId": "overview",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "responses": {
                    "200": json_body(OverviewSchema, "the overview"),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/v1/providers": {
            "get": {
                "summary": "Every configured provider: paused or not, and its circuit breaker",
                "operationId": "listProviders",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "responses": {
                    "200": json_body(
                        ProviderStatesSchema,
                        "provider states by name",
                    ),
                    "503": error_body("the state store cannot answer"),
                    **ADMIN_ERRORS,
                },
            }
        },
        **{
            f"/v1/providers/{{name}}/{action}": {
                "post": {
                    "summary": summary,
                    "operationId": f"{action}Provider",
                    "tags": ["admin"],
                    "security": [{"adminToken": []}],
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": json_body(ProviderStateSchema, "the provider's state now"),
                        "404": error_body("no such provider"),
                        "503": error_body("the state store cannot answer"),
                        **ADMIN_ERRORS,
                    },
                }
            }
            for action, summary in (
                ("pause", "Hold a provider's deliveries (they wait, visibly; nothing is dropped)"),
                ("resume", "Resume a provider: not paused, circuit closed (also one opened by 401/403)"),
            )
        },
    }
