"""The configurable sender (`type: mapped`): any JSON or form post mapped by configuration alone."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
from typing import Any, ClassVar

from marshmallow import ValidationError, fields, validate

from service.domain.command import (
    COMMAND_SCHEMA,
    LeadUpdateCommand,
    make_command_id,
    normalise_email,
    normalise_phone,
)
from service.domain.validators import StringList
from service.sources.base import InboundRequest, Normalised, PayloadInvalid, SourceAdapter
from service.sources.common import clean_changes, received
from service.sources.mapped.mapping import apply_specs, compile_mapping
from service.sources.mapped.parsing import BODY_KINDS, parse_document
from service.sources.mapped.transforms import TransformError, parse_date, to_finite_number
from service.sources.mapped.verification import VerifySchema, verify_request

log = logging.getLogger("leadrelay.sources.mapped")

MAX_EVENT_ID = 200


class MappingSetting(fields.Dict):
    """`mapping:` kept as plain data, but every expression is compiled here, at start-up."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        compile_mapping(loaded)  # raises ValidationError naming each bad key
        return loaded


class SuccessBody(fields.Field):
    """A text or a JSON object answered instead of leadrelay's own body on 202/200."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, str | dict | list):
            raise ValidationError("expected a text or a JSON object")
        return value


class MappedAdapter(SourceAdapter):
    name: ClassVar[str] = "mapped"
    signs_url: ClassVar[bool] = True  # a configured signature may cover the URL
    settings_fields: ClassVar[dict[str, Any]] = {
        "body": fields.String(load_default="auto", validate=validate.OneOf(BODY_KINDS)),
        "json_field": fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1)),
        "verify": fields.Nested(VerifySchema, required=True),
        "mapping": MappingSetting(required=True),
        "event_types": StringList(load_default=lambda: ["*"]),
        "success_body": SuccessBody(load_default=None, allow_none=True),
    }

    def __init__(self, source: str, settings: dict[str, Any]) -> None:
        super().__init__(source, settings)
        self.mapping = compile_mapping(settings["mapping"])
        self.region = str(settings.get("phone_region") or "US")
        if self.unverified:
            log.warning(
                "source %s accepts requests without any verification (verify: none)", source,
                extra={"source": source},
            )  # fmt: skip

    @property
    def unverified(self) -> bool:
        return self.settings["verify"]["method"] == "none"

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return  # the topic's ACLs authenticate Kafka records
        verify_request(self.settings["verify"], request)

    def parse(self, request: InboundRequest) -> Any:
        return parse_document(request, self.settings["body"], self.settings.get("json_field"))

    def event_id(self, payload: Any, request: InboundRequest) -> str | None:
        spec = self.mapping.event_id
        value = spec.value(payload) if spec else None
        if value is None or isinstance(value, dict | list):
            return None  # no id: the command id is a hash of the raw body
        text = str(value).strip()
        if len(text) > MAX_EVENT_ID:
            return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return text or None

    def normalise(self, payload: Any, request: InboundRequest) -> Normalised:
        """One command per event: the whole document, or each item `mapping.events` selects.
        Every error of every event is reported at once, and nothing is queued if any fails."""
        if self.mapping.events is None:
            events: list[Any] = [payload]
        else:
            selected = self.mapping.events.search(payload)
            events = selected if isinstance(selected, list) else [] if selected is None else [selected]
            if not events:
                raise PayloadInvalid(
                    "the payload has no events", {"events": ["the expression selects nothing"]}
                )
        out = Normalised()
        errors: dict[str, list[str]] = {}
        for index, event in enumerate(events):
            prefix = f"events.{index}." if self.mapping.events is not None else ""
            # Without an event id, each item of a batch is keyed by the body's hash and its position.
            body = request.body if self.mapping.events is None else request.body + f"#{index}".encode()
            command, ignored, event_errors = self.map_event(event, body, request)
            errors.update({prefix + key: value for key, value in event_errors.items()})
            if command is not None:
                out.commands.append(command)
            elif ignored:
                out.ignored.append(ignored)
        if errors:  # every mapping and validation error at once, not the first
            raise PayloadInvalid("the payload does not map", errors)
        return out

    def map_event(
        self, event: Any, body: bytes, request: InboundRequest
    ) -> tuple[LeadUpdateCommand | None, str | None, dict[str, list[str]]]:
        """(command, ignored event type, errors) for one event."""
        errors: dict[str, list[str]] = {}
        try:
            event_type = self.mapping.event_type.value(event)
            event_id = self.event_id(event, request)
        except TransformError as exc:
            return None, None, {"event": [str(exc)]}
        event_type = str(event_type) if event_type is not None else "lead.updated"
        if not any(fnmatch.fnmatchcase(event_type, p) for p in self.settings["event_types"]):
            return None, event_type[:100], {}
        lead = apply_specs(self.mapping.lead, event, "lead", errors)
        changes = apply_specs(self.mapping.changes, event, "changes", errors)
        if "value" in changes:  # never let a non-number reach the command as a silent clear
            try:
                changes["value"] = to_finite_number(changes["value"])
            except TransformError as exc:
                errors["changes.value"] = [str(exc)]
        metadata = apply_specs(self.mapping.metadata, event, "metadata", errors)
        occurred_at = received(request)
        if self.mapping.occurred_at is not None:
            try:
                raw_time = self.mapping.occurred_at.value(event)
                occurred_at = parse_date(raw_time, self.mapping.occurred_at_format) or occurred_at
            except TransformError as exc:
                errors["occurred_at"] = [str(exc)]
        wire = {
            "schema": "lead-update/v1",
            "command_id": make_command_id(self.source, event_id, body),
            "source": self.source,
            "event_type": event_type[:128],
            "occurred_at": occurred_at.isoformat(),
            "lead": self.identity(lead, changes),
            "changes": clean_changes(changes),
            "metadata": {k: _scalar(v) for k, v in metadata.items()},
        }
        try:
            command: LeadUpdateCommand = COMMAND_SCHEMA.load(wire)  # the shared command validation
        except ValidationError as exc:
            errors.update(PayloadInvalid.from_marshmallow(exc).details)
        return (None, None, errors) if errors else (command, None, {})

    def identity(self, lead: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """The lead's id, email and phone; email and phone fall back to the mapped changes."""
        email = lead.get("email", changes.get("email"))
        phone = lead.get("phone", changes.get("phone") or changes.get("mobile"))
        return {
            "id": str(lead["id"]) if lead.get("id") is not None else None,
            "email": normalise_email(str(email)) if email is not None else None,
            "phone": normalise_phone(str(phone), self.region) if phone is not None else None,
        }

    def answer(self, status: int, body: dict[str, Any]) -> tuple[int, bytes, str] | None:
        """The configured success body for senders that need one; None: leadrelay's JSON."""
        success = self.settings.get("success_body")
        if success is None or status >= 300:
            return None
        if isinstance(success, str):
            return status, success.encode(), "text/plain; charset=utf-8"
        return status, json.dumps(success).encode(), "application/json"


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)
