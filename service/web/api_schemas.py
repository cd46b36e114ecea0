"""The marshmallow schemas of the JSON API's bodies (errors, webhook results, events, replays, the overview,
provider states, the dry run): the routes answer in these shapes and /openapi.json is generated from them."""

from __future__ import annotations

from marshmallow import EXCLUDE, INCLUDE, Schema, fields, validate

from service.domain.command import LeadUpdateCommandSchema
from service.web.event_filters import EVENT_STATUSES


class Answer(Schema):
    """A JSON answer: it names what it always holds; a key added later does not break a reader."""

    class Meta:
        unknown = EXCLUDE


def nullable_string(description: str | None = None) -> fields.String:
    return fields.String(allow_none=True, metadata={"description": description} if description else {})


def count() -> fields.Integer:
    return fields.Integer(required=True)


class ErrorSchema(Answer):
    error = fields.String(required=True)
    code = fields.String(
        required=True, metadata={"description": "machine-readable, e.g. UNAUTHORIZED, VALIDATION_ERROR"}
    )
    details = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "field -> messages, for a payload that fails the sender's schema"},
    )


class CommandResultSchema(Answer):
    command_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["accepted", "duplicate", "in_progress"]))
    duplicate_of = fields.String()


class WebhookResultSchema(Schema):
    class Meta:
        unknown = EXCLUDE
        description = (
            "`accepted` (202): durably queued. `duplicate` (200): seen before, nothing queued; "
            "`duplicate_of` names the command it repeats when it is a double submit (the same changes as the "
            "lead's latest accepted event from this source), which the event log keeps with status `duplicate`. "
            "`ignored` (200): an event type this sender's adapter does not handle, acknowledged and counted."
        )

    status = fields.String(required=True, validate=validate.OneOf(["accepted", "duplicate", "ignored"]))
    command_id = fields.String()
    duplicate_of = fields.String()
    command_ids = fields.List(fields.String())
    results = fields.List(fields.Nested(CommandResultSchema))
    ignored = fields.List(fields.String())


class DeliverySchema(Answer):
    provider = fields.String(required=True)
    status = fields.String(required=True)
    attempts = fields.Integer(required=True)
    next_attempt_at = nullable_string()
    last_error = nullable_string()
    error_stage = nullable_string()
    response = fields.Raw(allow_none=True)
    request_id = nullable_string()
    replays = fields.Integer()
    updated_at = nullable_string()
    delivered_at = nullable_string()
    first_attempt_at = nullable_string()


class ProviderStateSchema(Schema):
    class Meta:
        unknown = EXCLUDE
        description = "Operator pause and circuit breaker of one provider (docs/outages.md)"

    provider = fields.String()
    paused = fields.Boolean(required=True)
    breaker = fields.String(required=True, validate=validate.OneOf(["closed", "open", "half_open"]))
    reason = nullable_string()
    opened_at = nullable_string()
    open_seconds = fields.Float()
    next_probe_at = nullable_string()
    probes = fields.Integer()
    updated_at = nullable_string()


class ProviderStatesSchema(Answer):
    providers = fields.Dict(keys=fields.String(), values=fields.Nested(ProviderStateSchema), required=True)


class EventSchema(Answer):
    command_id = fields.String(required=True)
    status = fields.String(required=True)
    lead_key = fields.String()
    source = fields.String(required=True)
    event_type = fields.String(required=True)
    occurred_at = fields.String()
    received_at = nullable_string()
    duplicates_received = fields.Integer()
    duplicate_of = nullable_string(
        "a double submit (status `duplicate`, nothing delivered): the command it repeats"
    )
    command = fields.Nested(LeadUpdateCommandSchema, required=True)
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)


class EventSummarySchema(Schema):
    class Meta:
        unknown = INCLUDE

    seq = fields.Integer()
    command_id = fields.String(required=True)


class EventPageSchema(Answer):
    events = fields.List(fields.Nested(EventSummarySchema), required=True)
    next_after = fields.Integer(required=True)


class ReplaySchema(Answer):
    status = fields.String(required=True, validate=validate.OneOf(["replaying", "nothing_to_replay"]))
    command_id = fields.String(required=True)
    providers = fields.List(fields.String(), required=True)


class BulkReplaySchema(Answer):
    dry_run = fields.Boolean(required=True)
    events = count()
    deliveries = count()


class MinuteSchema(Answer):
    minute = fields.String(required=True)
    delivered = count()
    failed = count()


class BudgetSampleSchema(Answer):
    at = fields.String(required=True, metadata={"description": "the sample's moment (a 5-second grid)"})
    used = fields.Integer(
        required=True, metadata={"description": "calls in the limiter's window ending at `at`"}
    )


class RateLimitBudgetSchema(Answer):
    calls = count()
    per_seconds = fields.Float(required=True)
    samples = fields.List(
        fields.Nested(BudgetSampleSchema),
        required=True,
        metadata={"description": "the dispatchers' samples over the last 5 minutes, oldest first"},
    )


class ProviderOverviewSchema(Answer):
    delivered_last_hour = count()
    failures_by_stage = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    dead_letters = count()
    pending = count()
    oldest_pending_age_seconds = fields.Float(required=True)
    polling = count()
    rate_limit = fields.Nested(
        RateLimitBudgetSchema,
        required=True,
        allow_none=True,
        metadata={"description": "null: no dispatcher sampled this provider's limit in the last 5 minutes"},
    )


class OverviewSchema(Answer):
    providers = fields.Dict(keys=fields.String(), values=fields.Nested(ProviderOverviewSchema), required=True)
    sources = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True)
    series = fields.List(fields.Nested(MinuteSchema), required=True)


class HealthSchema(Answer):
    status = fields.String(required=True)


class ReadinessSchema(Schema):
    class Meta:
        unknown = INCLUDE

    status = fields.String(required=True)


class TrySourceRequestSchema(Answer):
    """The dry run's request; the route loads it with this schema."""

    payload = fields.Raw(
        required=True,
        allow_none=True,
        metadata={"description": "the body as the sender posts it: a JSON value, or the raw text"},
    )
    headers = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    content_type = fields.String(allow_none=True)
    token = fields.String(allow_none=True)
    query = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)


class TrySourceResultSchema(Answer):
    ok = fields.Boolean(required=True)
    source = fields.String()
    verification = fields.String(required=True)
    commands = fields.List(fields.Dict(), required=True)
    ignored = fields.List(fields.String(), required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True)


class EventFilterSchema(Schema):
    """The event-log filter's query arguments (service/web/event_filters.py reads them)."""

    status = fields.String(validate=validate.OneOf(EVENT_STATUSES))
    provider = fields.String()
    source = fields.String()
    event_type = fields.String()
    lead = fields.String(metadata={"description": "the lead's email, phone (E.164) or id"})
    since = fields.String(
        metadata={"description": "received at or after: epoch seconds or ISO 8601 (UTC when no offset)"}
    )
    until = fields.String(metadata={"description": "received before; as `since`"})


# The components of /openapi.json, by the names the document uses.
COMPONENTS: dict[str, type[Schema]] = {
    "Error": ErrorSchema,
    "WebhookResult": WebhookResultSchema,
    "Command": LeadUpdateCommandSchema,
    "Delivery": DeliverySchema,
    "ProviderState": ProviderStateSchema,
    "Event": EventSchema,
    "EventSummary": EventSummarySchema,
    "Replay": ReplaySchema,
    "BulkReplay": BulkReplaySchema,
    "Overview": OverviewSchema,
}
