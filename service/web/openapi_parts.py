"""Building blocks of the OpenAPI document: schema references and JSON, text and error responses."""

from __future__ import annotations

from typing import Any

NULLABLE_STRING = {"type": "string", "nullable": True}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def text_body(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def error_body(description: str) -> dict[str, Any]:
    return json_body(ref("Error"), description)
