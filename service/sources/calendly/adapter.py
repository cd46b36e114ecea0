"""Calendly webhooks v2: `invitee.created` and `invitee.canceled`
(https://developer.calendly.com/api-docs/ZG9jOjM2MzE2MDM4-webhook-signatures).

Signature: `Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`
with the subscription's signing key; Calendly's own example rejects anything older than
3 minutes, and so do we. Dedup key: the event name plus the invitee `payload.uri` (a
reschedule is a cancel of one invitee plus a create of a new one: two distinct keys).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, ClassVar

from marshmallow import fields

from service.sources.base import AuthenticationFailed, InboundRequest
from service.sources.common import (
    LooseSchema,
    check_fresh,
    field_map_setting,
    hex_matches,
    hmac_sha256,
    load_with,
    parse_int_header,
    received,
    require_header,
    require_secret,
    secret_setting,
    status_map_setting,
)
from service.sources.sender import SenderAdapter

TOLERANCE_SECONDS = 180


class QuestionAnswer(LooseSchema):
    question = fields.String(required=True)
    answer = fields.Raw(load_default=None)


class ScheduledEvent(LooseSchema):
    uri = fields.String(load_default=None)
    name = fields.String(load_default=None, allow_none=True)
    start_time = fields.String(load_default=None, allow_none=True)


class Invitee(LooseSchema):
    uri = fields.String(required=True)
    email = fields.String(load_default=None, allow_none=True)
    name = fields.String(load_default=None, allow_none=True)
    first_name = fields.String(load_default=None, allow_none=True)
    last_name = fields.String(load_default=None, allow_none=True)
    text_reminder_number = fields.String(load_default=None, allow_none=True)
    timezone = fields.String(load_default=None, allow_none=True)
    status = fields.String(load_default=None, allow_none=True)
    rescheduled = fields.Boolean(load_default=False, allow_none=True)
    questions_and_answers = fields.List(fields.Nested(QuestionAnswer), load_default=list)
    tracking = fields.Dict(load_default=dict, allow_none=True)
    cancellation = fields.Dict(load_default=None, allow_none=True)
    scheduled_event = fields.Nested(ScheduledEvent, load_default=None, allow_none=True)


class CalendlyEvent(LooseSchema):
    event = fields.String(required=True)
    created_at = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    payload = fields.Dict(required=True)


class CalendlyAdapter(SenderAdapter):
    name: ClassVar[str] = "calendly"
    # Each event is a booking or cancellation with its own invitee URI: a repeat is a real change, never a double submit.
    double_submit_guard: ClassVar[bool] = False
    settings_fields: ClassVar[dict[str, Any]] = {
        "signing_key": secret_setting(),  # the webhook subscription's signing_key
        "field_map": field_map_setting(),
        # event name -> canonical status, e.g. {"invitee.created": "follow_up"}
        "status_map": status_map_setting(),
    }
    extra_secret_settings: ClassVar[tuple[str, ...]] = ("signing_key",)
    default_field_map: ClassVar[dict[str, str]] = {
        "email": "email",
        "first_name": "first_name",
        "last_name": "last_name",
        "name": "full_name",
        "text_reminder_number": "phone",
    }
    handlers: ClassVar[dict[str, str]] = {"invitee.created": "invitee", "invitee.canceled": "invitee"}
    schema = CalendlyEvent()
    invitee_schema = Invitee()

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return
        key = require_secret(self.settings.get("signing_key"), "signing_key")
        header = require_header(request, "calendly-webhook-signature")
        parts = dict(item.strip().partition("=")[::2] for item in header.split(","))
        if not parts.get("t") or not parts.get("v1"):
            raise AuthenticationFailed("Calendly-Webhook-Signature needs t= and v1=")
        check_fresh(parse_int_header(parts["t"], "t"), request, TOLERANCE_SECONDS)
        if not hex_matches(hmac_sha256(key, parts["t"].encode() + b"." + request.body), parts["v1"]):
            raise AuthenticationFailed("Calendly-Webhook-Signature does not match")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        event = load_with(self.schema, request.json())
        if event["event"] in self.handlers:
            # Only the events we handle must carry an invitee; others are ignored as they come.
            event["invitee"] = load_with(self.invitee_schema, event["payload"])
        return event

    def event_id(self, payload: dict[str, Any], request: InboundRequest) -> str | None:
        invitee = payload.get("invitee")
        return f"{payload['event']}:{invitee['uri']}" if invitee else None

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        return [(payload["event"], payload)]

    def invitee(
        self, payload: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        invitee = payload["invitee"]
        values: dict[str, Any] = {k: v for k, v in invitee.items() if isinstance(v, str)}
        for qa in invitee["questions_and_answers"]:
            values[f"question:{qa['question']}"] = qa["answer"]
        mapped = self.map_values({k: v for k, v in values.items() if v is not None})
        status = (self.settings.get("status_map") or {}).get(payload["event"])
        if status:
            mapped.changes["status"] = status
        scheduled = invitee.get("scheduled_event") or {}
        tracking = invitee.get("tracking") or {}
        command = self.command(
            event_id=self.event_id(payload, request),
            event_type=payload["event"],
            occurred_at=payload.get("created_at") or received(request),
            changes=mapped.changes,
            request=request,
            metadata={
                "invitee_uri": invitee["uri"],
                "scheduled_event": scheduled.get("uri"),
                "event_name": scheduled.get("name"),
                "start_time": scheduled.get("start_time"),
                "rescheduled": invitee.get("rescheduled"),
                **{k: v for k, v in tracking.items() if k.startswith("utm_") and v},
            },
        )
        return [command], mapped.skipped
