"""Helpers every sender adapter shares: constant-time signature checks, timestamp windows,
JSON decoding into a marshmallow schema, and the config-driven field mapping.

Kept free of any one vendor's rules so each adapter module reads as its vendor's contract.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from service.domain.command import (
    CANONICAL_FIELDS,
    CANONICAL_STATUSES,
    LeadIdentity,
    normalise_email,
    normalise_phone,
    parse_number,
)
from service.sources.base import AuthenticationFailed, InboundRequest, PayloadInvalid

# ---- config fields ------------------------------------------------------------------------


class LooseSchema(Schema):
    """Vendors add fields over time: validate what we read, ignore the rest."""

    class Meta:
        unknown = EXCLUDE


def field_map_setting() -> fields.Dict:
    """`field_map`: sender field -> canonical field; "" removes a default mapping."""
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.String(validate=validate.OneOf(("", *CANONICAL_FIELDS))),
        load_default=dict,
    )


def status_map_setting() -> fields.Dict:
    """`status_map`: sender value (stage, event type) -> canonical status."""
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.String(validate=validate.OneOf(CANONICAL_STATUSES)),
        load_default=dict,
    )


def secret_setting() -> fields.String:
    return fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))


# ---- signatures ---------------------------------------------------------------------------


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).digest()


def same(expected: str | bytes, given: str | bytes) -> bool:
    """Constant-time comparison of two strings or byte strings."""
    a = expected.encode() if isinstance(expected, str) else expected
    b = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def b64_matches(digest: bytes, given: str) -> bool:
    """`given` is base64 of `digest`; decoding first makes padding and layout irrelevant."""
    try:
        decoded = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(digest, decoded)


def hex_matches(digest: bytes, given: str) -> bool:
    return hmac.compare_digest(digest.hex().encode(), given.strip().lower().encode())


def require_header(request: InboundRequest, name: str) -> str:
    value = request.header(name)
    if not value:
        raise AuthenticationFailed(f"missing {name} header")
    return value


def require_secret(value: str | None, setting: str) -> str:
    if not value:
        # Fail closed: an unconfigured secret never means "accept everything".
        raise AuthenticationFailed(f"no {setting} is configured for this source")
    return value


def check_fresh(sent_at_seconds: float, request: InboundRequest, tolerance_seconds: float) -> None:
    """Reject a timestamp further than `tolerance_seconds` from when the request arrived."""
    now = request.received_at or time.time()
    if abs(now - sent_at_seconds) > tolerance_seconds:
        raise AuthenticationFailed(
            f"the signature timestamp is outside the {int(tolerance_seconds)} s window"
        )


def parse_int_header(value: str, name: str) -> int:
    """A timestamp header; anything not a plausible unix time (s or ms) is rejected."""
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise AuthenticationFailed(f"{name} is not a unix timestamp")
    return int(text)


# ---- decoding -----------------------------------------------------------------------------


def load_json(request: InboundRequest, *, big_ints_as_str: bool = False) -> Any:
    """The JSON body. `big_ints_as_str`: every integer stays its exact decimal text, so an
    id beyond 2^53 is never rounded through a float anywhere downstream."""
    return request.json(big_ints_as_str=big_ints_as_str)


def load_with(schema: Schema, data: Any, *, many: bool = False) -> Any:
    if many and not isinstance(data, list):
        raise PayloadInvalid("the body must be a JSON array", {"_schema": ["expected a JSON array"]})
    if not many and not isinstance(data, dict):
        raise PayloadInvalid("the body must be a JSON object", {"_schema": ["expected a JSON object"]})
    try:
        return schema.load(data, many=many)
    except ValidationError as exc:
        raise PayloadInvalid.from_marshmallow(exc) from None


def from_unix(seconds: float | int | str | None, fallback: float) -> datetime:
    try:
        return datetime.fromtimestamp(float(seconds) if seconds is not None else fallback, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        # Out of range or not a number: the arrival time is the best we know.
        return datetime.fromtimestamp(fallback, UTC)


def received(request: InboundRequest) -> datetime:
    return datetime.fromtimestamp(request.received_at or time.time(), UTC)


# ---- mapping ------------------------------------------------------------------------------


def effective_map(defaults: Mapping[str, str], configured: Mapping[str, str]) -> dict[str, str]:
    """The documented defaults, overridden by config; an empty target drops a default."""
    merged = {**defaults, **configured}
    return {source: target for source, target in merged.items() if target}


@dataclass
class Mapped:
    changes: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0


def apply_map(values: Mapping[str, Any], mapping: Mapping[str, str], counted: Iterable[str] = ()) -> Mapped:
    """Copy `values[source]` to `changes[target]` for each mapping. A mapping whose source
    the payload does not have is skipped, never an error; it is counted when its source is
    in `counted` (the operator's own mappings: an absent default is expected, a configured
    field that never arrives is a misconfiguration worth a metric)."""
    out = Mapped()
    counted = set(counted)
    for source, target in mapping.items():
        if source not in values:
            if source in counted:
                out.skipped += 1
            continue
        value = values[source]
        if target == "value":
            if unreadable_number(value):
                out.skipped += 1  # counted like a missing field; it never clears the CRM's value
                continue
            value = to_number(value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = json.dumps(value, sort_keys=True)
        out.changes[target] = value
    return out


def clean_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Every change value as the command's wire schema requires (scalar; `value` numeric),
    so nothing queued can fail that schema when the dispatcher reads it back."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "value":
            if unreadable_number(value):
                continue  # "5k", "n/a": left out, never sent as null (null clears the CRM's value)
            value = to_number(value)
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = json.dumps(value, sort_keys=True, default=str)
        out[name] = value
    return out


def unreadable_number(value: Any) -> bool:
    """A value the sender gave that is not a number ("5k", "n/a"): not the same as an empty one,
    which means "no value" (null clears the field)."""
    return value not in (None, "") and to_number(value) is None


def to_number(value: Any) -> float | int | None:
    """A sender's number, or None when it has none (empty, not numeric)."""
    if value is None or value == "":
        return None
    try:
        return parse_number(value)
    except ValueError:
        return None


_EMAIL = validate.Email()


def identity_from(changes: dict[str, Any], region: str) -> LeadIdentity | None:
    """email, else phone (E.164 in `region`), else mobile. None: nobody to update.
    A malformed email is dropped from the changes too: it must never reach a provider or
    make the stored command fail its own schema later."""
    email = normalise_email(_text(changes.get("email")))
    if email is not None:
        try:
            _EMAIL(email)
        except ValidationError:
            email = None
            changes.pop("email", None)
    phone = normalise_phone(_text(changes.get("phone")) or _text(changes.get("mobile")), region)
    if phone is not None and not 3 <= len(phone) <= 40:
        phone = None
    if not (email or phone):
        return None
    return LeadIdentity(email=email, phone=phone)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)
