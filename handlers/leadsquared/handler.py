"""LeadSquared: Update a Lead (sync), seed 001.

`POST {host}/v2/LeadManagement.svc/Lead.Update?accessKey=..&secretKey=..&leadId=..&postUpdatedLead=true`
with a JSON list of `{"Attribute", "Value"}`. Without a lead id the lead is found by email
(`Leads.GetByEmailaddress`) then by phone (`RetrieveLeadByPhoneNumber`), and cached.
`postUpdatedLead=true` is always sent so the customer's automations fire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import requests
from marshmallow import fields, validate

from handlers.base import (
    STRING,
    DeliveryResult,
    FieldType,
    Outcome,
    PermanentError,
    ProviderHandler,
    ProviderUpdate,
    TransientError,
    classify_exception,
    classify_http,
    credential_tag,
    failure_result,
    response_body,
)
from service.domain.command import as_text
from service.domain.redact import redact
from service.domain.ttl_cache import SharedTTLCache

UPDATE_PATH = "/v2/LeadManagement.svc/Lead.Update"
BY_EMAIL_PATH = "/v2/LeadManagement.svc/Leads.GetByEmailaddress"
BY_PHONE_PATH = "/v2/LeadManagement.svc/RetrieveLeadByPhoneNumber"
BY_ID_PATH = "/v2/LeadManagement.svc/Leads.GetById"


def lsq_value(value: Any) -> str:
    """LeadSquared takes every value as a string; null clears the field (an empty Value)."""
    return as_text(value) or ""


def classify_leadsquared(response: requests.Response, what: str) -> DeliveryResult:
    """LeadSquared reports business errors as HTTP 500 with an `MX*Exception`: not retryable."""
    result = classify_http(response, what)
    body = result.response if isinstance(result.response, dict) else {}
    exception_type = str(body.get("ExceptionType") or "")
    if result.outcome is Outcome.TRANSIENT and exception_type.startswith("MX"):
        message = body.get("ExceptionMessage") or exception_type
        return DeliveryResult(
            Outcome.PERMANENT,
            reason=f"{what}: {exception_type}: {message}",
            status_code=result.status_code,
            response=result.response,
        )
    if result.outcome is Outcome.PERMANENT and body.get("ExceptionMessage"):
        result.reason = f"{result.reason}: {body.get('ExceptionMessage')}"
    if result.status_code == 401:
        result.reason += " (check accessKey/secretKey and the account's API host)"
    return result


class LeadSquaredHandler(ProviderHandler):
    kind: ClassVar[str] = "leadsquared"
    default_base_url: ClassVar[str] = "https://api.leadsquared.com"
    default_rate_limit: ClassVar[tuple[int, float] | None] = (25, 5.0)
    # Every `Value` of Lead.Update is a string (seed 001).
    default_field_type: ClassVar[FieldType] = STRING
    can_confirm: ClassVar[bool] = True
    default_field_map: ClassVar[dict[str, str]] = {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "EmailAddress",
        "phone": "Phone",
        "mobile": "Mobile",
        "company": "Company",
        "job_title": "JobTitle",
        "website": "Website",
        "city": "mx_City",
        "state": "mx_State",
        "country": "mx_Country",
        "zip": "mx_Zip",
        "lead_source": "Source",
        "status": "ProspectStage",
        "value": "mx_Deal_Value",
        "note": "Notes",
        "loss_reason": "mx_Loss_Reason",
        "score": "Score",
    }
    default_status_map: ClassVar[dict[str, str]] = {
        "new": "Prospect",
        "contacted": "Contacted",
        "qualified": "Opportunity",
        "follow_up": "Follow Up",
        "unqualified": "Invalid",
        "won": "Customer",
        "lost": "Lost",
    }
    credential_set: ClassVar[tuple[str, ...]] = ("access_key", "secret_key")
    settings_fields: ClassVar[dict[str, Any]] = {
        "access_key": fields.String(load_default=None, allow_none=True),
        "secret_key": fields.String(load_default=None, allow_none=True),
        "lookup_cache_seconds": fields.Float(load_default=3600.0, validate=validate.Range(min=0)),
    }

    def __init__(
        self, name: str, settings: Mapping[str, Any], session: requests.Session | None = None
    ) -> None:
        super().__init__(name, settings, session)
        self.base_url = (settings.get("base_url") or self.default_base_url).rstrip("/")
        # Lead lookups (by email / phone / id) live on the account's sync API host.
        self.lookup_base_url = (settings.get("lookup_base_url") or self.base_url).rstrip("/")
        self.lead_ids = SharedTTLCache(float(settings.get("lookup_cache_seconds", 3600.0)))

    @property
    def account(self) -> str:
        # Every replica and every provider entry (sync or async) using the same keys shares
        # one limit; the key itself is fingerprinted, never used as a name.
        return f"leadsquared:{self.lookup_base_url}:{credential_tag(self.settings.get('access_key') or self.name)}"

    def configuration_problem(self) -> str | None:
        missing = [k for k in ("access_key", "secret_key") if not self.settings.get(k)]
        if missing:
            return f"{self.name}: {' and '.join(missing)} not configured"
        return None

    def _auth(self) -> dict[str, str]:
        return {"accessKey": self.settings["access_key"], "secretKey": self.settings["secret_key"]}

    def _get(self, path: str, params: dict[str, str], what: str) -> Any:
        try:
            response = self.session.get(
                self.lookup_base_url + path, params={**self._auth(), **params}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise TransientError(classify_exception(exc, what).reason) from None
        result = classify_leadsquared(response, what)
        if result.outcome is Outcome.DELIVERED:
            return response_body(response)
        if result.outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED):
            raise TransientError(
                result.reason, result.retry_after, rate_limited=result.outcome is Outcome.RATE_LIMITED
            )
        raise PermanentError(result.reason, stage="config" if result.status_code == 401 else "lookup")

    @staticmethod
    def lookups(update: ProviderUpdate) -> list[tuple[str, str, dict[str, str]]]:
        """(cache key, path, query) for each way to find the lead, in priority order."""
        lead = update.lead
        found = []
        if lead.email:
            found.append((f"email:{lead.email}", BY_EMAIL_PATH, {"emailaddress": lead.email}))
        if lead.phone:
            digits = "".join(ch for ch in lead.phone if ch.isdigit())
            found.append((f"phone:{digits}", BY_PHONE_PATH, {"phone": digits}))
        return found

    def prepare(self, update: ProviderUpdate) -> DeliveryResult | None:
        """Look the lead id up in a step of its own, so the lookup takes its own rate-limit
        slot (LeadSquared counts it against the same 25 per 5 s as the update)."""
        if update.lead.id or any(self.lead_ids.get(key) for key, _, _ in self.lookups(update)):
            return None
        try:
            lead_id = self.resolve_lead_id(update)
        except (PermanentError, TransientError) as exc:
            return failure_result(exc)
        return DeliveryResult(Outcome.DELIVERED, reason="lead id resolved", details={"lead_id": lead_id})

    def resolve_lead_id(self, update: ProviderUpdate) -> str:
        lead = update.lead
        if lead.id:
            return lead.id
        lookups = self.lookups(update)
        for cache_key, path, params in lookups:
            cached = self.lead_ids.get(cache_key)
            if cached:
                return cached
            found = self._get(path, params, f"{self.name} lead lookup by {cache_key.split(':')[0]}")
            if (
                isinstance(found, list)
                and found
                and isinstance(found[0], dict)
                and found[0].get("ProspectID")
            ):
                lead_id = str(found[0]["ProspectID"])
                self.lead_ids.put(cache_key, lead_id)
                return lead_id
        raise PermanentError(
            f"{self.name}: no lead found for {', '.join(k.split(':')[0] for k, _, _ in lookups)}",
            stage="lookup",
        )

    def build_body(self, update: ProviderUpdate) -> list[dict[str, str]]:
        return [
            {"Attribute": attr, "Value": lsq_value(value)}
            for attr, value in self.map_fields(update.changes).items()
        ]

    def update_params(self, lead_id: str, update: ProviderUpdate) -> dict[str, str]:
        params = {**self._auth(), "leadId": lead_id}
        if update.post_updated_lead:
            params["postUpdatedLead"] = "true"
        return params

    def post_update(
        self, update: ProviderUpdate, url: str, what: str, headers: dict[str, str] | None = None
    ) -> DeliveryResult:
        """Resolve the lead, map the fields and POST them: what the sync and async APIs share.
        A result without a status code means no call was made."""
        try:
            lead_id = self.resolve_lead_id(update)
            body = self.build_body(update)
        except (PermanentError, TransientError) as exc:
            return failure_result(exc)
        if not body:
            return DeliveryResult(Outcome.DELIVERED, reason="no mapped field to update; nothing sent")
        try:
            response = self.session.post(
                url,
                params=self.update_params(lead_id, update),
                headers=headers,
                json=body,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            return classify_exception(exc, what)
        result = classify_leadsquared(response, what)
        result.details["lead_id"] = lead_id
        return result

    def deliver(self, update: ProviderUpdate) -> DeliveryResult:
        what = f"{self.name} Lead.Update"
        result = self.post_update(update, self.base_url + UPDATE_PATH, what)
        if result.outcome is Outcome.DELIVERED and isinstance(result.response, dict):
            if str(result.response.get("Status", "Success")).lower() != "success":
                return DeliveryResult(
                    Outcome.PERMANENT,
                    reason=f"{what}: {redact(str(result.response))}",
                    response=result.response,
                )
        return result

    def confirm_applied(self, update: ProviderUpdate) -> bool | None:
        """Read the lead back (`Leads.GetById`) and compare every attribute we were sending when
        we crashed. The lead id comes from `prepare`'s look-up (cached) or the command; a 429 or
        a failure raises `TransientError`: the caller asks again later instead of resending."""
        try:
            lead_id = self.resolve_lead_id(update)
            expected = self.build_body(update)
        except PermanentError:
            return None
        try:
            found = self._get(BY_ID_PATH, {"id": lead_id}, f"{self.name} Leads.GetById")
        except PermanentError:
            return None
        if not (isinstance(found, list) and found and isinstance(found[0], dict)):
            return None
        current = found[0]
        return all(lsq_value(current.get(item["Attribute"])) == item["Value"] for item in expected)
