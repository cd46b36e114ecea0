"""Reading an event-log filter (status, provider, source, event type, lead, time range) from query or form arguments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from service.domain.state import EventFilter
from service.domain.statuses import DeliveryStatus

EVENT_STATUSES = tuple(status.value for status in DeliveryStatus)
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


def whole_events(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """A page of at most `limit` rows out of `limit + 1` fetched, ending on a whole event (its
    rows, one per provider, share a seq), so `after=<last seq>` resumes without losing a row.
    Returns the page and whether more rows follow (only an event with more providers than a
    page holds is cut)."""
    if len(rows) <= limit:
        return rows, False
    boundary = rows[limit]["seq"]
    page = [row for row in rows[:limit] if row["seq"] < boundary]
    return (page or rows[:limit]), True
