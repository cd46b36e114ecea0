"""Webflow `form_submission` webhooks (https://developers.webflow.com/data/docs/working-with-webhooks).

Signature: `x-webflow-signature` = hex HMAC-SHA256 of `<x-webflow-timestamp>:<raw body>`
with the webhook's secret (the app's client secret for OAuth apps); `x-webflow-timestamp`
is in milliseconds and must be within 5 minutes. Form fields arrive under `payload.data`
by their label; the dedup key is `payload.id` (the submission id). Labels are site-made
(Webflow names a second email input `Email 2`), so they are matched by normalised name and
the email also by its value's shape (`service/sources/form_fields.py`); the answer says
which form field was used.
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
)
from service.sources.form_fields import match_form_fields
from service.sources.sender import SenderAdapter

TOLERANCE_SECONDS = 300


class SubmissionPayload(LooseSchema):
    id = fields.String(load_default=None)
    name = fields.String(load_default=None)
    siteId = fields.String(load_default=None)  # noqa: N815 - the vendor's key
    formId = fields.String(load_default=None)  # noqa: N815
    submittedAt = fields.AwareDateTime(load_default=None, default_timezone=UTC)  # noqa: N815
    data = fields.Dict(keys=fields.String(), load_default=dict)


class WebflowEvent(LooseSchema):
    triggerType = fields.String(required=True)  # noqa: N815
    payload = fields.Nested(SubmissionPayload, required=True)


class WebflowAdapter(SenderAdapter):
    name: ClassVar[str] = "webflow"
    settings_fields: ClassVar[dict[str, Any]] = {
        "secret": secret_setting(),
        "field_map": field_map_setting(),
    }
    default_field_map: ClassVar[dict[str, str]] = {
        "email": "email",
        "Email": "email",
        "Name": "full_name",
        "First Name": "first_name",
        "Last Name": "last_name",
        "Phone": "phone",
        "Phone Number": "phone",
        "Company": "company",
        "Message": "note",
    }
    handlers: ClassVar[dict[str, str]] = {"form_submission": "form_submission"}
    schema = WebflowEvent()

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return
        secret = require_secret(self.settings.get("secret"), "secret")
        given = require_header(request, "x-webflow-signature")
        timestamp = require_header(request, "x-webflow-timestamp")
        check_fresh(parse_int_header(timestamp, "x-webflow-timestamp") / 1000.0, request, TOLERANCE_SECONDS)
        if not hex_matches(hmac_sha256(secret, timestamp.encode() + b":" + request.body), given):
            raise AuthenticationFailed("x-webflow-signature does not match")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        return load_with(self.schema, request.json())

    def event_id(self, payload: dict[str, Any], request: InboundRequest) -> str | None:
        return payload["payload"].get("id")

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        return [(payload["triggerType"], payload)]

    def form_submission(
        self, payload: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        submission = payload["payload"]
        matched = match_form_fields(submission["data"], self.field_map)
        mapped = self.map_values(matched.values)
        for canonical, value in matched.by_shape.items():
            mapped.changes.setdefault(canonical, value)
        command = self.command(
            event_id=self.event_id(payload, request),
            event_type="form_submission",
            occurred_at=submission.get("submittedAt") or received(request),
            changes=mapped.changes,
            request=request,
            metadata={"form_name": submission.get("name"), "form_id": submission.get("formId"),
                      "site_id": submission.get("siteId")},
        )  # fmt: skip
        return [command], mapped.skipped, matched.inferred
