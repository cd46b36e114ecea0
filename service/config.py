"""Configuration is data: a YAML file validated by marshmallow at start-up.

Load order: the file named by `--config` / `LEADRELAY_CONFIG` (default: the bundled
`config/leadrelay.yaml`), then environment overrides. Any key can be overridden with
`LEADRELAY__<SECTION>__<KEY>[__<KEY>...]=<yaml value>`, for example
`LEADRELAY__PROVIDERS__LEADSQUARED__SECRET_KEY=...`: that is how secrets and URLs come in
from Kubernetes Secrets without touching the file.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.config_checks import (
    ENV_PREFIX,
    SandboxMode,
    apply_env_overrides,
    credential_errors,
    env_path,
    name_env_variable,
    secret_length_errors,
)
from service.domain.validators import MIN_ADMIN_TOKEN_LENGTH, http_url
from service.redact import register_secret, register_secrets_in

CONFIG_ENV = "LEADRELAY_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "leadrelay.yaml"


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad key."""


class StringList(fields.List):
    """A list of strings that also accepts a comma-separated string (handy in env vars)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.String(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
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


def _section_schema(
    common: Mapping[str, fields.Field], extra: Mapping[str, fields.Field], name: str
) -> Schema:
    schema_cls = Schema.from_dict({**common, **extra}, name=name)
    return schema_cls(unknown=RAISE)


@dataclass(frozen=True)
class Config:
    """The validated configuration. Sections are plain dicts (the data is the config)."""

    data: dict[str, Any]
    path: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def sources(self) -> dict[str, dict[str, Any]]:
        return self.data["sources"]

    @property
    def providers(self) -> dict[str, dict[str, Any]]:
        return self.data["providers"]

    @property
    def sandbox(self) -> bool:
        return bool(self.data.get("sandbox_active"))

    def enabled_providers(self) -> dict[str, dict[str, Any]]:
        return {name: p for name, p in self.providers.items() if p.get("enabled", True)}

    def route(self, source: str, event_type: str) -> list[str]:
        """Providers for an event: the first route whose source and event-type pattern match."""
        for route in self.data["routes"]:
            if route["source"] not in (source, "*"):
                continue
            if any(fnmatch.fnmatchcase(event_type, pattern) for pattern in route["event_types"]):
                return list(route["providers"])
        return []


def _format_errors(messages: Any, prefix: str = "") -> list[str]:
    lines: list[str] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            lines.extend(_format_errors(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        lines.append(f"{prefix}: {'; '.join(messages)}")
    elif isinstance(messages, list):
        for item in messages:
            lines.extend(_format_errors(item, prefix))
    else:
        lines.append(f"{prefix}: {messages}")
    return lines


def validate_config(
    raw: Mapping[str, Any], path: str | None = None, env_names: Mapping[str, str] | None = None
) -> Config:
    """`env_names`: dotted key -> the environment variable that set it (named in errors)."""
    from handlers import HANDLER_KINDS
    from service.sources import SOURCE_KINDS

    errors: list[str] = []
    try:
        data = ConfigSchema().load(dict(raw or {}))
    except ValidationError as exc:
        # Keep going with what was valid so one run reports every bad key, not the first.
        errors.extend(_format_errors(exc.messages))
        data = {**ConfigSchema().load({}), **(exc.valid_data or {})}
        data["sources"] = dict((raw or {}).get("sources") or {})
        data["providers"] = dict((raw or {}).get("providers") or {})
        data["routes"] = []

    for section, kinds, common in (
        ("sources", SOURCE_KINDS, COMMON_SOURCE_FIELDS),
        ("providers", HANDLER_KINDS, COMMON_PROVIDER_FIELDS),
    ):
        for name, settings in list(data[section].items()):
            kind = (settings or {}).get("type") if isinstance(settings, dict) else None
            if kind not in kinds:
                errors.append(f"{section}.{name}.type: {kind!r} is not one of {', '.join(sorted(kinds))}")
                continue
            schema = _section_schema(common, kinds[kind].settings_fields, f"{section}.{kind}")
            try:
                data[section][name] = schema.load(settings)
            except ValidationError as exc:
                errors.extend(_format_errors(exc.messages, f"{section}.{name}"))
                continue
            if section == "sources" and data[section][name]["double_submit_guard"] is None:
                data[section][name]["double_submit_guard"] = kinds[kind].double_submit_guard
    kafka = data.get("kafka") if isinstance(data.get("kafka"), dict) else {}
    for index, binding in enumerate(kafka.get("sources") or []):
        if not isinstance(binding, dict) or "format" not in binding:
            continue  # already reported by the schema
        if binding["format"] not in data["sources"] and binding["format"] not in SOURCE_KINDS:
            errors.append(
                f"kafka.sources.{index}.format: {binding['format']!r} is neither a configured source"
                f" ({', '.join(sorted(data['sources'])) or 'none'}) nor a source type"
                f" ({', '.join(sorted(SOURCE_KINDS))})"
            )
            continue
        errors.extend(_kafka_format_problems(index, binding["format"], data["sources"], SOURCE_KINDS))
    if data.get("mode") == "distributed" and not (data.get("redis") or {}).get("url"):
        errors.append(
            "redis.url: distributed mode needs Redis for the shared rate limiter (LEADRELAY__REDIS__URL)"
        )
    if data.get("mode") == "distributed" and not str(
        (data.get("database") or {}).get("url") or ""
    ).startswith(("postgresql://", "postgres://")):
        errors.append(
            "database.url: distributed mode keeps its record in PostgreSQL (LEADRELAY__DATABASE__URL)"
        )
    errors.extend(credential_errors(data, HANDLER_KINDS))
    errors.extend(secret_length_errors(data))
    if errors:
        named = [name_env_variable(line, env_names or {}) for line in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(named))
    register_secrets_in(data)
    database_password = urlsplit((data.get("database") or {}).get("url") or "").password
    if database_password:
        register_secret(database_password)  # a driver error may echo the URL
    return Config(data=data, path=path)


def _kafka_format_problems(
    index: int, fmt: str, sources: dict[str, Any], kinds: Mapping[str, Any]
) -> list[str]:
    """A binding the source consumer could not serve: an HTTP-only sender (a SOAP exchange, a
    URL token), or a bare type whose adapter needs settings (a mapped sender's expressions)."""
    settings = sources.get(fmt)
    kind = kinds.get(settings.get("type") if isinstance(settings, dict) else fmt)
    if kind is None:
        return []
    where = f"kafka.sources.{index}.format"
    if not kind.kafka_capable:
        return [f"{where}: {kind.name!r} senders are HTTP only and cannot be read from a Kafka topic"]
    if fmt not in sources:
        try:
            _section_schema(COMMON_SOURCE_FIELDS, kind.settings_fields, f"sources.{fmt}").load({"type": fmt})
        except ValidationError:
            return [
                f"{where}: the {fmt!r} type needs settings; bind a configured source of that type by its name"
            ]
    return []


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    environ = os.environ if environ is None else environ
    chosen = Path(path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        raw = yaml.safe_load(chosen.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {chosen}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {chosen} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {chosen}: the top level must be a mapping")
    env_names = {
        ".".join(env_path(name)): name for name in environ if name.startswith(ENV_PREFIX) and env_path(name)
    }
    return validate_config(apply_env_overrides(raw, environ), path=str(chosen), env_names=env_names)
