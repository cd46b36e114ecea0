"""Configuration is data: loading the YAML file, applying environment overrides, validating every section at start-up.

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
from marshmallow import ValidationError

from handlers import HANDLER_KINDS
from service.config.checks import (
    ENV_PREFIX,
    apply_env_overrides,
    credential_errors,
    env_path,
    kafka_format_problems,
    name_env_variable,
    secret_length_errors,
)
from service.config.sections import (
    COMMON_PROVIDER_FIELDS,
    COMMON_SOURCE_FIELDS,
    ConfigSchema,
    settings_schema,
)
from service.domain.redact import register_secret, register_secrets_in
from service.domain.validators import flatten_messages
from service.sources import SOURCE_KINDS

CONFIG_ENV = "LEADRELAY_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "leadrelay.yaml"


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad key."""


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
    return [f"{name}: {'; '.join(texts)}" for name, texts in flatten_messages(messages, prefix).items()]


def validate_config(
    raw: Mapping[str, Any], path: str | None = None, env_names: Mapping[str, str] | None = None
) -> Config:
    """`env_names`: dotted key -> the environment variable that set it (named in errors)."""

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
            schema = settings_schema(common, kinds[kind].settings_fields, f"{section}.{kind}")
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
        errors.extend(kafka_format_problems(index, binding["format"], data["sources"], SOURCE_KINDS))
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
