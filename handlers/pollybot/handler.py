"""PollyBot: Update Lead, seed 003.

`PUT {base_url}/api/v1/leads/{leadId}` with `Authorization: Bearer <key>`: a partial update
despite the verb, so only the changed fields are sent. PollyBot merges `metadata` (new keys
added, existing overwritten), replaces arrays inside it and clears anything sent as `null`;
we therefore send only the metadata keys that changed, arrays whole, and `null` to clear.

The docs disagree on the path (`/api/v1/leads/{leadId}` on the update page,
`/api/v1/chatbots/{chatbotId}/leads/{id}` on the overview), so it is a template setting.
Without a lead id the lead is found with the list API's fuzzy `search`, then an exact,
case-insensitive email match: none or several is a permanent lookup error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

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
    error_envelope,
    failure_result,
    one_of,
)
from service.domain.http import parse_retry_after
from service.domain.ttl_cache import SharedTTLCache

POLLYBOT_STATUSES = ("new", "contacted", "qualified", "converted", "lost", "follow_up")
DEFAULT_UPDATE_PATH = "/api/v1/leads/{leadId}"
DEFAULT_SEARCH_PATH = "/api/v1/leads"
METADATA_PREFIX = "metadata."
SEARCH_PAGE_SIZE = 100  # the list API's maximum


def rate_limit_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait after a 429: Retry-After, else X-RateLimit-Reset (unix seconds)."""
    wait = parse_retry_after(headers.get("Retry-After"))
    if wait is not None:
        return wait
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - (now if now is not None else time.time()))
        except ValueError:
            return None
    return None


class PollyBotHandler(ProviderHandler):
    kind: ClassVar[str] = "pollybot"
    # 1,000 requests per hour per API key, a sliding 60-minute window.
    default_rate_limit: ClassVar[tuple[int, float] | None] = (1000, 3600.0)
    # `metadata.<key>`: the canonical field goes into PollyBot's metadata object.
    default_field_map: ClassVar[dict[str, str]] = {
        "full_name": "name",
        "email": "email",
        "phone": "phone",
        "lead_source": "source",
        "status": "status",
        "first_name": "metadata.first_name",
        "last_name": "metadata.last_name",
        "company": "metadata.company",
        "job_title": "metadata.job_title",
        "website": "metadata.website",
        "city": "metadata.city",
        "state": "metadata.state",
        "country": "metadata.country",
        "value": "metadata.value",
        "currency": "metadata.currency",
        "note": "metadata.notes",
        "loss_reason": "metadata.loss_reason",
        "score": "metadata.lead_score",
    }
    # Seed 003: top-level fields are strings, status one of PollyBot's own; metadata values
    # are free JSON (sent as the command has them).
    field_types: ClassVar[dict[str, FieldType]] = {
        "name": STRING,
        "email": STRING,
        "phone": STRING,
        "source": STRING,
        "status": one_of(*POLLYBOT_STATUSES),
    }
    default_status_map: ClassVar[dict[str, str]] = {
        "new": "new",
        "contacted": "contacted",
        "qualified": "qualified",
        "follow_up": "follow_up",
        "won": "converted",
        "lost": "lost",
    }
    settings_fields: ClassVar[dict[str, Any]] = {
        "api_key": fields.String(load_default=None, allow_none=True),  # sk-workspace_...
        "update_path": fields.String(load_default=DEFAULT_UPDATE_PATH),
        "search_path": fields.String(load_default=DEFAULT_SEARCH_PATH),
        "chatbot_id": fields.String(load_default=None, allow_none=True),  # for `{chatbotId}` paths
        "search_max_pages": fields.Integer(load_default=5, validate=validate.Range(min=1, max=100)),
        "lookup_cache_seconds": fields.Float(load_default=3600.0, validate=validate.Range(min=0)),
    }

    def __init__(
        self, name: str, settings: Mapping[str, Any], session: requests.Session | None = None
    ) -> None:
        super().__init__(name, settings, session)
        self.base_url = (settings.get("base_url") or "").rstrip("/")
        self.update_path = settings.get("update_path") or DEFAULT_UPDATE_PATH
        self.search_path = settings.get("search_path") or DEFAULT_SEARCH_PATH
        self.lead_ids = SharedTTLCache(float(settings.get("lookup_cache_seconds", 3600.0)))

    @property
    def account(self) -> str:
        return f"pollybot:{self.base_url}:{credential_tag(self.settings.get('api_key') or self.name)}"

    def configuration_problem(self) -> str | None:
        problems = []
        if not self.base_url:
            problems.append("base_url not configured (PollyBot documents no public host)")
        if not self.settings.get("api_key"):
            problems.append("api_key not configured")
        if "{chatbotId}" in self.update_path and not self.settings.get("chatbot_id"):
            problems.append("update_path needs {chatbotId} but chatbot_id is not configured")
        bad = sorted(v for v in self.status_map.values() if v not in POLLYBOT_STATUSES)
        if bad:
            problems.append(f"status_map targets {bad} are not PollyBot statuses {list(POLLYBOT_STATUSES)}")
        return f"{self.name}: {'; '.join(problems)}" if problems else None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings['api_key']}"}

    # ---- request building ---------------------------------------------------------------

    def build_body(self, update: ProviderUpdate) -> dict[str, Any]:
        """Only the changed fields; mapped `metadata.*` fields and the command's metadata
        are merged into one `metadata` object of just the keys that changed."""
        body: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for target, value in self.map_fields(update.changes).items():
            if target.startswith(METADATA_PREFIX):
                metadata[target[len(METADATA_PREFIX) :]] = value
            else:
                body[target] = value
        # Command metadata as sent: nested arrays whole (PollyBot replaces them), null clears.
        metadata.update(update.metadata)
        if metadata:
            body["metadata"] = metadata
        return body

    def update_url(self, lead_id: str) -> str:
        path = self.update_path.replace("{leadId}", quote(lead_id, safe="")).replace(
            "{chatbotId}", quote(str(self.settings.get("chatbot_id") or ""), safe="")
        )
        return self.base_url + path

    # ---- lead id ------------------------------------------------------------------------

    def prepare(self, update: ProviderUpdate) -> DeliveryResult | None:
        """Search for the lead id in a step of its own (searches count against the same
        1,000 per hour as updates)."""
        lead = update.lead
        if lead.id or not lead.email or self.lead_ids.get(lead.email.strip().lower()):
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
        if not lead.email:
            raise PermanentError(
                f"{self.name}: PollyBot can only find a lead by id or email (search covers name and email)",
                stage="lookup",
            )
        email = lead.email.strip().lower()
        cached = self.lead_ids.get(email)
        if cached:
            return cached
        matches: list[str] = []
        for page in range(1, int(self.settings.get("search_max_pages", 5)) + 1):
            data = self._search(email, page)
            leads = data.get("leads") if isinstance(data.get("leads"), list) else []
            # `search` is fuzzy over name and email: keep exact email matches only.
            matches += [
                str(item["id"])
                for item in leads
                if isinstance(item, dict)
                and item.get("id")
                and str(item.get("email") or "").strip().lower() == email
            ]
            pagination = data.get("pagination") if isinstance(data.get("pagination"), dict) else {}
            if not pagination.get("hasNext"):
                break
        unique = sorted(set(matches))
        if not unique:
            raise PermanentError(f"{self.name}: no PollyBot lead with email {email}", stage="lookup")
        if len(unique) > 1:
            raise PermanentError(
                f"{self.name}: {len(unique)} PollyBot leads have email {email}; refusing to guess",
                stage="lookup",
                details={"lead_ids": unique},
            )
        self.lead_ids.put(email, unique[0])
        return unique[0]

    def _search(self, email: str, page: int) -> dict[str, Any]:
        what = f"{self.name} lead search"
        try:
            response = self.session.get(
                self.base_url + self.search_path,
                params={"search": email, "page": page, "limit": SEARCH_PAGE_SIZE},
                headers=self._headers(),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise TransientError(classify_exception(exc, what).reason) from None
        result = self.classify(response, what)
        if result.outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED):
            raise TransientError(
                result.reason, result.retry_after, rate_limited=result.outcome is Outcome.RATE_LIMITED
            )
        if result.outcome is not Outcome.DELIVERED:
            raise PermanentError(result.reason, stage=result.stage if result.stage == "config" else "lookup")
        body = result.response if isinstance(result.response, dict) else {}
        return body.get("data") if isinstance(body.get("data"), dict) else {}

    # ---- the call -----------------------------------------------------------------------

    def classify(self, response: requests.Response, what: str) -> DeliveryResult:
        result = classify_http(response, what)
        code, message, details = error_envelope(result.response)
        details = details if isinstance(details, dict) else {}
        if result.outcome is Outcome.RATE_LIMITED:
            result.retry_after = rate_limit_wait(response.headers)
            result.details["rate_limit"] = {
                k: response.headers[k]
                for k in (
                    "X-RateLimit-Limit",
                    "X-RateLimit-Remaining",
                    "X-RateLimit-Reset",
                    "X-RateLimit-Used",
                )
                if k in response.headers
            }
            return result
        if result.outcome in (Outcome.PERMANENT, Outcome.TRANSIENT):
            explained = {
                404: "lead not found (deleted?)",
                400: "rejected as invalid",
                409: "conflict",
                401: "API key rejected (check api_key)",
            }.get(response.status_code, "")
            parts = [result.reason, explained, code, message, details.get("message", "")]
            result.reason = ": ".join(p for p in parts if p)
            if code:
                result.details["code"] = code
            if details:
                result.details["error_details"] = details
            if code == "DUPLICATE_EMAIL" and details.get("existingLeadId"):
                result.details["existing_lead_id"] = details["existingLeadId"]
        return result

    def deliver(self, update: ProviderUpdate) -> DeliveryResult:
        what = f"{self.name} PUT lead"
        try:
            body = self.build_body(update)
            if not body:
                return DeliveryResult(Outcome.DELIVERED, reason="no mapped field to update; nothing sent")
            lead_id = self.resolve_lead_id(update)
        except (PermanentError, TransientError) as exc:
            return failure_result(exc)
        try:
            response = self.session.put(
                self.update_url(lead_id), json=body, headers=self._headers(), timeout=self.timeout
            )
        except requests.RequestException as exc:
            return classify_exception(exc, what)
        result = self.classify(response, what)
        result.details["lead_id"] = lead_id
        if response.status_code == 404 and not update.lead.id:
            # The cached id may point at a deleted lead; look it up afresh next time.
            self.lead_ids.forget(str(update.lead.email).strip().lower())
        return result
