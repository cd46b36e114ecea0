"""Meta (Facebook / Instagram) Lead Ads: Page webhooks for the `leadgen` field
(https://developers.facebook.com/docs/graph-api/webhooks/getting-started/webhooks-for-leadgen).

- `GET` verification: `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`; the
  challenge is echoed only when the verify token matches (constant time), else 403.
- `POST` notifications, batched (`entry[].changes[]`), signed with
  `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app secret>`.
- Ids exceed 2^53: the body is decoded with every integer kept as its exact text.
- A notification carries only ids, so each lead's `field_data` is fetched from the Graph
  API (`GET /<version>/<leadgen_id>`, the page access token in the Authorization header,
  never in a URL), retried and cached (see `service/sources/fetch.py`); if it cannot be
  fetched now we answer 503 and Meta redelivers. Dedup key: `leadgen_id`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import fields

from service.sources.base import AuthenticationFailed, InboundRequest, UpstreamUnavailable
from service.sources.common import (
    LooseSchema,
    field_map_setting,
    from_unix,
    hex_matches,
    hmac_sha256,
    load_json,
    load_with,
    require_header,
    require_secret,
    same,
    secret_setting,
)
from service.sources.fetch import FetchClient, FetchError, Verdict, fetch_settings, policy_from
from service.sources.sender import SenderAdapter, Skip

DEFAULT_GRAPH = "https://graph.facebook.com"
LEAD_FIELDS = "id,created_time,ad_id,adset_id,campaign_id,form_id,field_data,is_organic,platform"
# Graph error codes that are temporary (throttling, service trouble): retry.
TRANSIENT_CODES = {1, 2, 4, 17, 32, 341, 613}


def graph_classifier(status: int, body: Any) -> Verdict:
    """Graph reports most errors as HTTP 400 with `error.code`; classify by the code."""
    if 200 <= status < 300:
        return Verdict.OK
    error = (body or {}).get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    if error.get("is_transient") or error.get("code") in TRANSIENT_CODES or status == 429 or status >= 500:
        return Verdict.TRANSIENT
    if status == 404 or (error.get("code") == 100 and error.get("error_subcode") == 33):
        return Verdict.NOT_FOUND
    return Verdict.FAILED


class LeadgenValue(LooseSchema):
    leadgen_id = fields.String(required=True)
    page_id = fields.String(load_default=None)
    form_id = fields.String(load_default=None)
    ad_id = fields.String(load_default=None)
    adgroup_id = fields.String(load_default=None)
    created_time = fields.Integer(load_default=None)


class Change(LooseSchema):
    field = fields.String(required=True)
    value = fields.Dict(load_default=dict)


class Entry(LooseSchema):
    id = fields.String(load_default=None)
    time = fields.Integer(load_default=None)
    changes = fields.List(fields.Nested(Change), load_default=list)


class Notification(LooseSchema):
    object = fields.String(required=True)
    entry = fields.List(fields.Nested(Entry), required=True)


class MetaLeadAdsAdapter(SenderAdapter):
    name: ClassVar[str] = "meta_lead_ads"
    settings_fields: ClassVar[dict[str, Any]] = {
        "app_secret": secret_setting(),  # App Dashboard > Settings > Basic > App secret
        "verify_token": secret_setting(),  # any string you also type into the webhook setup
        "access_token": secret_setting(),  # page access token with leads_retrieval
        "graph_api_version": fields.String(load_default="v21.0"),
        "field_map": field_map_setting(),  # field_data name -> canonical field
        **fetch_settings(DEFAULT_GRAPH),
    }
    default_field_map: ClassVar[dict[str, str]] = {
        "email": "email",
        "full_name": "full_name",
        "first_name": "first_name",
        "last_name": "last_name",
        "phone_number": "phone",
        "city": "city",
        "state": "state",
        "country": "country",
        "zip_code": "zip",
        "post_code": "zip",
        "street_address": "address",
        "company_name": "company",
        "job_title": "job_title",
    }
    handlers: ClassVar[dict[str, str]] = {"leadgen": "leadgen"}
    schema = Notification()
    value_schema = LeadgenValue()

    def __init__(self, source: str, settings: Any) -> None:
        super().__init__(source, settings)
        self.graph = FetchClient(
            settings.get("api_base_url") or DEFAULT_GRAPH,
            policy_from(settings),
            name=f"{source} Graph API",
            headers={"Authorization": f"Bearer {settings.get('access_token') or ''}"},
            classifier=graph_classifier,
        )

    def handle_get(self, request: InboundRequest) -> tuple[int, str] | None:
        expected = self.settings.get("verify_token")
        mode = request.query.get("hub.mode")
        token = request.query.get("hub.verify_token") or ""
        challenge = request.query.get("hub.challenge") or ""
        if mode != "subscribe" or not expected or not challenge or not same(expected, token):
            return 403, "verification failed"
        return 200, challenge

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return
        secret = require_secret(self.settings.get("app_secret"), "app_secret")
        header = require_header(request, "x-hub-signature-256")
        scheme, _, given = header.partition("=")
        if scheme != "sha256" or not hex_matches(hmac_sha256(secret, request.body), given):
            raise AuthenticationFailed("X-Hub-Signature-256 does not match")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        return load_with(self.schema, load_json(request, big_ints_as_str=True))

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for entry in payload["entry"]:
            for change in entry["changes"]:
                if change["field"] == "leadgen" and payload["object"] == "page":
                    value = load_with(self.value_schema, change["value"])
                    value.setdefault("page_id", entry.get("id"))
                    value["entry_time"] = entry.get("time")
                    out.append(("leadgen", value))
                else:
                    out.append((f"{payload['object']}.{change['field']}", change))
        return out

    def leadgen(
        self, value: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        lead = self._fetch_lead(value["leadgen_id"])
        answers = {
            item["name"]: _single(item.get("values"))
            for item in lead.get("field_data") or []
            if isinstance(item, dict) and item.get("name")
        }
        mapped = self.map_values(answers)
        command = self.command(
            event_id=value["leadgen_id"],
            event_type="leadgen",
            occurred_at=from_unix(value.get("created_time") or value.get("entry_time"), request.received_at),
            changes=mapped.changes,
            request=request,
            metadata={
                "leadgen_id": value["leadgen_id"],
                "page_id": value.get("page_id"),
                "form_id": value.get("form_id") or lead.get("form_id"),
                "ad_id": value.get("ad_id") or lead.get("ad_id"),
                "campaign_id": lead.get("campaign_id"),
                "platform": lead.get("platform"),
                "is_organic": lead.get("is_organic"),
            },
        )
        return [command], mapped.skipped

    def _fetch_lead(self, leadgen_id: str) -> dict[str, Any]:
        if not self.settings.get("access_token"):
            raise UpstreamUnavailable("access_token is not configured: lead details cannot be fetched")
        if not (leadgen_id.isascii() and leadgen_id.isdigit()):
            raise Skip("malformed_leadgen_id")  # never put arbitrary text into the Graph path
        version = self.settings.get("graph_api_version") or "v21.0"
        try:
            body = self.graph.request(
                "GET",
                f"/{version}/{leadgen_id}",
                params={"fields": LEAD_FIELDS},
                cache_key=f"lead:{leadgen_id}",
            )
        except FetchError as exc:
            if exc.verdict is Verdict.NOT_FOUND:
                raise Skip("lead_not_found") from None
            raise UpstreamUnavailable("the Graph API lead fetch failed", log_detail=exc.reason) from None
        return body if isinstance(body, dict) else {}


def _single(values: Any) -> Any:
    if isinstance(values, list):
        return values[0] if len(values) == 1 else [str(v) for v in values]
    return values
