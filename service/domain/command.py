"""The lead-update command: the one shape every source is normalised into.

Wire format `lead-update/v1` (see docs/architecture.md). A command is immutable once
queued; its `command_id` is deterministic (source + the source's own event id, or a hash
of the raw body) so a retried webhook or a redelivered Kafka record maps to the same id.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

SCHEMA_VERSION = "lead-update/v1"

# The canonical vocabulary. Providers map these names to their own through config.
CANONICAL_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "mobile",
    "company",
    "job_title",
    "website",
    "city",
    "state",
    "country",
    "zip",
    "address",
    "lead_source",
    "status",
    "stage",
    "value",
    "currency",
    "note",
    "loss_reason",
    "owner",
    "score",
)

CANONICAL_STATUSES: tuple[str, ...] = (
    "new",
    "contacted",
    "qualified",
    "unqualified",
    "follow_up",
    "won",
    "lost",
)

DEFAULT_PHONE_REGION = "US"


def parse_number(value: Any) -> int | float:
    """A number from a number or numeric text (`"1,250.50"` -> 1250.5); ValueError otherwise.
    A whole number comes back as an int, so `5000.0` is sent as `5000`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return value
    try:
        number = value if isinstance(value, float) else float(str(value).replace(",", "").strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return int(number) if number.is_integer() else number


def as_text(value: Any) -> str | None:
    """A change value as text: numbers without a spurious `.0`, booleans as `true`/`false`;
    None (clear the field) stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def complete_names(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The name rule: a provider gets the name in the form its contract has, whichever form
    the event carried.

    - Only `full_name` (no `first_name` nor `last_name` in the changes): its first
      whitespace-separated token is `first_name`, the rest (one space between tokens) is
      `last_name`; a single token gives `first_name` only ("Cher" -> first_name "Cher").
    - Both `first_name` and `last_name` and no `full_name`: `full_name` is the non-empty ones
      joined by a space. One of them alone derives nothing, so a partial update never
      overwrites a full name with half of it.
    - A `null` name (clear) derives nothing. Names the event gave are never replaced.
    """
    out = dict(changes)
    full = out.get("full_name")
    if isinstance(full, str) and full.strip() and "first_name" not in out and "last_name" not in out:
        first, *rest = full.split()
        out["first_name"] = first
        if rest:
            out["last_name"] = " ".join(rest)
    elif "full_name" not in out and "first_name" in out and "last_name" in out:
        parts = [as_text(out[name]) for name in ("first_name", "last_name")]
        joined = " ".join(part.strip() for part in parts if part and part.strip())
        if joined:
            out["full_name"] = joined
    return out


def normalise_email(value: str | None) -> str | None:
    """Lower-case and trim; empty becomes None."""
    if value is None:
        return None
    value = value.strip().lower()
    return value or None


def normalise_phone(value: str | None, default_region: str = DEFAULT_PHONE_REGION) -> str | None:
    """E.164 when the number parses, else the digits with a leading + kept (never dropped)."""
    if value is None:
        return None
    raw = str(value).strip()
    if not raw:
        return None
    try:
        parsed = phonenumbers.parse(raw, None if raw.startswith("+") else default_region)
        if phonenumbers.is_possible_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        pass
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not digits:
        return None
    return ("+" if raw.startswith("+") else "") + digits


def body_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def make_command_id(source: str, event_id: str | None, raw_body: bytes | None = None) -> str:
    """`<source>:<event id>`; without an event id, `<source>:sha256:<hash of the raw body>`."""
    if event_id:
        return f"{source}:{event_id}"
    if raw_body is None:
        raise ValueError("an event id or the raw body is needed for a command id")
    return f"{source}:sha256:{body_hash(raw_body)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeadIdentity:
    id: str | None = None
    email: str | None = None
    phone: str | None = None

    def __post_init__(self) -> None:
        if not (self.id or self.email or self.phone):
            raise ValueError("a lead needs at least one of id, email or phone")

    @property
    def key(self) -> str:
        """The highest-priority identifier: used for ordering and Kafka partitioning."""
        if self.id:
            return f"id:{self.id}"
        if self.email:
            return f"email:{self.email}"
        return f"phone:{self.phone}"


@dataclass(frozen=True)
class LeadUpdateCommand:
    command_id: str
    source: str
    event_type: str
    occurred_at: datetime
    lead: LeadIdentity
    changes: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    providers: tuple[str, ...] = ()
    post_updated_lead: bool = True
    schema: str = SCHEMA_VERSION

    @property
    def lead_key(self) -> str:
        return self.lead.key

    def with_providers(self, providers: list[str] | tuple[str, ...]) -> LeadUpdateCommand:
        return replace(self, providers=tuple(providers))

    def fingerprint(self) -> str:
        """Content fingerprint for double-submitted forms: same lead, same changes."""
        material = json.dumps(
            {"source": self.source, "lead": self.lead_key, "changes": self.changes},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The wire format: what `COMMAND_SCHEMA.dump(self)` gives (a test holds them equal),
        built directly because the dump cost about 50 us of every accept."""
        lead = self.lead
        return {
            "schema": self.schema,
            "command_id": self.command_id,
            "source": self.source,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat(),
            "lead": {"id": lead.id, "email": lead.email, "phone": lead.phone},
            "changes": dict(self.changes),
            "metadata": dict(self.metadata),
            "providers": list(self.providers),
            "post_updated_lead": bool(self.post_updated_lead),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeadUpdateCommand:
        return COMMAND_SCHEMA.load(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> LeadUpdateCommand:
        return cls.from_dict(json.loads(text))


class NormalisedEmail(fields.Email):
    """Trimmed and lower-cased before it is validated: `" Jane@Example.com"` is fine."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        if isinstance(value, str):
            value = normalise_email(value) or ""
        return super()._deserialize(value, attr, data, **kwargs)


class LeadIdentitySchema(Schema):
    """The lead's identifiers as fields; `LeadIdentityField` adds the one-of rule and builds
    the LeadIdentity. Not schema hooks: marshmallow's hook machinery cost about 3 us of every
    webhook, and the field answers the same (the rule's error under "_schema", only when
    every field is valid; the object only when nothing failed)."""

    id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))
    email = NormalisedEmail(load_default=None, allow_none=True)
    phone = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=3, max=40))


class LeadIdentityField(fields.Nested):
    """`lead`: a LeadIdentitySchema object with at least one of id, email or phone, loaded
    as a LeadIdentity."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(LeadIdentitySchema, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> LeadIdentity:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        if not (loaded.get("id") or loaded.get("email") or loaded.get("phone")):
            raise ValidationError({"_schema": ["at least one of id, email or phone is required"]})
        return LeadIdentity(
            id=loaded.get("id"),
            email=normalise_email(loaded.get("email")),
            phone=normalise_phone(loaded.get("phone")),
        )


def validate_changes(changes: dict[str, Any]) -> None:
    unknown = sorted(set(changes) - set(CANONICAL_FIELDS))
    if unknown:
        raise ValidationError(
            [f"unknown field {name!r}; allowed: {', '.join(CANONICAL_FIELDS)}" for name in unknown]
        )
    for name, value in changes.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValidationError(f"{name}: must be a string, number, boolean or null")
    value = changes.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValidationError("value: must be a number")


def status_problem(status: Any) -> str | None:
    """Why `status` is not a canonical status (None: it is one, or null)."""
    if status is None or status in CANONICAL_STATUSES:
        return None
    return f"status: {status!r} is not a canonical status; allowed: {', '.join(CANONICAL_STATUSES)}"


def validate_event_changes(changes: dict[str, Any]) -> None:
    """`validate_changes` plus what a sender may send: `status` from the canonical
    vocabulary (or null). Applied at ingest, not to queued commands, so a command queued
    before a rule tightened still loads."""
    validate_changes(changes)
    problem = status_problem(changes.get("status"))
    if problem:
        raise ValidationError(problem)


class LeadUpdateCommandSchema(Schema):
    """The versioned wire format of a command (queue rows, Kafka records, the event log)."""

    class Meta:
        unknown = EXCLUDE
        description = (
            "A lead-update command, wire format lead-update/v1 (in the event log: secrets redacted)."
        )

    schema = fields.String(required=True, validate=validate.Equal(SCHEMA_VERSION))
    command_id = fields.String(required=True, validate=validate.Length(min=1, max=512))
    source = fields.String(required=True)
    event_type = fields.String(required=True)
    occurred_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    lead = LeadIdentityField(required=True)
    changes = fields.Dict(keys=fields.String(), load_default=dict, validate=validate_changes)
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    providers = fields.List(fields.String(), load_default=list)
    post_updated_lead = fields.Boolean(load_default=True)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> LeadUpdateCommand:
        data["providers"] = tuple(data.get("providers") or ())
        return LeadUpdateCommand(**data)


# Built once: a schema instance is reusable and costly to build (per request it showed up
# as the largest single cost of ingest).
COMMAND_SCHEMA = LeadUpdateCommandSchema()
