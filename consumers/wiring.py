"""Distributed wiring: the SQL state store on PostgreSQL as the record, the command topic as
the queue, Redis as the shared rate limiter only."""

from __future__ import annotations

from typing import Any

import redis

from consumers.client import BrokerCheck
from consumers.command_queue import KafkaCommandQueue
from service.config import Config
from service.pipeline.ingest import Ingestor
from service.runtime import Runtime, build_adapters
from service.state import SqlStateStore, open_state_store


def redis_client(config: Config) -> redis.Redis:
    settings = config["redis"]
    if not settings.get("url"):
        raise ValueError("redis.url is not configured (LEADRELAY__REDIS__URL)")
    timeout = float(settings["socket_timeout_seconds"])
    return redis.Redis.from_url(settings["url"], socket_timeout=timeout, socket_connect_timeout=timeout)


def open_record(config: Config) -> SqlStateStore:
    """The PostgreSQL store every distributed process shares. The schema is applied by
    `leadrelay migrate` (the chart's hook Job); applying it here too is idempotent and
    serialised by the migration lock, so a local run needs no extra step."""
    return open_state_store(config)


def readiness_checks(config: Config, store: SqlStateStore, client: redis.Redis | None) -> dict[str, Any]:
    """What a distributed process needs to take work: the broker, the database and (for the
    dispatcher) Redis answering."""
    checks: dict[str, Any] = {"kafka": BrokerCheck(config), "database": store.ping}
    if client is not None:
        checks["redis"] = lambda: client.ping()
    return checks


def build_distributed_runtime(config: Config) -> Runtime:
    """Web and source consumers: dedup claims, the command row and its deliveries are written
    in one transaction around the broker's ack (see `KafkaCommandQueue.enqueue`). Ingest does
    not touch Redis."""
    store = open_record(config)
    queue = KafkaCommandQueue(config, store)
    store.requeue = queue.publish  # a replay produces the command to the command topic again
    return Runtime(
        config=config,
        store=store,
        dedup=store,
        queue=queue,
        ingestor=Ingestor(config, store, queue, commit_together=store.commit_together),
        adapters=build_adapters(config),
        extras={"readiness_checks": readiness_checks(config, store, None)},
    )
