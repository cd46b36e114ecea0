"""One interface for every provider handler.

A handler builds the provider's request from a `ProviderUpdate` (one or several coalesced
commands for one lead), sends it with a pooled `requests.Session` and a timeout, and
classifies the answer. Handlers know nothing of queues, dedup or Kafka.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import requests

from service.domain.command import LeadIdentity, as_text, complete_names, parse_number
from service.domain.http import make_session, parse_retry_after
from service.domain.redact import redact, redact_obj


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"  # retry with backoff, uses the retry budget
    RATE_LIMITED = "rate_limited"  # 429: reschedule, does not use the retry budget
    PERMANENT = "permanent"  # dead-letter now
    ACCEPTED = "accepted"  # async: accepted, poll `request_id` for the end state
    PENDING = "pending"  # async poll: not finished yet


@dataclass
class DeliveryResult:
    outcome: Outcome
    reason: str = ""
    status_code: int | None = None
    retry_after: float | None = None  # seconds
    response: Any = None  # redacted, JSON-serialisable
    request_id: str | None = None  # async APIs
    stage: str = "provider"  # where it failed: "provider", "config", "mapping", "lookup"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.DELIVERED, Outcome.ACCEPTED)


@dataclass(frozen=True)
class ProviderUpdate:
    """What one provider call carries: a lead and the changes to apply (canonical names)."""

    lead: LeadIdentity
    changes: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    post_updated_lead: bool = True
    command_ids: tuple[str, ...] = ()


class PermanentError(Exception):
    """Raised inside a handler for a problem no retry can fix (bad mapping, unknown lead)."""

    def __init__(self, reason: str, stage: str = "mapping", details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
        self.details = details or {}

    def result(self) -> DeliveryResult:
        return DeliveryResult(Outcome.PERMANENT, reason=self.reason, stage=self.stage, details=self.details)


class ConversionError(PermanentError):
    """A value that cannot take the type the provider's contract declares for its field.
    `details["field"]` names the canonical field (ingest answers 400 naming it)."""


@dataclass(frozen=True)
class FieldType:
    """What a provider's contract declares for one of its fields."""

    kind: str  # "string" | "number" | "enum" | "any" (sent as the command has it)
    values: tuple[str, ...] = ()  # enum: the allowed values

    def convert(self, value: Any) -> Any:
        """`value` as this type; ValueError when it cannot be. None (clear) stays None."""
        if value is None or self.kind == "any":
            return value
        if self.kind == "number":
            return parse_number(value)
        text = as_text(value)
        if self.kind == "enum" and text not in self.values:
            raise ValueError(f"{text!r} is not one of {', '.join(self.values)}")
        return text


STRING = FieldType("string")
NUMBER = FieldType("number")
ANY = FieldType("any")


def one_of(*values: str) -> FieldType:
    return FieldType("enum", tuple(values))


class TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.rate_limited = rate_limited  # a 429: reschedule without using the retry budget

    def result(self, stage: str = "lookup") -> DeliveryResult:
        return DeliveryResult(
            Outcome.RATE_LIMITED if self.rate_limited else Outcome.TRANSIENT,
            reason=self.reason,
            retry_after=self.retry_after,
            stage=stage,
        )


def failure_result(exc: PermanentError | TransientError) -> DeliveryResult:
    """What a handler answers when a step before its call raised: the one wrapping of a
    handler's own exceptions into a `DeliveryResult` (a transient one counts as a look-up's)."""
    return exc.result()


def credential_tag(secret: str | None) -> str:
    """A short, stable, non-reversible tag for a credential: rate-limit buckets are named
    after the account without the key itself ending up in Redis key names or logs."""
    if not secret:
        return "none"
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def response_body(response: requests.Response) -> Any:
    try:
        return redact_obj(response.json())
    except ValueError:
        return redact(response.text[:2000])


def error_envelope(body: Any) -> tuple[str, str, Any]:
    """(code, message, details) from a JSON error body: the nested envelope
    `{"success": false, "error": {"code", "message", "details"}}` or the flat
    `{"error": "...", "code", "details"}` (PollyBot, Octanist's older answers)."""
    if not isinstance(body, dict):
        return "", str(body or "")[:200], None
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or ""), error.get("details")
    return str(body.get("code") or ""), str(error or ""), body.get("details")


def classify_http(response: requests.Response, what: str) -> DeliveryResult:
    """The default mapping from an HTTP answer to an outcome; handlers refine it."""
    status = response.status_code
    body = response_body(response)
    if 200 <= status < 300:
        return DeliveryResult(Outcome.DELIVERED, status_code=status, response=body)
    if status == 429:
        return DeliveryResult(
            Outcome.RATE_LIMITED,
            reason=f"{what}: 429 rate limited",
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            response=body,
        )
    if status in (408, 425) or status >= 500:
        return DeliveryResult(
            Outcome.TRANSIENT, reason=f"{what}: HTTP {status}", status_code=status, response=body
        )
    stage = "config" if status in (401, 403) else "provider"
    return DeliveryResult(
        Outcome.PERMANENT, reason=f"{what}: HTTP {status}", status_code=status, response=body, stage=stage
    )


def classify_exception(exc: Exception, what: str) -> DeliveryResult:
    """Timeouts, DNS failures and connection resets are transient."""
    return DeliveryResult(Outcome.TRANSIENT, reason=f"{what}: {type(exc).__name__}: {redact(str(exc))}")


class ProviderHandler:
    """Subclass per provider kind. One instance per configured provider account."""

    kind: ClassVar[str]
    # Canonical field -> provider field, as data; config `field_map` entries override these.
    default_field_map: ClassVar[dict[str, str]] = {}
    # Canonical status -> provider status; config `status_map` entries override these.
    default_status_map: ClassVar[dict[str, str]] = {}
    # The provider contract's type of each provider field (the conversion step); fields not
    # listed have `default_field_type`.
    field_types: ClassVar[dict[str, FieldType]] = {}
    default_field_type: ClassVar[FieldType] = ANY
    # Extra config keys this handler accepts, as marshmallow fields.
    settings_fields: ClassVar[dict[str, Any]] = {}
    # Credentials that only work together: config validation refuses a provider with some
    # but not all of them, and with none unless sandbox mode can stand in (see config.py).
    credential_set: ClassVar[tuple[str, ...]] = ()
    # Default rate limit (calls, per seconds); None: no limit.
    default_rate_limit: ClassVar[tuple[int, float] | None] = None
    # Whether `confirm_applied` can read an update back (else it answers None without a call).
    can_confirm: ClassVar[bool] = False

    def __init__(
        self, name: str, settings: Mapping[str, Any], session: requests.Session | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self.session = session or make_session()
        self.timeout: tuple[float, float] = (
            float(settings.get("connect_timeout_seconds", 5.0)),
            float(settings.get("timeout_seconds", 15.0)),
        )
        self.field_map = {**self.default_field_map, **dict(settings.get("field_map") or {})}
        self.status_map = {**self.default_status_map, **dict(settings.get("status_map") or {})}

    @property
    def account(self) -> str:
        """The rate-limit bucket: one per provider account (credentials), not per replica."""
        return self.name

    def configuration_problem(self) -> str | None:
        """A reason this provider cannot deliver (missing credentials); None when ready."""
        return None

    def prepare(self, update: ProviderUpdate) -> DeliveryResult | None:
        """Calls that must come before the update (a lead id lookup), so that each one is
        paid for with a rate-limit slot of its own. None: nothing to prepare, `deliver` makes
        the call. Otherwise the outcome of the one lookup made: DELIVERED means "prepared"
        (the update goes next, with its own slot); anything else is that lookup's failure."""
        return None

    def deliver(self, update: ProviderUpdate) -> DeliveryResult:
        raise NotImplementedError

    def poll(self, request_id: str) -> DeliveryResult:
        raise NotImplementedError(f"{self.kind} is not asynchronous")

    def provider_metrics(self) -> dict[str, float] | None:
        """Metrics the provider reports about itself (async queue depth...); None: none offered."""
        return None

    def confirm_applied(self, update: ProviderUpdate) -> bool | None:
        """After a crash mid-call: did the provider already apply `update`? None: cannot tell.
        One call (the read-back; a look-up it needs is `prepare`'s). Raises `TransientError`
        when the provider could not answer now (429, 5xx, timeout): ask again later."""
        return None

    def map_fields(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical changes -> provider fields, each converted to the type the provider's
        contract declares. Names are completed first (`complete_names`: first/last from a
        full name and back); unmapped canonical fields are left out; `status: null` is no
        status change (no provider here can clear a status). Raises ConversionError for a
        value that cannot take its declared type, PermanentError for an unmapped status."""
        mapped: dict[str, Any] = {}
        for name, value in complete_names(changes).items():
            target = self.field_map.get(name)
            if not target:
                continue
            if name == "status":
                if value is None:
                    continue
                value = self.map_status(str(value))
            try:
                mapped[target] = self.field_types.get(target, self.default_field_type).convert(value)
            except ValueError as exc:
                raise ConversionError(
                    f"{self.name}: {name} (sent as {target}): {exc}", stage="mapping", details={"field": name}
                ) from None
        return mapped

    def map_status(self, status: str) -> str:
        if status in self.status_map:
            return self.status_map[status]
        raise PermanentError(
            f"{self.name}: status {status!r} has no mapping (status_map knows: {', '.join(sorted(self.status_map)) or 'none'})",
            stage="mapping",
        )
