"""The in-memory state of one dispatcher batch: records, per-provider progress, offsets.

A record is finished when every provider it asks for is resolved (delivered, already in
the ledger, durably scheduled on the retry topic, or dead-lettered). The offset to commit
for a partition is the first record that is not finished: everything before it is durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from service.domain.command import LeadUpdateCommand
from service.domain.state import Delivery
from service.pipeline.delivery_core import Decision


@dataclass
class Item:
    """One record of the batch."""

    tp: TopicPartition
    record: ConsumerRecord
    command: LeadUpdateCommand | None = None
    providers: tuple[str, ...] = ()  # a retry record names exactly one
    attempts: int = 0
    kind: str = "deliver"  # retry records of async providers: "poll"
    request_id: str | None = None
    received_at: float = 0.0
    unresolved: set[str] = field(default_factory=set)
    excluded: bool = False  # deferred (seeked back) or abandoned (revoked, shutdown)

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def finished(self) -> bool:
        return not self.excluded and not self.unresolved


@dataclass
class Group:
    """Deliveries for one (partition, provider, lead) in record order: one coalesced call."""

    tp: TopicPartition
    provider: str
    lead_key: str
    kind: str
    items: list[Item] = field(default_factory=list)
    next_at: float = 0.0
    running: bool = False
    dropped: bool = False
    lead_released: bool = False  # the outcome transaction gave the lead claim back

    def open_items(self) -> list[Item]:
        return [i for i in self.items if self.provider in i.unresolved and not i.excluded]


@dataclass
class Deferred:
    """What a chunk of groups (`consumers/chunk.py`) writes once for all of them: delivered
    outcomes (one transaction at the chunk's end) and the providers that asked for a
    rate-limit wait (the chunk's later groups for them do not try)."""

    delivered: list[tuple[Group, list[tuple[Item, Delivery]], Decision, float]] = field(default_factory=list)
    limited: dict[str, float] = field(default_factory=dict)


class Batch:
    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.groups: list[Group] = []

    def build_groups(self) -> None:
        by_key: dict[tuple[TopicPartition, str, str, str], Group] = {}
        for item in self.items:
            if item.excluded or item.command is None:
                continue
            for provider in sorted(item.unresolved):
                # An async status poll is per request, never merged with another.
                lead = item.command.lead_key if item.kind == "deliver" else f"poll:{item.offset}"
                key = (item.tp, provider, lead, item.kind)
                group = by_key.get(key)
                if group is None:
                    group = by_key[key] = Group(item.tp, provider, item.command.lead_key, item.kind)
                group.items.append(item)
        self.groups = list(by_key.values())

    def open_groups(self) -> list[Group]:
        return [g for g in self.groups if not g.dropped and g.open_items()]

    def due_groups(self, now: float) -> list[Group]:
        return sorted(
            (g for g in self.open_groups() if not g.running and g.next_at <= now), key=lambda g: g.next_at
        )

    def next_due(self) -> float | None:
        waiting = [g.next_at for g in self.open_groups() if not g.running]
        return min(waiting) if waiting else None

    def exclude_partition(self, tp: TopicPartition, from_offset: int = -1) -> None:
        for item in self.items:
            if item.tp == tp and item.offset >= from_offset:
                item.excluded = True
        for group in self.groups:
            if group.tp == tp and not group.open_items():
                group.dropped = True

    def abandon_waiting(self) -> None:
        """Shutdown: groups not started are left for the next owner of their partition."""
        for group in self.groups:
            if not group.running:
                group.dropped = True
                for item in group.items:
                    if group.provider in item.unresolved:
                        item.excluded = True

    def partitions(self) -> set[TopicPartition]:
        return {i.tp for i in self.items}

    def rewind_positions(self) -> dict[TopicPartition, int]:
        """Per partition with an unfinished record: its offset (re-read it in a later batch)."""
        out: dict[TopicPartition, int] = {}
        for item in self.items:
            if not item.finished and (item.tp not in out or item.offset < out[item.tp]):
                out[item.tp] = item.offset
        return out

    def commit_offsets(self, partitions: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Per partition: the offset of the first record not finished (or one past the last)."""
        out: dict[TopicPartition, int] = {}
        for tp in partitions if partitions is not None else self.partitions():
            items = sorted((i for i in self.items if i.tp == tp), key=lambda i: i.offset)
            if not items:
                continue
            position = items[0].offset
            for item in items:
                if not item.finished:
                    break
                position = item.offset + 1
            if position > items[0].offset:
                out[tp] = position
        return out
