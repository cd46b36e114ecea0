"""Pipedrive webhooks v2 for deals and persons (https://pipedrive.readme.io/docs/guide-for-webhooks-v2).

Body: `{"meta": {"action", "entity", "id", "timestamp", ...}, "data": {...}, "previous": {...}}`
where `previous` holds only the fields that changed. Pipedrive signs nothing, so the
webhook is created with HTTP basic auth credentials, required and checked here in
constant time. Dedup key: `meta.id`.

A deal change becomes a status change on the lead: `won`, `lost` (+ `lost_reason` as
`loss_reason`), or a stage move (`stage` = the stage id; `stage_map` turns a stage id into
a canonical status). A deal names its person only by id, so the person's email and phone
come from Pipedrive's API (`GET /api/v2/persons/{id}`, `x-api-token`), fetched like the
other look-ups (bounded retries, cache, 503 to make Pipedrive redeliver when it fails).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import fields

from service.domain.command import LeadIdentity
from service.sources.base import AuthenticationFailed, InboundRequest, UpstreamUnavailable
from service.sources.common import (
    LooseSchema,
    field_map_setting,
    from_unix,
    identity_from,
    load_with,
    received,
    require_header,
    require_secret,
    same,
    secret_setting,
    status_map_setting,
    to_number,
)
from service.sources.fetch import FetchClient, FetchError, Verdict, fetch_settings, policy_from
from service.sources.sender import SenderAdapter, Skip

DEFAULT_API = "https://api.pipedrive.com"


class Meta(LooseSchema):
    action = fields.String(required=True)
    entity = fields.String(required=True)
    id = fields.Raw(required=True)
    entity_id = fields.Raw(load_default=None)
    timestamp = fields.Raw(load_default=None)
    version = fields.String(load_default=None)


class PipedriveEvent(LooseSchema):
    meta = fields.Nested(Meta, required=True)
    data = fields.Dict(load_default=None, allow_none=True)
    previous = fields.Dict(load_default=None, allow_none=True)


def _primary(items: Any) -> str | None:
    """The primary value of Pipedrive's `emails` / `phones` lists."""
    if not isinstance(items, list):
        return None
    chosen = next((i for i in items if isinstance(i, dict) and i.get("primary")), None)
    chosen = chosen or next((i for i in items if isinstance(i, dict) and i.get("value")), None)
    return str(chosen["value"]) if chosen and chosen.get("value") else None


def person_values(person: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in person.items() if isinstance(v, str | int | float)}
    values["email"] = _primary(person.get("emails") or person.get("email"))
    values["phone"] = _primary(person.get("phones") or person.get("phone"))
    return {k: v for k, v in values.items() if v is not None}


class PipedriveAdapter(SenderAdapter):
    name: ClassVar[str] = "pipedrive"
    # Each event is a CRM change with its own `meta.id`: a repeat is a real change, never a double submit.
    double_submit_guard: ClassVar[bool] = False
    settings_fields: ClassVar[dict[str, Any]] = {
        "username": secret_setting(),  # the HTTP auth user set on the Pipedrive webhook
        "password": secret_setting(),
        "api_token": secret_setting(),  # for the person behind a deal
        "field_map": field_map_setting(),
        # deal stage id -> canonical status, e.g. {"3": "qualified"}
        "stage_map": status_map_setting(),
        **fetch_settings(DEFAULT_API),
    }
    extra_secret_settings: ClassVar[tuple[str, ...]] = ("username", "api_token")
    default_field_map: ClassVar[dict[str, str]] = {
        "email": "email",
        "phone": "phone",
        "first_name": "first_name",
        "last_name": "last_name",
        "name": "full_name",
    }
    handlers: ClassVar[dict[str, str]] = {
        "deal.create": "deal",
        "deal.change": "deal",
        "person.create": "person",
        "person.change": "person",
    }
    schema = PipedriveEvent()

    def __init__(self, source: str, settings: Any) -> None:
        super().__init__(source, settings)
        self.api = FetchClient(
            settings.get("api_base_url") or DEFAULT_API,
            policy_from(settings),
            name=f"{source} Pipedrive API",
            headers={"x-api-token": settings.get("api_token") or "", "Accept": "application/json"},
        )

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return
        user = require_secret(self.settings.get("username"), "username")
        password = require_secret(self.settings.get("password"), "password")
        scheme, _, encoded = require_header(request, "authorization").partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationFailed("HTTP basic auth is required")
        try:
            given_user, _, given_password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise AuthenticationFailed("malformed basic auth credentials") from None
        # Both compared, always: no early exit that tells a valid user name apart.
        ok_user = same(user, given_user)
        ok_password = same(password, given_password)
        if not (ok_user and ok_password):
            raise AuthenticationFailed("wrong basic auth credentials")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        return load_with(self.schema, request.json())

    def event_id(self, payload: dict[str, Any], request: InboundRequest) -> str | None:
        return str(payload["meta"]["id"])

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        meta = payload["meta"]
        return [(f"{meta['entity']}.{meta['action']}", payload)]

    def occurred_at(self, payload: dict[str, Any], request: InboundRequest) -> datetime:
        stamp = payload["meta"].get("timestamp")
        if isinstance(stamp, str) and not stamp.isdigit():
            try:
                return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
            except ValueError:
                return received(request)
        number = to_number(stamp)
        if number is None:
            return received(request)
        return from_unix(number / 1000 if number > 10**11 else number, request.received_at)

    # -- handlers --------------------------------------------------------------------------

    def person(
        self, payload: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        data = payload.get("data") or {}
        mapped = self.map_values(person_values(data))
        return [self._command(payload, request, mapped.changes, None, data.get("id"))], mapped.skipped

    def deal(
        self, payload: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        data = payload.get("data") or {}
        previous = payload.get("previous") or {}
        created = payload["meta"]["action"] == "create"
        changes: dict[str, Any] = {}
        status = data.get("status")
        if status in ("won", "lost") and (created or "status" in previous):
            changes["status"] = status
            if status == "lost":
                changes["loss_reason"] = data.get("lost_reason")
        if data.get("stage_id") is not None and (created or "stage_id" in previous):
            stage = str(data["stage_id"])
            changes["stage"] = stage
            mapped_status = (self.settings.get("stage_map") or {}).get(stage)
            if mapped_status and "status" not in changes:
                changes["status"] = mapped_status
        if "value" in data and (created or "value" in previous):
            changes["value"] = data.get("value")  # numeric, or left out when unreadable
            if data.get("currency"):
                changes["currency"] = data["currency"]
        if not changes:
            raise Skip("no_status_stage_or_value_change")
        person_id = data.get("person_id")
        if isinstance(person_id, dict):  # v1-style expanded person
            person_id = person_id.get("value")
        if not person_id:
            raise Skip("deal_without_person")
        if not str(person_id).isascii() or not str(person_id).isdigit():
            raise Skip("malformed_person_id")  # never put arbitrary text into the API path
        lead = self._person_identity(str(person_id))
        return [self._command(payload, request, changes, lead, person_id, deal_id=data.get("id"))], 0

    # -- helpers ---------------------------------------------------------------------------

    def _person_identity(self, person_id: str) -> LeadIdentity:
        if not self.settings.get("api_token"):
            raise UpstreamUnavailable("api_token is not configured: a deal's person cannot be looked up")
        try:
            body = self.api.request("GET", f"/api/v2/persons/{person_id}", cache_key=f"person:{person_id}")
        except FetchError as exc:
            if exc.verdict is Verdict.NOT_FOUND:
                raise Skip("person_not_found") from None
            raise UpstreamUnavailable("the Pipedrive person look-up failed", log_detail=exc.reason) from None
        person = (body or {}).get("data") or {}
        lead = identity_from(person_values(person), self.region)
        if lead is None:
            raise Skip("person_without_email_or_phone")
        return lead

    def _command(
        self,
        payload: dict[str, Any],
        request: InboundRequest,
        changes: dict[str, Any],
        lead: LeadIdentity | None,
        person_id: Any,
        deal_id: Any = None,
    ) -> Any:
        meta = payload["meta"]
        return self.command(
            event_id=self.event_id(payload, request),
            event_type=f"{meta['entity']}.{meta['action']}",
            occurred_at=self.occurred_at(payload, request),
            changes=changes,
            request=request,
            lead=lead,
            metadata={
                "pipedrive_person_id": None if person_id is None else str(person_id),
                "pipedrive_deal_id": None if deal_id is None else str(deal_id),
            },
        )
