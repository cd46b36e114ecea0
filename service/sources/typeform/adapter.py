"""Typeform webhooks: `form_response` (https://www.typeform.com/developers/webhooks/).

Signature: `Typeform-Signature: sha256=<base64 HMAC-SHA256 of the raw body>` with the
webhook's secret. Typeform sends no timestamp, so replays are stopped by dedup on
`event_id`. Answers are matched to canonical fields by the question's `ref` (set readable
refs in the form). Typeform's documented payload lists each question's `ref` in
`form_response.definition.fields`, while an answer may carry only its `field.id`: the ref
is resolved through the definition, and a question's `id` works as a key too. Hidden
fields are addressed as `hidden.<name>`, the score as `calculated.score`. By default the first `email` answer becomes the email and the first
`phone_number` answer the phone.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, ClassVar

from marshmallow import fields

from service.sources.base import AuthenticationFailed, InboundRequest
from service.sources.common import (
    LooseSchema,
    b64_matches,
    field_map_setting,
    hmac_sha256,
    load_with,
    received,
    require_header,
    require_secret,
    secret_setting,
)
from service.sources.sender import SenderAdapter


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# How an answer of each type carries its value.
ANSWER_VALUE = {
    "text": lambda a: a.get("text"),
    "email": lambda a: a.get("email"),
    "phone_number": lambda a: a.get("phone_number"),
    "number": lambda a: a.get("number"),
    "boolean": lambda a: a.get("boolean"),
    "date": lambda a: a.get("date"),
    "url": lambda a: a.get("url"),
    "file_url": lambda a: a.get("file_url"),
    "choice": lambda a: (a.get("choice") or {}).get("label") or (a.get("choice") or {}).get("other"),
    "choices": lambda a: [
        *_as_list((a.get("choices") or {}).get("labels")),
        *_as_list((a.get("choices") or {}).get("other")),
    ],
    "payment": lambda a: (a.get("payment") or {}).get("amount"),
}


class AnswerField(LooseSchema):
    id = fields.String(load_default=None)
    ref = fields.String(load_default=None)
    type = fields.String(load_default=None)


class Answer(LooseSchema):
    type = fields.String(required=True)
    field = fields.Nested(AnswerField, required=True)
    text = fields.Raw()
    email = fields.Raw()
    phone_number = fields.Raw()
    number = fields.Raw()
    boolean = fields.Raw()
    date = fields.Raw()
    url = fields.Raw()
    file_url = fields.Raw()
    choice = fields.Dict()
    choices = fields.Dict()
    payment = fields.Dict()


class DefinitionField(LooseSchema):
    id = fields.String(load_default=None)
    ref = fields.String(load_default=None)


class Definition(LooseSchema):
    fields = fields.List(fields.Nested(DefinitionField), load_default=list)


class FormResponse(LooseSchema):
    form_id = fields.String(required=True)
    token = fields.String(load_default=None)
    submitted_at = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    hidden = fields.Dict(keys=fields.String(), load_default=dict)
    calculated = fields.Dict(keys=fields.String(), load_default=dict)
    answers = fields.List(fields.Nested(Answer), load_default=list)
    definition = fields.Nested(Definition, load_default=None)


class TypeformEvent(LooseSchema):
    event_id = fields.String(required=True)
    event_type = fields.String(required=True)
    form_response = fields.Nested(FormResponse, load_default=None)


class TypeformAdapter(SenderAdapter):
    name: ClassVar[str] = "typeform"
    kafka_capable: ClassVar[bool] = True
    settings_fields: ClassVar[dict[str, Any]] = {
        "secret": secret_setting(),  # the webhook's secret (Connect > Webhooks > Edit > Secret)
        "field_map": field_map_setting(),
    }
    default_field_map: ClassVar[dict[str, str]] = {"type:email": "email", "type:phone_number": "phone"}
    handlers: ClassVar[dict[str, str]] = {"form_response": "form_response"}
    schema = TypeformEvent()

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return
        secret = require_secret(self.settings.get("secret"), "secret")
        header = require_header(request, "typeform-signature")
        scheme, _, given = header.partition("=")
        if scheme != "sha256" or not b64_matches(hmac_sha256(secret, request.body), given):
            raise AuthenticationFailed("Typeform-Signature does not match")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        return load_with(self.schema, request.json())

    def event_id(self, payload: dict[str, Any], request: InboundRequest) -> str | None:
        return payload["event_id"]

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        return [(payload["event_type"], payload)]

    def form_response(
        self, payload: dict[str, Any], request: InboundRequest, context: Any = None
    ) -> tuple[list[Any], int]:
        response = payload["form_response"] or {}
        ref_of_id = {
            question["id"]: question["ref"]
            for question in (response.get("definition") or {}).get("fields", [])
            if question.get("id") and question.get("ref")
        }
        values: dict[str, Any] = {}
        for answer in response.get("answers", []):
            value = ANSWER_VALUE.get(answer["type"], lambda a: None)(answer)
            question_id = answer["field"].get("id")
            ref = answer["field"].get("ref") or ref_of_id.get(question_id or "")
            if ref:
                values[ref] = value
            if question_id:
                values.setdefault(question_id, value)
            values.setdefault(f"type:{answer['type']}", value)
        for key, value in response.get("hidden", {}).items():
            values[f"hidden.{key}"] = value
        for key, value in response.get("calculated", {}).items():
            values[f"calculated.{key}"] = value
        mapped = self.map_values(values)
        hidden = response.get("hidden", {})
        command = self.command(
            event_id=self.event_id(payload, request),
            event_type="form_response",
            occurred_at=response.get("submitted_at") or received(request),
            changes=mapped.changes,
            request=request,
            metadata={
                "form_id": response.get("form_id"),
                "response_token": response.get("token"),
                **{k: v for k, v in hidden.items() if k.startswith("utm_")},
            },
        )
        return [command], mapped.skipped
