"""The state interface's shared vocabulary (subset needed by the outage work; the `state`
engineer's full module supersedes this one): `StateUnavailable` and `ProviderControl`."""

from __future__ import annotations

from dataclasses import dataclass


class StateUnavailable(Exception):
    """The state store cannot answer: do not deliver (we could not record it) and do not commit."""


@dataclass
class ProviderControl:
    """Operator pause and the circuit breaker's shared state for one provider; written only on
    transitions, read by every process (web: `/readyz`, admin API; dispatchers: the gate)."""

    provider: str
    paused: bool = False
    breaker: str = "closed"  # closed | open | half_open
    reason: str | None = None
    opened_at: float | None = None
    next_probe_at: float | None = None
    probes: int = 0
    updated_at: float = 0.0
