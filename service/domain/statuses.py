"""Delivery statuses: the one vocabulary for a (command, provider) delivery's state."""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    POLLING = "polling"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    DUPLICATE = "duplicate"  # a double submit: kept in the event log, never delivered


OPEN_STATUSES: tuple[str, ...] = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT, DeliveryStatus.POLLING)


def overall_status(statuses: list[str]) -> str:
    """One status for a command from its deliveries' statuses (`unrouted` when it has none)."""
    if not statuses:
        return "unrouted"
    if all(s == DeliveryStatus.DUPLICATE for s in statuses):
        return DeliveryStatus.DUPLICATE
    if all(s == DeliveryStatus.DELIVERED for s in statuses):
        return DeliveryStatus.DELIVERED
    if any(s == DeliveryStatus.DEAD_LETTERED for s in statuses):
        return DeliveryStatus.DEAD_LETTERED
    return DeliveryStatus.PENDING
