"""The canonical sender: a lead event in leadrelay's own vocabulary, signed with Standard Webhooks.

Anything without a dedicated adapter can send this. Signature: `webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
with a 5-minute tolerance (the Standard Webhooks reference library does the check);
several secrets are accepted so a secret can be rotated without downtime.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, fields, validate
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.domain.command import (
    LeadIdentityField,
    LeadUpdateCommand,
    make_command_id,
    validate_event_changes,
)
from service.domain.validators import StringList
from service.sources.base import (
    AuthenticationFailed,
    InboundRequest,
    Normalised,
    PayloadInvalid,
    SourceAdapter,
    UnsupportedMediaType,
)
from service.sources.common import b64_matches


class CanonicalEventSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = fields.String(load_default=None, validate=validate.Length(min=1, max=256))
    event_type = fields.String(load_default="lead.updated", validate=validate.Length(min=1, max=128))
    occurred_at = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    lead = LeadIdentityField(required=True)
    # No `keys=fields.String()`: a JSON object's keys are always strings, and the key field
    # cost a deserialize per key (~1 us each) for the same answer.
    changes = fields.Dict(required=True, validate=validate_event_changes)
    metadata = fields.Dict(load_default=dict)


_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def validate_signing_secrets(secrets: list[str]) -> None:
    """Each secret is base64 (optionally `whsec_`-prefixed), as Standard Webhooks defines it.
    The reference library decodes leniently (it drops what is not base64), so a mistyped
    secret would otherwise start up and fail every signature."""
    for index, secret in enumerate(secrets):
        encoded = secret.removeprefix("whsec_")
        valid = bool(_BASE64.match(encoded)) and len(encoded.rstrip("=")) % 4 != 1
        if valid:
            try:
                valid = bool(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True))
            except (binascii.Error, ValueError):
                valid = False
        if not valid:
            raise ValidationError(
                f"secret #{index + 1} is not a Standard Webhooks secret (whsec_ followed by base64)"
            )


def _signed_bytes(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether `secret` signed `body` as raw bytes (the Standard Webhooks v1 scheme)."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    except (binascii.Error, ValueError):
        return False
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = hmac.new(key, message, hashlib.sha256).digest()
    for candidate in headers["webhook-signature"].split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and b64_matches(expected, signature):
            return True
    return False


@functools.lru_cache(maxsize=64)
def _webhook(secret: str) -> Webhook:
    """The verifier for one secret, built once: it holds only the decoded key (thread-safe)."""
    return Webhook(secret)


def verify_standard_webhook(request: InboundRequest, secrets: list[str]) -> None:
    """Raise AuthenticationFailed unless one of `secrets` signed the request (5-minute tolerance)."""
    if not secrets:
        raise AuthenticationFailed("no signing secret is configured for this source")
    headers = {
        name: request.header(name) or "" for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    if not all(headers.values()):
        raise AuthenticationFailed("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        request.body.decode("utf-8")
    except UnicodeDecodeError:
        # The reference library verifies decoded text only. Signed bytes that are not UTF-8
        # are a body we cannot read (415), not a failed signature; unsigned ones stay a 401.
        if any(_signed_bytes(secret, headers, request.body) for secret in secrets):
            raise UnsupportedMediaType("the body is not UTF-8 (JSON must be UTF-8, RFC 8259)") from None
        raise AuthenticationFailed("signature verification failed") from None
    for secret in secrets:
        try:
            _webhook(secret).verify(request.body, headers, json_parse=False)
            return
        except (WebhookVerificationError, ValueError, UnicodeDecodeError, binascii.Error) as exc:
            last = str(exc) or type(exc).__name__
    raise AuthenticationFailed(f"signature verification failed: {last}")


class GenericAdapter(SourceAdapter):
    name: ClassVar[str] = "generic"
    settings_fields: ClassVar[dict[str, Any]] = {
        # Standard Webhooks secrets (`whsec_<base64>`); several during a rotation.
        "secrets": StringList(load_default=list, validate=validate_signing_secrets),
        "default_event_type": fields.String(load_default="lead.updated"),
    }
    schema = CanonicalEventSchema()

    def verify(self, request: InboundRequest) -> None:
        if request.transport == "kafka":
            return  # the topic's ACLs authenticate Kafka records
        verify_standard_webhook(request, list(self.settings.get("secrets") or []))

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise PayloadInvalid("the body must be a JSON object", {"_schema": ["expected a JSON object"]})
        try:
            return self.schema.load(body)
        except ValidationError as exc:
            raise PayloadInvalid.from_marshmallow(exc) from None

    def event_id(self, payload: dict[str, Any], request: InboundRequest) -> str | None:
        return request.header("webhook-id") or payload.get("event_id")

    def normalise(self, payload: dict[str, Any], request: InboundRequest) -> Normalised:
        occurred_at = payload.get("occurred_at") or datetime.fromtimestamp(request.received_at or 0, UTC)
        command = LeadUpdateCommand(
            command_id=make_command_id(self.source, self.event_id(payload, request), request.body),
            source=self.source,
            event_type=payload["event_type"],
            occurred_at=occurred_at,
            lead=payload["lead"],
            changes=dict(payload["changes"]),
            metadata=dict(payload["metadata"]),
        )
        return Normalised(commands=[command])
