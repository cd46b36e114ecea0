"""The base of the vendor adapters: a table from event type to handler, the config-driven
field mapping with documented defaults, and one way to build a command.

A vendor module declares `default_field_map`, `settings_fields`, `verify`, `parse`,
`events(payload)` (the events a request carries: one, or a batch) and `handlers`
(event type -> method name). A handler returns `(commands, skipped mappings)`, or with a
third item, the fields it inferred (`Normalised.matched_fields`). Event types missing from the table are acknowledged and
counted as ignored, never an error (Zulip's `zerver/webhooks/<integration>` shape).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from service.domain.command import LeadIdentity, LeadUpdateCommand, make_command_id
from service.domain.redact import register_secret
from service.sources.base import InboundRequest, Normalised, SourceAdapter
from service.sources.common import Mapped, apply_map, clean_changes, effective_map, identity_from

MAX_EVENT_ID = 200


class Skip(Exception):  # noqa: N818 - control flow, not an error
    """This event is acknowledged but produces no command (reason is counted as ignored)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SenderAdapter(SourceAdapter):
    default_field_map: ClassVar[dict[str, str]] = {}
    # Event type -> name of the method that turns one event into commands.
    handlers: ClassVar[dict[str, str]] = {}
    # Settings that hold secrets whose names the generic redaction rule would not catch.
    extra_secret_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, source: str, settings: Mapping[str, Any]) -> None:
        super().__init__(source, settings)
        configured = settings.get("field_map") or {}
        self.field_map = effective_map(self.default_field_map, configured)
        self.configured_sources = {key for key, target in configured.items() if target}
        self.region = str(settings.get("phone_region") or "US")
        for name in self.extra_secret_settings:
            register_secret(settings.get(name))

    # -- the table -------------------------------------------------------------------------

    def events(self, payload: Any, request: InboundRequest) -> Iterable[tuple[str, Any]]:
        """(event type, event) for each event the request carries."""
        raise NotImplementedError

    def shared_context(self, events: list[tuple[str, Any]], request: InboundRequest) -> Any:
        """Work shared by all events of one request (a batched look-up); passed to handlers."""
        return None

    def normalise(self, payload: Any, request: InboundRequest) -> Normalised:
        out = Normalised()
        events = list(self.events(payload, request))
        context = self.shared_context([(t, e) for t, e in events if t in self.handlers], request)
        for event_type, event in events:
            method = self.handlers.get(event_type)
            if method is None:
                out.ignored.append(event_type)
                continue
            try:
                handled = getattr(self, method)(event, request, context)
            except Skip as skip:
                out.ignored.append(f"{event_type}:{skip.reason}")
                continue
            out.commands.extend(handled[0])
            out.skipped_mappings += handled[1]
            if len(handled) > 2:
                out.matched_fields.update(handled[2])
        return out

    # -- building commands -----------------------------------------------------------------

    def map_values(self, values: Mapping[str, Any], partial: bool = False) -> Mapped:
        """`partial`: the payload names only what changed, so absent fields are not skipped."""
        return apply_map(values, self.field_map, () if partial else self.configured_sources)

    def command(
        self,
        *,
        event_id: str | None,
        event_type: str,
        occurred_at: datetime,
        changes: dict[str, Any],
        request: InboundRequest,
        metadata: Mapping[str, Any] | None = None,
        lead: LeadIdentity | None = None,
    ) -> LeadUpdateCommand:
        changes = clean_changes(changes)
        lead = lead or identity_from(changes, self.region)
        if lead is None:
            raise Skip("no_email_or_phone")
        if event_id and len(event_id) > MAX_EVENT_ID:
            # The command id has a bounded length; a longer sender id is kept as its hash.
            event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
        return LeadUpdateCommand(
            command_id=make_command_id(self.source, event_id, request.body),
            source=self.source,
            event_type=event_type,
            occurred_at=occurred_at,
            lead=lead,
            changes=changes,
            metadata={k: v for k, v in (metadata or {}).items() if v is not None},
        )
