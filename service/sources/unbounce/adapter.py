"""Unbounce form webhooks (https://documentation.unbounce.com/hc/en-us/articles/203510044).

Unbounce POSTs `application/x-www-form-urlencoded` with `page_id`, `page_name`,
`page_url`, `variant`, `data.json` and `data.xml`. `data.json` holds every form field with
its value wrapped in an array (`{"email": ["jane@example.com"]}`); `data.xml` repeats it
and is ignored. Unbounce signs nothing, so the webhook URL carries a secret token
(`POST /webhooks/<source>/<token>`), compared in constant time. No event id: the dedup key
is a hash of the raw body (a retried post is byte-identical).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qs

from service.sources.base import AuthenticationFailed, InboundRequest, PayloadInvalid, UnsupportedMediaType
from service.sources.common import field_map_setting, received, require_secret, same, secret_setting
from service.sources.form_fields import match_form_fields
from service.sources.json_body import JsonRefused, decode_json
from service.sources.sender import SenderAdapter

FORM = "application/x-www-form-urlencoded"


class UnbounceAdapter(SenderAdapter):
    name: ClassVar[str] = "unbounce"
    kafka_capable: ClassVar[bool] = False  # the secret lives in the URL: HTTP only
    settings_fields: ClassVar[dict[str, Any]] = {
        "url_token": secret_setting(),  # long random string; the URL is /webhooks/<source>/<url_token>
        "field_map": field_map_setting(),
    }
    default_field_map: ClassVar[dict[str, str]] = {
        "email": "email",
        "email_address": "email",
        "name": "full_name",
        "full_name": "full_name",
        "first_name": "first_name",
        "last_name": "last_name",
        "phone": "phone",
        "phone_number": "phone",
        "company": "company",
        "company_name": "company",
        "city": "city",
        "message": "note",
    }
    handlers: ClassVar[dict[str, str]] = {"form_submission": "form_submission"}

    def verify(self, request: InboundRequest) -> None:
        expected = require_secret(self.settings.get("url_token"), "url_token")
        given = request.path_params.get("token") or ""
        if not given:
            raise AuthenticationFailed(
                "this source needs its secret token in the URL: /webhooks/<source>/<token>"
            )
        if not same(expected, given):
            raise AuthenticationFailed("the URL token does not match")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        if request.content_type.split(";")[0].strip().lower() != FORM:
            raise UnsupportedMediaType(f"expected {FORM}, got {request.content_type!r}")
        try:
            form = {
                k: v[0] for k, v in parse_qs(request.body.decode("utf-8"), keep_blank_values=True).items()
            }
        except UnicodeDecodeError:
            raise PayloadInvalid("the form is not UTF-8", {"_schema": ["not UTF-8"]}) from None
        if "data.json" not in form:
            raise PayloadInvalid(
                "the form has no data.json field", {"data.json": ["Missing data for required field."]}
            )
        try:
            data = decode_json(form["data.json"])
        except JsonRefused as exc:
            raise PayloadInvalid(str(exc), {"data.json": [str(exc)]}) from None
        except ValueError:
            raise PayloadInvalid("data.json is not JSON", {"data.json": ["Not valid JSON."]}) from None
        if not isinstance(data, dict):
            raise PayloadInvalid("data.json must be an object", {"data.json": ["Not a JSON object."]})
        # Each value is wrapped in an array; a multi-select keeps all its choices.
        fields = {str(k): _unwrap(v) for k, v in data.items()}
        return {"form": form, "fields": fields}

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        return [("form_submission", payload)]

    def form_submission(
        self, payload: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        fields, form = payload["fields"], payload["form"]
        matched = match_form_fields(fields, self.field_map)  # page builders name fields freely
        mapped = self.map_values(matched.values)
        for canonical, value in matched.by_shape.items():
            mapped.changes.setdefault(canonical, value)
        command = self.command(
            event_id=None,  # hash of the raw body
            event_type="form_submission",
            occurred_at=received(request),
            changes=mapped.changes,
            request=request,
            metadata={
                "page_id": form.get("page_id"),
                "page_name": form.get("page_name"),
                "page_url": form.get("page_url"),
                "variant": form.get("variant"),
                **{k: v for k, v in fields.items() if k.startswith("utm_") and isinstance(v, str)},
            },
        )
        return [command], mapped.skipped, matched.inferred


def _unwrap(value: Any) -> Any:
    if isinstance(value, list):
        items = [v for v in value if v is not None]
        if len(items) == 1:
            return items[0]
        return items or None
    return value
