"""Google Ads lead form extensions (https://developers.google.com/google-ads/webhook/docs/implementation).

Google signs nothing: the advertiser sets a `google_key` on the form and Google sends it
back inside the body; we compare it in constant time. `lead_id` is the dedup key (Google:
"use this to dedupe leads"). Columns arrive as `user_column_data` entries keyed by
`column_id` (FULL_NAME, EMAIL, PHONE_NUMBER, ...). Test leads (`is_test`, sent by "Send
test data" in Google Ads) are accepted only when `accept_test_leads` is on; every test lead
carries the same fixed `lead_id`, so a test lead's dedup key is that id plus a hash of the
body: a second, different test lead (another form, other data) is a new lead, and only an
identical re-delivery is a duplicate. Real leads keep `lead_id` alone.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from marshmallow import EXCLUDE, Schema, fields

from service.sources.base import AuthenticationFailed, InboundRequest
from service.sources.common import (
    LooseSchema,
    field_map_setting,
    load_json,
    load_with,
    received,
    require_secret,
    same,
    secret_setting,
)
from service.sources.sender import SenderAdapter, Skip


class _Loose(Schema):
    class Meta:
        unknown = EXCLUDE  # Google: "ignore fields you do not recognise" (forward compatibility)


class Column(LooseSchema):
    column_id = fields.String(load_default=None)
    column_name = fields.String(load_default=None)
    string_value = fields.String(load_default=None)


class GoogleLead(LooseSchema):
    lead_id = fields.String(required=True)
    google_key = fields.String(required=True)
    api_version = fields.String(load_default=None)
    form_id = fields.Raw(load_default=None)
    campaign_id = fields.Raw(load_default=None)
    adgroup_id = fields.Raw(load_default=None)
    creative_id = fields.Raw(load_default=None)
    gcl_id = fields.String(load_default=None)
    is_test = fields.Boolean(load_default=False)
    lead_submit_time = fields.AwareDateTime(load_default=None)
    user_column_data = fields.List(fields.Nested(Column), load_default=list)


class GoogleAdsAdapter(SenderAdapter):
    name: ClassVar[str] = "google_ads"
    settings_fields: ClassVar[dict[str, Any]] = {
        "google_key": secret_setting(),  # the key you typed into the lead form's webhook settings
        "accept_test_leads": fields.Boolean(load_default=False),
        "field_map": field_map_setting(),
    }
    extra_secret_settings: ClassVar[tuple[str, ...]] = ("google_key",)
    default_field_map: ClassVar[dict[str, str]] = {
        "FULL_NAME": "full_name",
        "FIRST_NAME": "first_name",
        "LAST_NAME": "last_name",
        "EMAIL": "email",
        "WORK_EMAIL": "email",
        "PHONE_NUMBER": "phone",
        "WORK_PHONE": "phone",
        "COMPANY_NAME": "company",
        "JOB_TITLE": "job_title",
        "CITY": "city",
        "REGION": "state",
        "COUNTRY": "country",
        "POSTAL_CODE": "zip",
        "STREET_ADDRESS": "address",
    }
    handlers: ClassVar[dict[str, str]] = {"lead_form": "lead_form"}
    schema = GoogleLead()

    def verify(self, request: InboundRequest) -> None:
        # The key is inside the body, so it is checked in `parse` right after decoding, before
        # the schema runs; nothing is normalised or queued before that check. The decode is
        # bounded (body <= server.max_body_bytes, nesting <= 64 levels, checked by a linear
        # scan first), so an unauthenticated body cannot make it expensive.
        require_secret(self.settings.get("google_key"), "google_key")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        # int64 ids (form, campaign, ad group) stay exact decimal strings.
        body = load_json(request, big_ints_as_str=True)
        given = body.get("google_key") if isinstance(body, dict) else None
        if not isinstance(given, str) or not same(self.settings["google_key"], given):
            raise AuthenticationFailed("google_key does not match")
        return load_with(self.schema, body)

    def event_id(self, payload: dict[str, Any], request: InboundRequest) -> str | None:
        if payload["is_test"]:
            return f"test:{payload['lead_id']}:{hashlib.sha256(request.body).hexdigest()[:16]}"
        return payload["lead_id"]

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        return [("lead_form", payload)]

    def lead_form(
        self, payload: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        if payload["is_test"] and not self.settings.get("accept_test_leads"):
            raise Skip("test_lead")
        values = {
            column["column_id"]: column["string_value"]
            for column in payload["user_column_data"]
            if column.get("column_id") and column.get("string_value") is not None
        }
        mapped = self.map_values(values)
        command = self.command(
            event_id=self.event_id(payload, request),
            event_type="lead_form",
            occurred_at=payload.get("lead_submit_time") or received(request),
            changes=mapped.changes,
            request=request,
            metadata={
                "form_id": _text(payload.get("form_id")),
                "campaign_id": _text(payload.get("campaign_id")),
                "adgroup_id": _text(payload.get("adgroup_id")),
                "gclid": payload.get("gcl_id"),
                "is_test": payload["is_test"] or None,
            },
        )
        return [command], mapped.skipped


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
