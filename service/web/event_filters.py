"""Reading an event-log filter (status, provider, source, event type, lead, time range) from query or form arguments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from service.domain.state import EventFilter

EVENT_STATUSES = ("pending", "in_flight", "polling", "delivered", "dead_lettered")
FILTER_FIELDS = ("status", "provider", "source", "event_type", "lead", "since", "until")


def parse_time(text: str) -> float:
    """Epoch seconds, or ISO 8601 (a time without an offset is UTC, as the console's fields are)."""
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_event_filter(args: Mapping[str, str]) -> tuple[EventFilter, dict[str, list[str]]]:
    """The filter and, per bad argument, what is wrong with it (empty when all is well)."""
    errors: dict[str, list[str]] = {}
    values: dict[str, str | None] = {
        name: (args.get(name) or "").strip()[:200] or None for name in FILTER_FIELDS
    }
    if values["status"] and values["status"] not in EVENT_STATUSES:
        errors["status"] = [f"must be one of {', '.join(EVENT_STATUSES)}"]
    times: dict[str, float | None] = {"since": None, "until": None}
    for name in times:
        if values[name]:
            try:
                times[name] = parse_time(values[name] or "")
            except ValueError:
                errors[name] = ["must be epoch seconds or an ISO 8601 time"]
    event_filter = EventFilter(
        status=values["status"] if "status" not in errors else None,
        provider=values["provider"],
        source=values["source"],
        event_type=values["event_type"],
        lead=values["lead"],
        since=times["since"],
        until=times["until"],
    )
    return event_filter, errors
