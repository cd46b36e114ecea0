"""Octanist: Update Lead, seed 004.

`PATCH {base_url}/api/leads` with `X-API-KEY`. The lead is named in the body, not the path:
one identifier, chosen by Octanist's own priority (id, then email, then phone; `match_by`
narrows it when the commands' ids are not Octanist ids). `status` is one of
`qualified | won | lost` and is the only status key sent (never the legacy `changedTo`),
`value` is a number, `note` a string, and `lossReason` goes out only with `lost`, the only
status Octanist reads it for.

409 CONFLICT (several leads match an email/phone) and 404 are permanent with the reason;
401 is permanent at stage "config" (a bad key is no retry's business); 5xx is transient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import requests
from marshmallow import fields, validate

from handlers.base import (
    NUMBER,
    STRING,
    DeliveryResult,
    FieldType,
    Outcome,
    PermanentError,
    ProviderHandler,
    ProviderUpdate,
    classify_exception,
    classify_http,
    credential_tag,
    error_envelope,
    failure_result,
    one_of,
)

OCTANIST_STATUSES = ("qualified", "won", "lost")
IDENTIFIERS = ("id", "email", "phone")
DEFAULT_UPDATE_PATH = "/api/leads"


class OctanistHandler(ProviderHandler):
    kind: ClassVar[str] = "octanist"
    default_rate_limit: ClassVar[tuple[int, float] | None] = None  # "no rate limits on the API"
    default_field_map: ClassVar[dict[str, str]] = {
        "status": "status",
        "value": "value",
        "note": "note",
        "loss_reason": "lossReason",
    }
    # Seed 004: status is an enum, value a number, note and lossReason strings.
    field_types: ClassVar[dict[str, FieldType]] = {
        "status": one_of(*OCTANIST_STATUSES),
        "value": NUMBER,
        "note": STRING,
        "lossReason": STRING,
    }
    default_status_map: ClassVar[dict[str, str]] = {
        "qualified": "qualified",
        "won": "won",
        "lost": "lost",
    }
    settings_fields: ClassVar[dict[str, Any]] = {
        "api_key": fields.String(load_default=None, allow_none=True),
        "update_path": fields.String(load_default=DEFAULT_UPDATE_PATH),
        # Which command identifiers Octanist may match on, in Octanist's priority order.
        "match_by": fields.List(
            fields.String(validate=validate.OneOf(IDENTIFIERS)),
            load_default=lambda: list(IDENTIFIERS),
            validate=validate.Length(min=1),
        ),
    }

    def __init__(
        self, name: str, settings: Mapping[str, Any], session: requests.Session | None = None
    ) -> None:
        super().__init__(name, settings, session)
        self.base_url = (settings.get("base_url") or "https://octanist.com").rstrip("/")
        self.update_path = settings.get("update_path") or DEFAULT_UPDATE_PATH
        wanted = set(settings.get("match_by") or IDENTIFIERS)
        self.match_by = [name for name in IDENTIFIERS if name in wanted]

    @property
    def account(self) -> str:
        return f"octanist:{credential_tag(self.settings.get('api_key') or self.name)}"

    def configuration_problem(self) -> str | None:
        problems = []
        if not self.settings.get("api_key"):
            problems.append("api_key not configured")
        bad = sorted(v for v in self.status_map.values() if v not in OCTANIST_STATUSES)
        if bad:
            problems.append(f"status_map targets {bad} are not Octanist statuses {list(OCTANIST_STATUSES)}")
        return f"{self.name}: {'; '.join(problems)}" if problems else None

    def identifier(self, update: ProviderUpdate) -> dict[str, str]:
        """The single highest-priority identifier the command has (id > email > phone)."""
        for name in self.match_by:
            value = getattr(update.lead, name)
            if value:
                return {name: value}
        raise PermanentError(
            f"{self.name}: the command has none of the identifiers Octanist matches on ({', '.join(self.match_by)})",
            stage="mapping",
        )

    def build_body(self, update: ProviderUpdate) -> dict[str, Any]:
        """The fields to change (no identifier); empty when nothing maps to Octanist."""
        changes = self.map_fields(update.changes)
        body: dict[str, Any] = {}
        status = changes.get("status")
        if status is not None:
            body["status"] = status
        if changes.get("value") is not None:
            body["value"] = changes["value"]
        if changes.get("note") is not None:
            body["note"] = changes["note"]
        if status == "lost" and changes.get("lossReason") is not None:
            body["lossReason"] = changes["lossReason"]
        return body

    def deliver(self, update: ProviderUpdate) -> DeliveryResult:
        what = f"{self.name} PATCH lead"
        try:
            fields_to_change = self.build_body(update)
            if not fields_to_change:
                return DeliveryResult(Outcome.DELIVERED, reason="no mapped field to update; nothing sent")
            body = {**self.identifier(update), **fields_to_change}
        except PermanentError as exc:
            return failure_result(exc)
        try:
            response = self.session.patch(
                self.base_url + self.update_path,
                json=body,
                headers={"X-API-KEY": self.settings["api_key"]},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            return classify_exception(exc, what)
        return self.classify(response, what)

    def classify(self, response: requests.Response, what: str) -> DeliveryResult:
        result = classify_http(response, what)
        if result.outcome is Outcome.DELIVERED:
            return result
        code, message, details = error_envelope(result.response)
        explained = {
            401: "API key missing or invalid (check api_key)",
            403: "access denied (e.g. the lead is rejected by filtering rules)",
            404: "no lead matches the identifier",
            409: "several leads match; give a more specific identifier",
        }.get(response.status_code, "")
        result.reason = ": ".join(p for p in (result.reason, code, message or explained) if p)
        if response.status_code == 403:
            result.stage = "provider"  # a valid key whose lead Octanist refuses: not a config problem
        if code:
            result.details["code"] = code
        if details:
            result.details["error_details"] = details
        return result
