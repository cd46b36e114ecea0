"""Building blocks of the OpenAPI operations: JSON, text and error responses (schemas are marshmallow classes)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from service.web.api_schemas import ErrorSchema


def json_body(schema: type[Schema] | dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def text_body(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def error_body(description: str) -> dict[str, Any]:
    return json_body(ErrorSchema, description)
