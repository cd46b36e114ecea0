"""Embedded wiring: the SQL state store (SQLite by default, migrated at start) as queue,
ledger, event log and dedup. Distributed mode is wired in `consumers/wiring.py`; the
webhook, admin and health code does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.config import Config
from service.domain.dedup import DedupStore
from service.pipeline.ingest import CommandQueue, Ingestor
from service.pipeline.wakeup import Notifier, wakeup_address
from service.sources import SOURCE_KINDS
from service.sources.base import SourceAdapter
from service.state import SqlStateStore, open_state_store


def build_adapters(config: Config) -> dict[str, SourceAdapter]:
    return {
        name: SOURCE_KINDS[settings["type"]](name, settings)
        for name, settings in config.sources.items()
        if settings.get("enabled", True)
    }


@dataclass
class Runtime:
    config: Config
    store: SqlStateStore
    dedup: DedupStore
    queue: CommandQueue
    ingestor: Ingestor
    adapters: dict[str, SourceAdapter]
    extras: dict[str, Any] = field(default_factory=dict)


def build_runtime(config: Config) -> Runtime:
    """Embedded mode only (distributed mode: `consumers.wiring.build_distributed_runtime`)."""
    if config["mode"] == "distributed":
        raise ValueError(
            "distributed mode is wired by consumers.wiring (gunicorn 'service.cli.serve:create_web_app()')"
        )
    store = open_state_store(config)
    # The embedded dispatcher listens beside the queue file (also with a PostgreSQL record).
    wakeup = Notifier(wakeup_address(config["storage"]["path"]))
    return Runtime(
        config=config,
        store=store,
        dedup=store,
        queue=store,
        ingestor=Ingestor(
            config, store, store, commit_together=store.commit_together, on_enqueued=wakeup.notify
        ),
        adapters=build_adapters(config),
    )
