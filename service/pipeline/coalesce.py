"""Coalescing: pending commands for one lead and provider merged into one update, with the
version stamps that stale protection compares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from handlers.base import ProviderUpdate
from service.domain.command import complete_names
from service.domain.state import Delivery


def version_stamp(occurred_at: datetime) -> str:
    """`occurred_at` as a fixed-width UTC string, so stored field versions compare correctly
    as strings (isoformat keeps the sender's offset and drops zero microseconds)."""
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Coalesced:
    update: ProviderUpdate
    field_versions: dict[str, str] = field(default_factory=dict)  # field -> occurred_at applied
    stale_fields: list[str] = field(default_factory=list)


def coalesce(deliveries: list[Delivery], applied: Mapping[str, str]) -> Coalesced:
    """Merge commands for one lead and provider into one update.

    Events are applied in `occurred_at` order (queue order breaks ties): later values win
    per field, metadata is merged. A field whose value comes from an event older than the
    one already applied for that lead and field is not sent (stale protection). Names are
    completed per command first (`complete_names`), so a name derived from an older event
    carries that event's version and never overwrites a newer one.
    """
    ordered = sorted(deliveries, key=lambda d: (d.command.occurred_at, d.seq))
    changes: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    versions: dict[str, str] = {}
    stale: list[str] = []
    for delivery in ordered:
        command = delivery.command
        when = version_stamp(command.occurred_at)
        for name, value in complete_names(command.changes).items():
            if name in applied and applied[name] > when:
                stale.append(name)
                continue
            changes[name] = value
            versions[name] = when
        metadata.update(command.metadata)
    last = ordered[-1].command
    # The most specific identity any of the commands carried (an id beats an email).
    lead = next((d.command.lead for d in reversed(ordered) if d.command.lead.id), last.lead)
    update = ProviderUpdate(
        lead=lead,
        changes=changes,
        metadata=metadata,
        post_updated_lead=any(d.command.post_updated_lead for d in ordered),
        command_ids=tuple(d.command.command_id for d in deliveries),
    )
    return Coalesced(update=update, field_versions=versions, stale_fields=stale)
