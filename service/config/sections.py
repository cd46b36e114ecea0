"""The configuration's schema, section by section (server, storage, database, retention, Redis, dedup,
dispatcher, breaker, alerts, logging, Kafka, routes) and the fields every sender and provider entry shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.domain.validators import MIN_ADMIN_TOKEN_LENGTH, StringList, http_url


class SandboxMode(fields.String):
    """`auto`, `on` or `off`. YAML 1.1 reads a bare `on`/`off` as a boolean (in the file and
    in `LEADRELAY__SANDBOX=off`), so booleans are taken as the words they were written as."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.OneOf(["auto", "on", "off"]), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return super()._deserialize(value, attr, data, **kwargs)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class ServerSchema(_Strict):
    bind = fields.String(load_default="127.0.0.1:8080")
    workers = fields.Integer(load_default=2, validate=validate.Range(min=1, max=64))
    threads = fields.Integer(load_default=4, validate=validate.Range(min=1, max=256))
    max_body_bytes = fields.Integer(load_default=256 * 1024, validate=validate.Range(min=1024))
    public_base_url = fields.String(load_default=None, allow_none=True, validate=http_url)
    admin_token = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=MIN_ADMIN_TOKEN_LENGTH)
    )
    metrics_port = fields.Integer(load_default=9100, validate=validate.Range(min=0, max=65535))


class StorageSchema(_Strict):
    path = fields.String(load_default="var/leadrelay.db")


class DatabaseSchema(_Strict):
    # sqlite:///<path> or postgresql://...; unset: the embedded SQLite file at storage.path.
    url = fields.String(
        load_default=None, allow_none=True, validate=validate.Regexp(r"^(sqlite:///|postgres(ql)?://)")
    )
    pool_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=200))
    statement_timeout_ms = fields.Integer(load_default=5000, validate=validate.Range(min=100))
    connect_timeout_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=1, max=60))


class RetentionSchema(_Strict):
    delivered_days = fields.Float(load_default=7.0, validate=validate.Range(min=0.0001))
    dead_letter_days = fields.Float(load_default=30.0, validate=validate.Range(min=0.0001))
    prune_interval_seconds = fields.Float(load_default=300.0, validate=validate.Range(min=0.1))
    batch = fields.Integer(load_default=500, validate=validate.Range(min=1, max=10000))


class RedisSchema(_Strict):
    url = fields.String(load_default=None, allow_none=True)
    socket_timeout_seconds = fields.Float(load_default=2.0)
    key_prefix = fields.String(load_default="leadrelay:")


class DedupSchema(_Strict):
    # The keys live in the state store's database in both modes; the key stays for old files.
    backend = fields.String(load_default="sqlite", validate=validate.OneOf(["sqlite"]))
    window_seconds = fields.Integer(load_default=7 * 24 * 3600, validate=validate.Range(min=60))
    fingerprint_window_seconds = fields.Integer(load_default=600, validate=validate.Range(min=0))
    pending_seconds = fields.Integer(load_default=60, validate=validate.Range(min=1))


class DispatcherSchema(_Strict):
    poll_interval_seconds = fields.Float(load_default=0.1, validate=validate.Range(min=0.001))
    concurrency = fields.Integer(load_default=8, validate=validate.Range(min=1, max=256))
    batch_size = fields.Integer(load_default=500, validate=validate.Range(min=1))
    # Transient failures are retried until this long after the delivery's first attempt.
    retry_horizon_seconds = fields.Float(load_default=24 * 3600.0, validate=validate.Range(min=0))
    # A secondary bound on attempts; 0: none (the horizon alone decides).
    max_attempts = fields.Integer(load_default=0, validate=validate.Range(min=0))
    backoff_base_seconds = fields.Float(load_default=1.0, validate=validate.Range(min=0))
    max_backoff_seconds = fields.Float(load_default=900.0, validate=validate.Range(min=0))
    breaker = fields.Nested(lambda: BreakerSchema(), load_default=lambda: BreakerSchema().load({}))
    coalesce = fields.Boolean(load_default=True)
    poll_max_attempts = fields.Integer(load_default=20, validate=validate.Range(min=1))
    # How often provider-reported metrics (LeadSquared Async queue) are fetched; 0: never.
    provider_metrics_interval_seconds = fields.Float(load_default=60.0, validate=validate.Range(min=0))


class BreakerSchema(_Strict):
    """The circuit breaker per provider (service/pipeline/breaker.py)."""

    enabled = fields.Boolean(load_default=True)
    window_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=1))
    min_calls = fields.Integer(load_default=10, validate=validate.Range(min=1))
    failure_ratio = fields.Float(load_default=0.5, validate=validate.Range(min=0.01, max=1))
    probe_initial_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.01))
    probe_max_seconds = fields.Float(load_default=120.0, validate=validate.Range(min=0.01))


class AlertsSchema(_Strict):
    """Notifications of breaker transitions, first dead letters and an old backlog."""

    webhook_url = fields.String(load_default=None, allow_none=True)
    signing_secret = fields.String(load_default=None, allow_none=True)
    timeout_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=60))
    attempts = fields.Integer(load_default=3, validate=validate.Range(min=1, max=10))
    backlog_age_seconds = fields.Float(load_default=900.0, validate=validate.Range(min=0))


class LoggingSchema(_Strict):
    level = fields.String(load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]))
    json = fields.Boolean(load_default=True)


class RateLimitSchema(_Strict):
    calls = fields.Integer(required=True, validate=validate.Range(min=1))
    per_seconds = fields.Float(required=True, validate=validate.Range(min=0.001))


# ---- kafka (distributed mode) ---------------------------------------------------------


class KafkaSecuritySchema(_Strict):
    """Passed through to kafka-python unchanged (same names as its keyword arguments)."""

    security_protocol = fields.String(
        load_default="PLAINTEXT", validate=validate.OneOf(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
    )
    sasl_mechanism = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"]),
    )
    sasl_plain_username = fields.String(load_default=None, allow_none=True)
    sasl_plain_password = fields.String(load_default=None, allow_none=True)
    sasl_kerberos_service_name = fields.String(load_default=None, allow_none=True)
    ssl_cafile = fields.String(load_default=None, allow_none=True)
    ssl_certfile = fields.String(load_default=None, allow_none=True)
    ssl_keyfile = fields.String(load_default=None, allow_none=True)
    ssl_password = fields.String(load_default=None, allow_none=True)
    ssl_check_hostname = fields.Boolean(load_default=True)


class KafkaTopicsSchema(_Strict):
    commands = fields.String(load_default="leadrelay.commands")
    dlq = fields.String(load_default="leadrelay.dlq")
    retry = fields.String(load_default="leadrelay.retry")


class KafkaGroupsSchema(_Strict):
    dispatcher = fields.String(load_default="leadrelay-dispatcher")


class KafkaProducerSchema(_Strict):
    # How long a webhook may wait for the broker before answering 503.
    request_timeout_ms = fields.Integer(load_default=10000, validate=validate.Range(min=100))
    max_block_ms = fields.Integer(load_default=10000, validate=validate.Range(min=100))
    delivery_timeout_ms = fields.Integer(load_default=15000, validate=validate.Range(min=200))
    linger_ms = fields.Integer(load_default=2, validate=validate.Range(min=0))
    compression_type = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(["gzip", "snappy", "lz4", "zstd"])
    )


class KafkaConsumerSchema(_Strict):
    max_poll_records = fields.Integer(load_default=500, validate=validate.Range(min=1))
    max_poll_interval_ms = fields.Integer(load_default=60000, validate=validate.Range(min=1000))
    session_timeout_ms = fields.Integer(load_default=10000, validate=validate.Range(min=1000))
    heartbeat_interval_ms = fields.Integer(load_default=2000, validate=validate.Range(min=100))
    request_timeout_ms = fields.Integer(load_default=30000, validate=validate.Range(min=1000))
    poll_timeout_ms = fields.Integer(load_default=500, validate=validate.Range(min=0))
    # The broker holds an empty fetch at most this long; measured on Tansu, a long-poll was
    # answered ~70 ms after the produce at the client default of 500 (issue 11's latency).
    fetch_max_wait_ms = fields.Integer(load_default=50, validate=validate.Range(min=0, max=5000))


class KafkaSourceSchema(_Strict):
    topic = fields.String(required=True, validate=validate.Length(min=1))
    # A configured source name (its type is the payload format) or a source type.
    format = fields.String(required=True)
    group_id = fields.String(load_default=None, allow_none=True)


class KafkaSchema(_Strict):
    bootstrap_servers = StringList(load_default=lambda: ["127.0.0.1:9092"], validate=validate.Length(min=1))
    client_id = fields.String(load_default="leadrelay")
    security = fields.Nested(KafkaSecuritySchema, load_default=lambda: KafkaSecuritySchema().load({}))
    topics = fields.Nested(KafkaTopicsSchema, load_default=lambda: KafkaTopicsSchema().load({}))
    groups = fields.Nested(KafkaGroupsSchema, load_default=lambda: KafkaGroupsSchema().load({}))
    # Topics leadrelay creates when missing (commands, dlq, retry).
    auto_create_topics = fields.Boolean(load_default=True)
    partitions = fields.Integer(load_default=6, validate=validate.Range(min=1, max=10000))
    replication_factor = fields.Integer(load_default=1, validate=validate.Range(min=1, max=16))
    producer = fields.Nested(KafkaProducerSchema, load_default=lambda: KafkaProducerSchema().load({}))
    consumer = fields.Nested(KafkaConsumerSchema, load_default=lambda: KafkaConsumerSchema().load({}))
    # A rate-limit or not-configured wait up to this long is waited out inside the batch;
    # longer waits (and every transient failure) go through the retry topic.
    max_in_batch_wait_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0))
    # A dispatcher that stops heartbeating this long is dead: its in-flight claims are recovered.
    owner_ttl_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=1))
    sources = fields.List(fields.Nested(KafkaSourceSchema), load_default=list)


class RouteSchema(_Strict):
    source = fields.String(required=True)
    event_types = StringList(load_default=lambda: ["*"])
    providers = StringList(required=True, validate=validate.Length(min=1))


COMMON_SOURCE_FIELDS: dict[str, fields.Field] = {
    "type": fields.String(required=True),
    "enabled": fields.Boolean(load_default=True),
    "field_map": fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict),
    "phone_region": fields.String(load_default="US"),
    # Withhold a repeat of the lead's latest accepted change; null: the sender's default.
    "double_submit_guard": fields.Boolean(load_default=None, allow_none=True),
}

COMMON_PROVIDER_FIELDS: dict[str, fields.Field] = {
    "type": fields.String(required=True),
    "enabled": fields.Boolean(load_default=True),
    "base_url": fields.String(load_default=None, allow_none=True, validate=http_url),
    "timeout_seconds": fields.Float(load_default=15.0, validate=validate.Range(min=0.1, max=300)),
    "connect_timeout_seconds": fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=60)),
    "rate_limit": fields.Nested(RateLimitSchema, load_default=None, allow_none=True),
    "field_map": fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict),
    "status_map": fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict),
}


class ConfigSchema(_Strict):
    mode = fields.String(load_default="embedded", validate=validate.OneOf(["embedded", "distributed"]))
    sandbox = SandboxMode(load_default="auto")
    # Set by `leadrelay serve` when it started the provider simulators (sandbox mode).
    sandbox_active = fields.Boolean(load_default=False)
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    storage = fields.Nested(StorageSchema, load_default=lambda: StorageSchema().load({}))
    database = fields.Nested(DatabaseSchema, load_default=lambda: DatabaseSchema().load({}))
    retention = fields.Nested(RetentionSchema, load_default=lambda: RetentionSchema().load({}))
    redis = fields.Nested(RedisSchema, load_default=lambda: RedisSchema().load({}))
    dedup = fields.Nested(DedupSchema, load_default=lambda: DedupSchema().load({}))
    dispatcher = fields.Nested(DispatcherSchema, load_default=lambda: DispatcherSchema().load({}))
    logging = fields.Nested(LoggingSchema, load_default=lambda: LoggingSchema().load({}))
    alerts = fields.Nested(AlertsSchema, load_default=lambda: AlertsSchema().load({}))
    sources = fields.Dict(keys=fields.String(), values=fields.Dict(), load_default=dict)
    providers = fields.Dict(keys=fields.String(), values=fields.Dict(), load_default=dict)
    routes = fields.List(fields.Nested(RouteSchema), load_default=list)
    # Distributed mode (consumers/): brokers, topics, groups, client settings.
    kafka = fields.Nested(lambda: KafkaSchema(), load_default=lambda: KafkaSchema().load({}))

    @validates_schema(skip_on_field_errors=False)
    def _check_references(self, data: dict[str, Any], **_: Any) -> None:
        providers = set(data.get("providers") or {})
        sources = set(data.get("sources") or {})
        errors: dict[str, list[str]] = {}
        for index, route in enumerate(data.get("routes") or []):
            if not isinstance(route, dict) or "source" not in route or "providers" not in route:
                continue
            if route["source"] not in sources and route["source"] != "*":
                errors.setdefault(f"routes.{index}.source", []).append(
                    f"unknown source {route['source']!r} (configured: {', '.join(sorted(sources)) or 'none'})"
                )
            for name in route["providers"]:
                if name not in providers:
                    errors.setdefault(f"routes.{index}.providers", []).append(
                        f"unknown provider {name!r} (configured: {', '.join(sorted(providers)) or 'none'})"
                    )
        if errors:
            raise ValidationError(errors)


def settings_schema(
    common: Mapping[str, fields.Field], extra: Mapping[str, fields.Field], name: str
) -> Schema:
    schema_cls = Schema.from_dict({**common, **extra}, name=name)
    return schema_cls(unknown=RAISE)
