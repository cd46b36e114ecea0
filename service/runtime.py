"""Wiring: build the stores, queue and adapters that a configuration asks for.

Embedded mode: the SQL state store (SQLite by default, migrated at start) for queue,
ledger, event log and (by default) dedup. Distributed mode swaps in Kafka (the command
topic, see consumers/) and Redis (dedup, ledger, event log, rate limits); the webhook,
admin and health code does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from service.config import Config
from service.dedup import DedupStore, RedisDedupStore
from service.ingest import CommandQueue, Ingestor
from service.pipeline.wakeup import Notifier, wakeup_address
from service.redis_state import RedisEventStore
from service.sources import SOURCE_KINDS
from service.sources.base import SourceAdapter
from service.state import SqlStateStore, open_state_store


def redis_client(config: Config) -> redis.Redis:
    settings = config["redis"]
    if not settings.get("url"):
        raise ValueError("redis.url is not configured (LEADRELAY__REDIS__URL)")
    timeout = float(settings["socket_timeout_seconds"])
    return redis.Redis.from_url(settings["url"], socket_timeout=timeout, socket_connect_timeout=timeout)


def build_adapters(config: Config) -> dict[str, SourceAdapter]:
    return {
        name: SOURCE_KINDS[settings["type"]](name, settings)
        for name, settings in config.sources.items()
        if settings.get("enabled", True)
    }


@dataclass
class Runtime:
    config: Config
    store: SqlStateStore | RedisEventStore
    dedup: DedupStore
    queue: CommandQueue
    ingestor: Ingestor
    adapters: dict[str, SourceAdapter]
    extras: dict[str, Any] = field(default_factory=dict)


def distributed_readiness_checks(config: Config, client: redis.Redis | None = None) -> dict[str, Any]:
    """What a distributed process needs to take work: the broker and Redis answering."""
    from consumers.client import BrokerCheck

    client = client or redis_client(config)
    return {"kafka": BrokerCheck(config), "redis": lambda: client.ping()}


def build_distributed_runtime(config: Config) -> Runtime:
    from consumers.command_queue import KafkaCommandQueue

    client = redis_client(config)
    prefix = config["redis"]["key_prefix"]
    ttl = max(int(config["kafka"]["event_ttl_seconds"]), int(config["dedup"]["window_seconds"]))
    events = RedisEventStore(client, prefix, ttl_seconds=ttl)
    queue = KafkaCommandQueue(config, events)
    events.requeue = queue.publish  # replay re-produces to the command topic
    # Dedup is always shared in distributed mode: replicas must see each other's claims.
    dedup = RedisDedupStore(client, prefix)
    return Runtime(
        config=config,
        store=events,
        dedup=dedup,
        queue=queue,
        ingestor=Ingestor(config, dedup, queue),
        adapters=build_adapters(config),
        extras={"readiness_checks": distributed_readiness_checks(config, client)},
    )


def build_runtime(config: Config) -> Runtime:
    if config["mode"] == "distributed":
        return build_distributed_runtime(config)
    store = open_state_store(config)
    # The embedded dispatcher listens beside the queue file (also with a PostgreSQL record).
    wakeup = Notifier(wakeup_address(config["storage"]["path"]))
    if config["dedup"]["backend"] == "redis":
        dedup: DedupStore = RedisDedupStore(redis_client(config), config["redis"]["key_prefix"])
        ingestor = Ingestor(config, dedup, store, on_enqueued=wakeup.notify)
    else:
        dedup = store
        ingestor = Ingestor(
            config, store, store, commit_together=store.commit_together, on_enqueued=wakeup.notify
        )
    return Runtime(
        config=config,
        store=store,
        dedup=dedup,
        queue=store,
        ingestor=ingestor,
        adapters=build_adapters(config),
    )
