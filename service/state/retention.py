"""Background retention: a daemon thread that prunes the store in small batches."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("leadrelay.retention")


class RetentionPruner:
    def __init__(self, store: Any, settings: dict[str, Any]) -> None:
        self.store = store
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prune_once(self, now: float | None = None) -> int:
        return self.store.prune(
            now or time.time(),
            float(self.settings["delivered_days"]),
            float(self.settings["dead_letter_days"]),
            int(self.settings["batch"]),
        )

    def _run(self) -> None:
        interval = float(self.settings["prune_interval_seconds"])
        while not self._stop.wait(interval):
            try:
                removed = self.prune_once()
                if removed:
                    log.info("retention pruned rows", extra={"rows": removed})
            except Exception as exc:  # a failed pass is retried next interval; dispatch goes on
                log.warning("retention pass failed: %s", exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
