"""HubSpot: CRM webhook subscriptions and the workflow "Send a webhook" action
(https://developers.hubspot.com/docs/api/webhooks, .../validating-requests).

CRM subscriptions POST a JSON array of up to 100 events; each becomes its own command. A
single event object (not wrapped in an array) is taken as a batch of one.
Real deliveries name the type `subscriptionType`, the docs example `eventType`: both are
read, and the generic `object.*` types are mapped back by `objectTypeId` (0-1 contact,
0-3 deal). HubSpot documents `eventId` as not unique, so the dedup key is
(portalId, subscriptionId, eventId, objectId, occurredAt). `occurredAt` is the command's
occurred_at, so a late event never overwrites a newer value downstream.

The events carry ids, not the person: the lead's email and phone come from the CRM API
with the private app's access token, in batch reads (`service/sources/hubspot/crm.py`);
see `service/sources/fetch.py` for retries, cache and why a failed look-up answers 503.

Signatures, all with the app's client secret, compared in constant time:
v3 `X-HubSpot-Signature-v3` = base64 HMAC-SHA256 of method + URL + body + timestamp
(`X-HubSpot-Request-Timestamp`, ms, 5 minutes); v2 `X-HubSpot-Signature` = hex SHA-256 of
secret + method + URL + body; v1 = hex SHA-256 of secret + body. The URL is the public URL
HubSpot called (`server.public_base_url` behind a proxy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, ClassVar

from marshmallow import ValidationError, fields, validate, validates_schema

from service.domain.command import LeadIdentity
from service.domain.validators import StringList
from service.sources.base import (
    AuthenticationFailed,
    InboundRequest,
    PayloadInvalid,
    UpstreamUnavailable,
)
from service.sources.common import (
    LooseSchema,
    b64_matches,
    check_fresh,
    field_map_setting,
    from_unix,
    hex_matches,
    hmac_sha256,
    identity_from,
    load_json,
    load_with,
    parse_int_header,
    received,
    require_header,
    require_secret,
    secret_setting,
    status_map_setting,
    to_number,
)
from service.sources.fetch import FetchClient, fetch_settings, policy_from
from service.sources.hubspot.crm import CrmUnavailable, HubSpotCrm
from service.sources.sender import SenderAdapter, Skip

DEFAULT_API = "https://api.hubapi.com"
TOLERANCE_SECONDS = 300
OBJECT_TYPES = {"0-1": "contact", "0-3": "deal"}
# HubSpot's v3 rule: these escapes are decoded in the URI before signing, no others.
V3_URI_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
IDENTITY_PROPERTIES = ("email", "phone", "mobilephone")
DEAL_PROPERTIES = ("dealstage", "amount")


class CrmEvent(LooseSchema):
    eventId = fields.String(required=True)  # noqa: N815 - HubSpot's keys
    subscriptionId = fields.String(load_default="")  # noqa: N815
    portalId = fields.String(required=True)  # noqa: N815
    appId = fields.String(load_default=None)  # noqa: N815
    occurredAt = fields.Integer(required=True, validate=validate.Range(min=0, max=10**14))  # noqa: N815 - ms
    subscriptionType = fields.String(load_default=None)  # noqa: N815
    eventType = fields.String(load_default=None)  # noqa: N815
    objectId = fields.String(required=True)  # noqa: N815
    objectTypeId = fields.String(load_default=None)  # noqa: N815
    propertyName = fields.String(load_default=None)  # noqa: N815
    propertyValue = fields.Raw(load_default=None)  # noqa: N815
    changeSource = fields.String(load_default=None)  # noqa: N815
    attemptNumber = fields.Integer(load_default=0)  # noqa: N815

    @validates_schema
    def _has_type(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.get("subscriptionType") or data.get("eventType")):
            raise ValidationError("subscriptionType or eventType is required", "subscriptionType")


class WorkflowContact(LooseSchema):
    vid = fields.String(load_default=None)
    portal_id = fields.String(data_key="portal-id", load_default=None)
    properties = fields.Dict(keys=fields.String(), values=fields.Raw(), required=True)
    form_submissions = fields.List(fields.Dict(), data_key="form-submissions", load_default=list)


def event_type_of(event: dict[str, Any]) -> str:
    kind = event.get("subscriptionType") or event.get("eventType") or ""
    if kind.startswith("object.") and event.get("objectTypeId") in OBJECT_TYPES:
        return f"{OBJECT_TYPES[event['objectTypeId']]}.{kind.split('.', 1)[1]}"
    return kind


def v3_uri(url: str) -> str:
    for escaped, char in V3_URI_DECODE.items():
        url = url.replace(escaped, char).replace(escaped.lower(), char)
    return url


class HubSpotAdapter(SenderAdapter):
    name: ClassVar[str] = "hubspot"
    # Each event is a CRM change with its own event id: a repeat is a real change, never a double submit.
    double_submit_guard: ClassVar[bool] = False
    signs_url: ClassVar[bool] = True  # v1, v2 and v3 signatures cover the URL
    settings_fields: ClassVar[dict[str, Any]] = {
        "client_secret": secret_setting(),  # the app's client secret (signs every request)
        "access_token": secret_setting(),  # private app token, scope crm.objects.contacts.read + deals.read
        "signature_versions": StringList(
            load_default=lambda: ["v3", "v2", "v1"],
            validate=validate.ContainsOnly(["v1", "v2", "v3"]),
        ),
        "field_map": field_map_setting(),  # contact property -> canonical field
        "stage_map": status_map_setting(),  # deal stage id -> canonical status
        **fetch_settings(DEFAULT_API, deadline_seconds=4.0),  # HubSpot waits 5 s for an answer
    }
    default_field_map: ClassVar[dict[str, str]] = {
        "email": "email",
        "firstname": "first_name",
        "lastname": "last_name",
        "phone": "phone",
        "mobilephone": "mobile",
        "company": "company",
        "jobtitle": "job_title",
        "website": "website",
        "city": "city",
        "state": "state",
        "country": "country",
        "zip": "zip",
        "address": "address",
    }
    default_stage_map: ClassVar[dict[str, str]] = {"closedwon": "won", "closedlost": "lost"}
    handlers: ClassVar[dict[str, str]] = {
        "contact.creation": "contact_event",
        "contact.propertyChange": "contact_event",
        "deal.creation": "deal_event",
        "deal.propertyChange": "deal_event",
        "workflow.contact": "workflow_contact",
    }
    crm_schema = CrmEvent()
    workflow_schema = WorkflowContact()

    def __init__(self, source: str, settings: Any) -> None:
        super().__init__(source, settings)
        self.stage_map = {**self.default_stage_map, **(settings.get("stage_map") or {})}
        self.crm = HubSpotCrm(
            FetchClient(
                settings.get("api_base_url") or DEFAULT_API,
                policy_from(settings),
                name=f"{source} HubSpot CRM API",
                headers={"Authorization": f"Bearer {settings.get('access_token') or ''}"},
            )
        )

    # -- verify ----------------------------------------------------------------------------

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return
        secret = require_secret(self.settings.get("client_secret"), "client_secret")
        accepted = set(self.settings.get("signature_versions") or ())
        v3 = request.header("x-hubspot-signature-v3")
        if v3 and "v3" in accepted:
            timestamp = require_header(request, "x-hubspot-request-timestamp")
            check_fresh(parse_int_header(timestamp, "timestamp") / 1000.0, request, TOLERANCE_SECONDS)
            message = (request.method + v3_uri(request.url)).encode() + request.body + timestamp.encode()
            if not b64_matches(hmac_sha256(secret, message), v3):
                raise AuthenticationFailed("X-HubSpot-Signature-v3 does not match")
            return
        legacy = request.header("x-hubspot-signature")
        version = (request.header("x-hubspot-signature-version") or "v1").lower()
        if not legacy or version not in accepted or version == "v3":
            raise AuthenticationFailed("missing X-HubSpot-Signature-v3 (or an accepted v1/v2 signature)")
        if version == "v2":
            material = secret.encode() + request.method.encode() + request.url.encode() + request.body
        else:
            material = secret.encode() + request.body
        if not hex_matches(hashlib.sha256(material).digest(), legacy):
            raise AuthenticationFailed(f"X-HubSpot-Signature ({version}) does not match")

    # -- parse -----------------------------------------------------------------------------

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        body = load_json(request, big_ints_as_str=True)
        if isinstance(body, list):
            return {"kind": "crm", "events": load_with(self.crm_schema, body, many=True)}
        if isinstance(body, dict) and "properties" in body:
            return {"kind": "workflow", "contact": load_with(self.workflow_schema, body)}
        if isinstance(body, dict):
            return {"kind": "crm", "events": load_with(self.crm_schema, [body], many=True)}
        raise PayloadInvalid(
            "expected a JSON array of CRM events, one CRM event or a workflow contact object",
            {"_schema": ["expected a JSON array of events, an event object, or an object with properties"]},
        )

    @staticmethod
    def crm_event_id(event: dict[str, Any]) -> str:
        return ":".join(
            str(event[k]) for k in ("portalId", "subscriptionId", "eventId", "objectId", "occurredAt")
        )

    def events(self, payload: dict[str, Any], request: InboundRequest) -> Iterable[tuple[str, Any]]:
        if payload["kind"] == "workflow":
            return [("workflow.contact", payload["contact"])]
        return [(event_type_of(event), event) for event in payload["events"]]

    def shared_context(self, events: list[tuple[str, Any]], request: InboundRequest) -> Any:
        # One batch of look-ups for the whole request before the per-event table runs.
        crm = [event for kind, event in events if kind != "workflow.contact"]
        return self._prefetch(crm) if crm else {}

    # -- handlers --------------------------------------------------------------------------

    def contact_event(
        self, event: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        if not self._needs_lookup(event):
            raise Skip(f"unmapped_property:{event.get('propertyName')}")
        contact = context["contacts"].get(event["objectId"])
        if contact is None:
            raise Skip("contact_not_found")
        if event_type_of(event) == "contact.creation":
            # HubSpot answers null for requested properties the contact has no value for;
            # on creation that means "unknown", not "clear the field" as null means downstream.
            mapped = self.map_values({k: v for k, v in contact.items() if v not in (None, "")})
            changes, skipped = mapped.changes, mapped.skipped
        else:
            target = self.field_map.get(event.get("propertyName") or "")
            if not target:
                raise Skip(f"unmapped_property:{event.get('propertyName')}")
            value = event.get("propertyValue")
            changes, skipped = {target: value}, 0  # `value` is made numeric (or left out) with every change
        return [self._crm_command(event, request, changes, self._identity(contact))], skipped

    def deal_event(
        self, event: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        if not self._needs_lookup(event):
            raise Skip(f"unmapped_property:{event.get('propertyName')}")
        contact_id = context["deal_contacts"].get(event["objectId"])
        if contact_id is None:
            raise Skip("deal_without_contact")
        contact = context["contacts"].get(contact_id)
        if contact is None:
            raise Skip("contact_not_found")
        if event_type_of(event) == "deal.creation":
            deal = context["deals"].get(event["objectId"]) or {}
            changes = self._deal_changes(deal)
        else:
            changes = self._deal_changes({event.get("propertyName") or "": event.get("propertyValue")})
            if not changes:
                raise Skip(f"unmapped_property:{event.get('propertyName')}")
        command = self._crm_command(event, request, changes, self._identity(contact))
        command.metadata["hubspot_contact_id"] = contact_id
        return [command], 0

    def workflow_contact(
        self, contact: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        values = {
            name: (prop.get("value") if isinstance(prop, dict) else prop)
            for name, prop in contact["properties"].items()
        }
        mapped = self.map_values({k: v for k, v in values.items() if v is not None})
        latest = max(
            contact["form_submissions"], key=lambda s: to_number(s.get("timestamp")) or 0, default={}
        )
        command = self.command(
            event_id=None,  # no event id in this payload: the raw body's hash
            event_type="workflow.contact",
            occurred_at=from_unix((to_number(latest.get("timestamp")) or 0) / 1000, request.received_at)
            if latest.get("timestamp")
            else received(request),
            changes=mapped.changes,
            request=request,
            lead=self._identity(values),
            metadata={
                "hubspot_contact_id": contact.get("vid"),
                "hubspot_portal_id": contact.get("portal_id"),
                "form_id": latest.get("form-id"),
                "page_url": latest.get("page-url"),
            },
        )
        return [command], mapped.skipped

    # -- helpers ---------------------------------------------------------------------------

    def _deal_changes(self, properties: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        stage = properties.get("dealstage")
        if stage not in (None, ""):
            stage = str(stage)  # a stage id; never trust the type
            changes["stage"] = stage
            if stage in self.stage_map:
                changes["status"] = self.stage_map[stage]
        if "amount" in properties:
            changes["value"] = properties["amount"]  # numeric, or left out when unreadable
        return changes

    def _identity(self, contact: dict[str, Any]) -> LeadIdentity:
        lead = identity_from(
            {
                "email": contact.get("email"),
                "phone": contact.get("phone"),
                "mobile": contact.get("mobilephone"),
            },
            self.region,
        )
        if lead is None:
            raise Skip("contact_without_email_or_phone")
        return lead

    def _crm_command(
        self, event: dict[str, Any], request: InboundRequest, changes: dict[str, Any], lead: LeadIdentity
    ) -> Any:
        return self.command(
            event_id=self.crm_event_id(event),
            event_type=event_type_of(event),
            occurred_at=from_unix(event["occurredAt"] / 1000, request.received_at),
            changes=changes,
            request=request,
            lead=lead,
            metadata={
                "hubspot_portal_id": event["portalId"],
                "hubspot_object_id": event["objectId"],
                "hubspot_change_source": event.get("changeSource"),
            },
        )

    def _needs_lookup(self, event: dict[str, Any]) -> bool:
        """Only events that can become a command cost an API call (HubSpot rate-limits)."""
        kind = event_type_of(event)
        if kind == "contact.propertyChange":
            return bool(self.field_map.get(event.get("propertyName") or ""))
        if kind == "deal.propertyChange":
            return event.get("propertyName") in DEAL_PROPERTIES
        return True

    def _prefetch(self, events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        types = [(event_type_of(e), e["objectId"]) for e in events if self._needs_lookup(e)]
        contact_ids = {oid for kind, oid in types if kind in ("contact.creation", "contact.propertyChange")}
        deal_ids = {oid for kind, oid in types if kind in ("deal.creation", "deal.propertyChange")}
        created_deals = {oid for kind, oid in types if kind == "deal.creation"}
        if not (contact_ids or deal_ids):
            return {"contacts": {}, "deals": {}, "deal_contacts": {}}
        if not self.settings.get("access_token"):
            raise UpstreamUnavailable("access_token is not configured: HubSpot contacts cannot be looked up")
        try:
            return self.crm.lookups(
                contact_ids, deal_ids, created_deals, sorted({*self.field_map, *IDENTITY_PROPERTIES})
            )
        except CrmUnavailable as exc:
            raise UpstreamUnavailable("the HubSpot CRM look-up failed", log_detail=str(exc)) from None
