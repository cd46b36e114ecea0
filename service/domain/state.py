"""The state interface: dedup claims, the command queue, the delivery ledger, the event log,
provider controls, lead claims and rate-limit samples, with the data classes that cross it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from service.domain.command import LeadUpdateCommand
from service.domain.limits import RateLimitUsage
from service.domain.statuses import DeliveryStatus


class StateUnavailable(Exception):
    """The database cannot take the write (or answer the read) now; the caller retries later."""


class Claim(StrEnum):
    CLAIMED = "claimed"
    DUPLICATE = "duplicate"
    IN_PROGRESS = "in_progress"


@dataclass
class Delivery:
    command: LeadUpdateCommand
    provider: str
    seq: int
    attempts: int
    status: str = DeliveryStatus.PENDING
    polls: int = 0  # async status polls since the provider accepted it
    request_id: str | None = None
    received_at: float = 0.0
    first_attempt_at: float | None = None  # the retry horizon counts from here


@dataclass
class DeliveryGroup:
    """Pending deliveries for one (lead, provider), in order: sent as one coalesced call."""

    provider: str
    lead_key: str
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def command_ids(self) -> list[str]:
        return [d.command.command_id for d in self.deliveries]


@dataclass(frozen=True)
class EventFilter:
    status: str | None = None
    provider: str | None = None
    source: str | None = None
    event_type: str | None = None
    lead: str | None = None  # an email, phone or lead id: matched against the command's lead identities
    since: float | None = None  # received_at, epoch seconds, inclusive
    until: float | None = None  # received_at, epoch seconds, exclusive


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


class StateStore(Protocol):
    # ---- ingest / dedup ------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction; the store's calls made inside it join it (one commit)."""

    def claim(self, key: str, pending_seconds: int) -> Claim: ...

    def confirm(self, key: str, window_seconds: int) -> None: ...

    def release(self, key: str) -> None: ...

    def enqueue(self, command: LeadUpdateCommand) -> bool: ...

    def note_duplicate(self, command_id: str) -> None: ...

    # ---- dispatcher and ledger -----------------------------------------------------------
    def drain_inbox(self) -> int:
        """Move accepted commands waiting in the inbox on to the queue; how many moved (0 where
        accepts write the queue directly)."""

    def claim_due_groups(
        self,
        now: float,
        limit: int,
        skip: set[tuple[str, str]] = ...,
        max_groups: int = ...,
        per_group: int | None = None,
        owner: str | None = None,
        providers: Collection[str] | None = None,
    ) -> list[DeliveryGroup]: ...

    def orphaned_in_flight(self) -> list[DeliveryGroup]: ...

    def polling_deliveries(self, now: float, limit: int) -> list[DeliveryGroup]: ...

    def applied_versions(self, lead_key: str, provider: str) -> dict[str, str]: ...

    def record(
        self,
        group: DeliveryGroup,
        status: str,
        *,
        now: float,
        error: str | None = None,
        stage: str | None = None,
        response: Any = None,
        next_attempt_at: float | None = None,
        count_attempt: bool = True,
        request_id: str | None = None,
        field_versions: dict[str, str] | None = None,
        count_poll: bool = False,
    ) -> None: ...

    def queue_stats(self, now: float | None = None) -> dict[str, float]: ...

    # ---- event log -----------------------------------------------------------------------
    def list_events(
        self, filter: EventFilter | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[dict[str, Any]]: ...

    def get_event(self, command_id: str) -> dict[str, Any] | None: ...

    def replay(
        self, command_id: str, provider: str | None = None, routed: list[str] | None = None
    ) -> list[str]: ...

    def replay_matching(
        self,
        filter: EventFilter,
        *,
        dry_run: bool,
        routed_for: Callable[[str, str], list[str]] | None = None,
    ) -> dict[str, int]: ...

    def overview(self, now: float) -> dict[str, Any]: ...

    # ---- provider controls and lead claims -----------------------------------------------
    def provider_controls(self) -> dict[str, ProviderControl]: ...

    def put_provider_control(self, control: ProviderControl) -> None: ...

    def claim_lead(self, provider: str, lead_key: str, owner: str, ttl_seconds: float) -> bool: ...

    def release_lead(self, provider: str, lead_key: str, owner: str) -> None: ...

    # ---- rate-limit budget samples (dispatchers write, the overview reads) ----------------
    def record_rate_limit_usage(self, usages: list[RateLimitUsage], now: float) -> None: ...

    def rate_limit_samples(self, since: float) -> dict[str, dict[str, Any]]: ...

    # ---- retention and health ------------------------------------------------------------
    def prune(self, now: float, delivered_days: float, dead_letter_days: float, batch: int = 500) -> int: ...

    def check_writable(self) -> None: ...
