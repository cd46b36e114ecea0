"""Salesforce workflow Outbound Messages: SOAP notifications of Lead, Contact and Opportunity changes.

Salesforce signs nothing: the message names its `OrganizationId`, which must be the configured
org (compared in constant time), and the ingress may also require Salesforce's client
certificate (docs/senders/salesforce.md). Each Notification's `Id` is its dedup key:
Salesforce resends a message until it is acknowledged, for up to 24 hours. The answer is the
SOAP `<Ack>true</Ack>` only once every notification is durably queued (or deliberately
ignored); anything else is a SOAP fault, and Salesforce retries.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, ClassVar

import yaml
from marshmallow import fields, validate

from service.sources.base import AuthenticationFailed, InboundRequest
from service.sources.common import (
    apply_map,
    effective_map,
    field_map_setting,
    received,
    same,
    status_map_setting,
)
from service.sources.mapped.transforms import TransformError, parse_date
from service.sources.salesforce.envelope import ACK, Notification, OutboundMessage, fault, parse_message
from service.sources.sender import SenderAdapter

DEFAULTS: dict[str, Any] = yaml.safe_load(
    resources.files("service.sources.salesforce").joinpath("default_maps.yaml").read_text()
)
OBJECT_TYPES = tuple(DEFAULTS["field_maps"])
SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"


def _field_maps_setting() -> fields.Dict:
    """`field_maps`: per object type (Lead, Contact, Opportunity), sObject field -> canonical field."""
    return fields.Dict(keys=fields.String(validate=validate.OneOf(OBJECT_TYPES)), values=field_map_setting(),
                       load_default=dict)  # fmt: skip


class SalesforceAdapter(SenderAdapter):
    name: ClassVar[str] = "salesforce"
    kafka_capable: ClassVar[bool] = False  # a SOAP exchange: the acknowledgement is the contract
    # A CRM record change with its own notification Id, not a double-submitted form.
    double_submit_guard: ClassVar[bool] = False
    settings_fields: ClassVar[dict[str, Any]] = {
        # The org's 15- or 18-character id (Setup > Company Information).
        "organization_id": fields.String(
            load_default=None, allow_none=True, validate=validate.Length(min=15, max=18)
        ),
        "field_maps": _field_maps_setting(),
        "status_map": status_map_setting(),
        "max_body_bytes": fields.Integer(load_default=1024 * 1024, validate=validate.Range(min=1024)),
    }
    handlers: ClassVar[dict[str, str]] = {object_type: "notification" for object_type in OBJECT_TYPES}

    def __init__(self, source: str, settings: dict[str, Any]) -> None:
        super().__init__(source, settings)
        configured = settings.get("field_maps") or {}
        self.object_maps = {
            object_type: effective_map(DEFAULTS["field_maps"][object_type], configured.get(object_type) or {})
            for object_type in OBJECT_TYPES
        }
        self.configured_by_type = {
            object_type: {k for k, v in (configured.get(object_type) or {}).items() if v}
            for object_type in OBJECT_TYPES
        }
        self.status_map = {**DEFAULTS["status_map"], **(settings.get("status_map") or {})}

    def message(self, request: InboundRequest) -> OutboundMessage:
        return parse_message(request.body, request.content_type, int(self.settings["max_body_bytes"]))

    def verify(self, request: InboundRequest) -> None:
        expected = self.settings.get("organization_id")
        if not expected:
            raise AuthenticationFailed("no organization_id is configured for this source")
        given = self.message(request).organization_id
        # 15-character ids are case-sensitive; the 18-character form adds a checksum suffix.
        if not (len(given) in (15, 18) and same(expected[:15], given[:15])):
            raise AuthenticationFailed("the message is not from the configured Salesforce org")

    def parse(self, request: InboundRequest) -> OutboundMessage:
        return self.message(request)

    def events(self, payload: OutboundMessage, request: InboundRequest) -> list[tuple[str, Any]]:
        return [(n.object_type, (payload, n)) for n in payload.notifications]

    def notification(
        self, event: tuple[OutboundMessage, Notification], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        message, item = event
        values = {k: v for k, v in item.fields.items() if v is not None}
        mapped = self.map_with(
            self.object_maps[item.object_type], values, self.configured_by_type[item.object_type]
        )
        if "status" in mapped.changes:
            status = self.status_map.get(str(mapped.changes.pop("status")))
            if status:
                mapped.changes["status"] = status
        command = self.command(
            event_id=item.id,
            event_type=item.object_type.lower(),
            occurred_at=self.modified_at(item, request),
            changes=mapped.changes,
            request=request,
            metadata={
                "organization_id": message.organization_id,
                "action_id": message.action_id,
                "object_type": item.object_type,
                "object_id": item.fields.get("Id"),
            },
        )
        return [command], mapped.skipped

    def map_with(self, mapping: dict[str, str], values: dict[str, Any], configured: set[str]) -> Any:
        return apply_map(values, mapping, configured)

    @staticmethod
    def modified_at(item: Notification, request: InboundRequest) -> Any:
        for name in ("LastModifiedDate", "SystemModstamp", "CreatedDate"):
            try:
                parsed = parse_date(item.fields.get(name))
            except TransformError:
                parsed = None
            if parsed:
                return parsed
        return received(request)

    def answer(self, status: int, body: dict[str, Any]) -> tuple[int, bytes, str] | None:
        """Ack (HTTP 200) once everything is queued, duplicate or ignored; otherwise a fault:
        the sender's mistakes are Client faults with their 4xx, our trouble a Server fault (500)."""
        if status < 300:
            return 200, ACK, SOAP_CONTENT_TYPE
        if status < 500:
            return (
                status,
                fault("Client", str(body.get("error") or "the message was not accepted")),
                SOAP_CONTENT_TYPE,
            )
        return 500, fault("Server", "leadrelay cannot take this message now; retry later"), SOAP_CONTENT_TYPE
