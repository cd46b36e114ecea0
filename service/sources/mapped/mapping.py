"""A mapped sender's expressions: JMESPath per field, compiled and checked at start-up, applied per request."""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from marshmallow import ValidationError

from service.domain.command import CANONICAL_FIELDS, CANONICAL_STATUSES
from service.sources.mapped.transforms import DATE_FORMATS, Transform, TransformError, build_transform

SPEC_KEYS = {"path", "const", "default", "transforms", "map"}
LEAD_KEYS = ("email", "phone", "id")
DEFAULT_EVENT_TYPE = "lead.updated"


@dataclass(frozen=True)
class ValueSpec:
    """Where one value comes from: an expression or a constant, then default, table, transforms."""

    expression: Any = None  # a compiled JMESPath expression
    const: Any = None
    has_const: bool = False
    default: Any = None
    table: MappingType[str, Any] | None = None  # sender value -> our value (`map:`)
    transforms: tuple[Transform, ...] = ()

    def value(self, document: Any) -> Any:
        """The value, or None when the payload has none and no default is set."""
        try:
            found = self.const if self.has_const else self.expression.search(document)
        except JMESPathError as exc:  # a function given the wrong type by this payload
            raise TransformError(str(exc)) from None
        if found is None or found == "" or found == []:
            found = self.default
        if found is not None and self.table is not None:
            found = self.table.get(str(found))
        for transform in self.transforms:
            if found is None:
                break
            found = transform(found)
        return found


@dataclass(frozen=True)
class CompiledMapping:
    events: Any  # a compiled expression selecting the events of a batch, or None: one event
    event_id: ValueSpec | None
    event_type: ValueSpec
    occurred_at: ValueSpec | None
    occurred_at_format: str
    lead: dict[str, ValueSpec] = field(default_factory=dict)
    changes: dict[str, ValueSpec] = field(default_factory=dict)
    metadata: dict[str, ValueSpec] = field(default_factory=dict)


def compile_spec(raw: Any, allowed_values: tuple[str, ...] = ()) -> ValueSpec:
    """A string is an expression; a mapping names `path` or `const` plus options. ValueError on
    anything that would fail at run time: a bad expression, an unknown transform or option."""
    if isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, dict):
        raise ValueError("expected a JMESPath expression or a mapping with `path` or `const`")
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    if ("path" in raw) == ("const" in raw):
        raise ValueError("give exactly one of `path` (a JMESPath expression) or `const`")
    expression = None
    if "path" in raw:
        if not isinstance(raw["path"], str) or not raw["path"].strip():
            raise ValueError("`path` must be a non-empty JMESPath expression")
        try:
            expression = jmespath.compile(raw["path"])
        except JMESPathError as exc:
            raise ValueError(f"invalid JMESPath expression {raw['path']!r}: {exc}") from None
    names = raw.get("transforms") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("`transforms` must be a list of transform names")
    table = raw.get("map")
    if table is not None:
        if not isinstance(table, dict):
            raise ValueError("`map` must be a mapping from sender value to value")
        table = {str(k): v for k, v in table.items()}
        if allowed_values:
            bad = sorted(str(v) for v in table.values() if v not in allowed_values)
            if bad:
                raise ValueError(f"`map` value(s) {', '.join(bad)} not one of {', '.join(allowed_values)}")
    if allowed_values and "const" in raw and raw["const"] not in (None, *allowed_values):
        raise ValueError(f"`const` {raw['const']!r} is not one of {', '.join(allowed_values)}")
    return ValueSpec(
        expression=expression,
        const=raw.get("const"),
        has_const="const" in raw,
        default=raw.get("default"),
        table=table,
        transforms=tuple(build_transform(name) for name in names),
    )


def _specs(
    raw: Any, allowed: tuple[str, ...] | None, errors: dict[str, Any], section: str
) -> dict[str, ValueSpec]:
    out: dict[str, ValueSpec] = {}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        errors[section] = ["expected a mapping of field name to expression"]
        return out
    for name, spec in raw.items():
        if allowed is not None and name not in allowed:
            errors.setdefault(section, {})[name] = [
                f"unknown canonical field {name!r}; allowed: {', '.join(allowed)}"
            ]
            continue
        try:
            out[str(name)] = compile_spec(spec, CANONICAL_STATUSES if name == "status" else ())
        except ValueError as exc:
            errors.setdefault(section, {})[name] = [str(exc)]
    return out


def compile_mapping(raw: Any) -> CompiledMapping:
    """Every expression of a `mapping:` section, compiled; ValidationError names each bad key."""
    if not isinstance(raw, dict):
        raise ValidationError(["expected a mapping with lead, changes, event_id, event_type, occurred_at"])
    errors: dict[str, Any] = {}
    unknown = sorted(
        set(raw) - {"events", "event_id", "event_type", "occurred_at", "lead", "changes", "metadata"}
    )
    for name in unknown:
        errors[name] = [
            "unknown key; allowed: events, event_id, event_type, occurred_at, lead, changes, metadata"
        ]
    events = None
    if raw.get("events") is not None:
        try:
            events = compile_spec(raw["events"]).expression
            if events is None:
                raise ValueError("`events` must be a JMESPath expression")
        except ValueError as exc:
            errors["events"] = [str(exc)]
    singles: dict[str, ValueSpec | None] = {}
    occurred_format = "iso8601"
    for key in ("event_id", "event_type", "occurred_at"):
        spec = raw.get(key)
        if key == "occurred_at" and isinstance(spec, dict):
            spec = dict(spec)
            occurred_format = str(spec.pop("format", "iso8601"))
            if occurred_format not in DATE_FORMATS and "%" not in occurred_format:
                errors.setdefault(key, []).append(
                    f"format {occurred_format!r}: use iso8601, unix, unix_ms or a strptime pattern"
                )
        try:
            singles[key] = compile_spec(spec) if spec is not None else None
        except ValueError as exc:
            errors.setdefault(key, []).append(str(exc))
    lead = _specs(raw.get("lead"), LEAD_KEYS, errors, "lead")
    changes = _specs(raw.get("changes"), CANONICAL_FIELDS, errors, "changes")
    metadata = _specs(raw.get("metadata"), None, errors, "metadata")
    if not errors and not (lead or {"email", "phone"} & set(changes)):
        errors["lead"] = [
            "map at least one of lead.email, lead.phone, lead.id (or changes.email / changes.phone)"
        ]
    if errors:
        raise ValidationError(errors)
    return CompiledMapping(
        events=events,
        event_id=singles["event_id"],
        event_type=singles["event_type"] or ValueSpec(const=DEFAULT_EVENT_TYPE, has_const=True),
        occurred_at=singles["occurred_at"],
        occurred_at_format=occurred_format,
        lead=lead,
        changes=changes,
        metadata=metadata,
    )


def apply_specs(
    specs: dict[str, ValueSpec], document: Any, section: str, errors: dict[str, list[str]]
) -> dict[str, Any]:
    """Evaluate each spec; a transform that fails is a per-field error, an absent value is left out."""
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        try:
            value = spec.value(document)
        except TransformError as exc:
            errors[f"{section}.{name}"] = [str(exc)]
            continue
        if value is not None:
            out[name] = value
    return out
