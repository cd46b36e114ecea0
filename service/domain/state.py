"""The state interface's data classes shared by every layer: the event-log filter and a provider's control state."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventFilter:
    status: str | None = None
    provider: str | None = None
    source: str | None = None
    event_type: str | None = None
    lead: str | None = None  # email, phone or lead id (matched against the command's lead identities)
    since: float | None = None  # received_at, epoch seconds
    until: float | None = None


@dataclass
class ProviderControl:
    provider: str
    paused: bool = False
    breaker: str = "closed"  # closed | open | half_open
    reason: str | None = None
    opened_at: float | None = None
    next_probe_at: float | None = None
    probes: int = 0
    updated_at: float = 0.0
