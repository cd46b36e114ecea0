"""Which canonical fields a sender's mapping produces that none of the providers it is routed
to would send anywhere: a mapping that silently delivers nothing (reported by check-config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers import HANDLER_KINDS
from service.sources import SOURCE_KINDS
from service.sources.common import effective_map

# Fields that name the lead: every provider uses them to find it, mapped or not.
IDENTIFYING = frozenset({"email", "phone", "mobile"})


@dataclass(frozen=True)
class Unsent:
    source: str
    sender_field: str
    canonical: str
    providers: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"sources.{self.source}: {self.sender_field!r} is mapped to {self.canonical!r}, which none of its"
            f" providers ({', '.join(self.providers)}) sends; map it in a provider's field_map or drop it"
        )


def provider_fields(settings: Mapping[str, Any]) -> set[str]:
    """The canonical fields a provider entry sends (its default map merged with `field_map`)."""
    handler = HANDLER_KINDS[settings["type"]]
    merged = {**handler.default_field_map, **dict(settings.get("field_map") or {})}
    return {name for name, target in merged.items() if target}


def sent_by(known: set[str], canonical: str, produced: set[str]) -> bool:
    """Whether a provider that sends `known` gets `canonical` somewhere, names completed by the
    name rule (`service.domain.command.complete_names`)."""
    if canonical in known or canonical in IDENTIFYING:
        return True
    if canonical == "full_name":  # split into first / last
        return bool({"first_name", "last_name"} & known)
    if canonical in ("first_name", "last_name"):  # joined into a full name when both come
        return "full_name" in known and {"first_name", "last_name"} <= produced
    return False


def routed_providers(
    source: str, routes: list[Mapping[str, Any]], providers: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The enabled providers any route (of any event type) sends this source's events to."""
    names: list[str] = []
    for route in routes:
        if route["source"] in (source, "*"):
            names += [p for p in route["providers"] if p not in names]
    return [p for p in names if p in providers and providers[p].get("enabled", True)]


def unsent_fields(
    sources: Mapping[str, Mapping[str, Any]],
    providers: Mapping[str, Mapping[str, Any]],
    routes: list[Mapping[str, Any]],
) -> list[Unsent]:
    """Each validated config section as `service.config` loads it."""
    found: list[Unsent] = []
    for source, settings in sources.items():
        if not settings.get("enabled", True):
            continue
        kind = SOURCE_KINDS[settings["type"]]
        mapping = effective_map(getattr(kind, "default_field_map", {}), settings.get("field_map") or {})
        routed = routed_providers(source, routes, providers)
        if not mapping or not routed:
            continue
        produced = set(mapping.values())
        known = [provider_fields(providers[p]) for p in routed]
        for sender_field, canonical in sorted(mapping.items()):
            if not any(sent_by(fields, canonical, produced) for fields in known):
                found.append(Unsent(source, sender_field, canonical, tuple(routed)))
    return found
