"""A dry run of one source: what a request would become (commands, routes) or every error, queueing nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from service.domain.command import LeadUpdateCommand
from service.domain.validators import flatten_messages
from service.sources.base import AdapterError, InboundRequest, SourceAdapter


def sample_request(
    source: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
    token: str | None = None,
    query: Mapping[str, str] | None = None,
) -> InboundRequest:
    """The request a sender would make, built from a saved payload and (optionally) its headers."""
    lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}
    if content_type is None:
        content_type = lowered.get("content-type") or _guess_content_type(body)
    return InboundRequest(
        source=source,
        body=body,
        headers=lowered,
        url=f"dry-run:/webhooks/{source}",
        query=dict(query or {}),
        path_params={"token": token} if token else {},
        content_type=content_type,
        received_at=time.time(),
    )


def _guess_content_type(body: bytes) -> str:
    if body.lstrip().startswith(b"<"):
        return "text/xml"
    try:
        json.loads(body)
        return "application/json"
    except (ValueError, UnicodeDecodeError):
        return "application/x-www-form-urlencoded"


def try_source(
    adapter: SourceAdapter, request: InboundRequest, routes: Any = None, check_signature: bool = True
) -> dict[str, Any]:
    """{"ok", "verification", "commands" (each with the providers it would go to), "ignored",
    "errors"}. `routes(source, event_type) -> [provider]` names the providers, when given."""
    result: dict[str, Any] = {
        "source": request.source,
        "ok": False,
        "commands": [],
        "ignored": [],
        "errors": {},
    }
    if check_signature:
        try:
            adapter.verify(request)
            result["verification"] = "passed"
        except AdapterError as exc:
            result["verification"] = f"failed: {exc.message}"
    else:
        result["verification"] = "not checked (no headers given)"
    try:
        normalised = adapter.normalise(adapter.parse(request), request)
    except AdapterError as exc:
        result["errors"] = {"_request": [f"{exc.code}: {exc.message}"], **exc.details}
        return result
    result["ignored"] = list(normalised.ignored)
    for command in normalised.commands:
        try:
            # The shared command validation, as the queue applies it when the command is read back.
            checked = LeadUpdateCommand.from_dict(command.to_dict())
        except ValidationError as exc:
            result["errors"].update(
                {f"command.{k}": v for k, v in flatten_messages(exc.normalized_messages()).items()}
            )
            continue
        shown = checked.to_dict()
        if routes is not None:
            shown["providers"] = routes(checked.source, checked.event_type)
        result["commands"].append(shown)
    result["ok"] = not result["errors"] and not result["verification"].startswith("failed")
    return result
