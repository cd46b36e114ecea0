"""Configuration from the environment and checks beyond the schema: `LEADRELAY__...` overrides (and naming the
variable behind a bad key), credential sets, secret lengths, and the Kafka bindings a sender can serve."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml
from marshmallow import ValidationError

from service.config.sections import COMMON_SOURCE_FIELDS, settings_schema
from service.domain.redact import secret_settings
from service.domain.validators import MIN_SECRET_LENGTH

ENV_PREFIX = "LEADRELAY__"


def env_path(name: str) -> list[str]:
    return [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        path = env_path(name)
        if not path:
            continue
        try:
            value = yaml.safe_load(environ[name]) if environ[name] != "" else None
        except yaml.YAMLError:
            value = environ[name]
        # Secrets and URLs stay strings even when they look like numbers or booleans.
        if path[-1] in ("base_url", "url") or any(
            k in path[-1] for k in ("key", "secret", "token", "password")
        ):
            if not isinstance(value, list) and value is not None:
                value = environ[name]
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def env_variable(path: list[str]) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def credential_errors(data: dict[str, Any], kinds: Mapping[str, Any]) -> list[str]:
    """A provider's credentials come as a set: some but not all is a typo or a forgotten
    Secret; none at all is fine only when sandbox mode (auto/on) can supply them."""
    errors: list[str] = []
    for name, settings in (data.get("providers") or {}).items():
        kind = kinds.get(settings.get("type")) if isinstance(settings, dict) else None
        if kind is None or not kind.credential_set or not settings.get("enabled", True):
            continue
        given = [key for key in kind.credential_set if settings.get(key)]
        if given and len(given) == len(kind.credential_set):
            continue
        if not given and data.get("sandbox") != "off":
            continue  # sandbox mode points this provider at its simulator
        reason = f"required with {', '.join(given)}" if given else "required (sandbox is off)"
        errors.extend(
            f"providers.{name}.{key}: {reason}; set it in the file or {env_variable(['providers', name, key])}"
            for key in kind.credential_set
            if key not in given
        )
    return errors


def name_env_variable(line: str, env_names: Mapping[str, str]) -> str:
    """`a.b.c: message` -> `a.b.c (from LEADRELAY__A__B__C): message` when the environment
    set that key (or a section above it)."""
    key, sep, message = line.partition(": ")
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        variable = env_names.get(".".join(parts[:end]))
        if variable:
            return f"{key} (from {variable}){sep}{message}"
    return line


def secret_length_errors(data: dict[str, Any]) -> list[str]:
    """Every configured secret is long enough to be unguessable and to be redacted safely
    (the admin token has its own, longer minimum in the schema)."""
    return [
        f"{key}: a secret must be at least {MIN_SECRET_LENGTH} characters"
        for key, value in secret_settings(data)
        if len(value) < MIN_SECRET_LENGTH and key != "server.admin_token"
    ]


def kafka_format_problems(
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
            settings_schema(COMMON_SOURCE_FIELDS, kind.settings_fields, f"sources.{fmt}").load({"type": fmt})
        except ValidationError:
            return [
                f"{where}: the {fmt!r} type needs settings; bind a configured source of that type by its name"
            ]
    return []
