"""Fixtures every test package shares. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from consumers.wiring import build_distributed_runtime
from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from service.config import Config
from service.pipeline.delivery_core import DeliveryCore
from service.pipeline.embedded import EmbeddedDispatcher
from service.runtime import Runtime, build_runtime
from service.web.app import create_app
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY, base_config, load, shared_redis_url
from tests.support_postgres import ScratchDatabase, postgres_server

# Tests that need more than the inner loop's tools, by directory: `make test-fast` leaves them out.
MARKERS_BY_DIRECTORY = {"kafka": "kafka", "deploy": "deploy", "console": "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        relative = item.path.relative_to(tests_root) if item.path.is_relative_to(tests_root) else None
        marker = MARKERS_BY_DIRECTORY.get(relative.parts[0]) if relative and relative.parts else None
        if marker:
            item.add_marker(marker)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, private = shared_redis_url()
    yield url
    if private:
        private.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server's connection URL for this run (`DATABASE_URL`, else a private one)."""
    server, private = postgres_server()
    try:
        yield server
    finally:
        if private is not None:
            private.stop()


@pytest.fixture
def database_url(postgres: str) -> Iterator[str]:
    """A database of this test's own on that server, dropped afterwards."""
    database = ScratchDatabase(postgres)
    try:
        yield database.url
    finally:
        database.drop()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return f"test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def lsq_sim() -> Iterator[ServedApp]:
    served = ServedApp(create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY)).start()
    yield served
    served.stop()


class LiveService:
    """The web app served on loopback plus its runtime, for in-process end-to-end tests."""

    def __init__(self, config: Config) -> None:
        self.config = config
        distributed = config["mode"] == "distributed"
        self.runtime: Runtime = build_distributed_runtime(config) if distributed else build_runtime(config)
        self.app = create_app(config, self.runtime)
        self.server = ServedApp(self.app).start()
        self.url = self.server.url
        # One core for the test's lifetime, as in a dispatcher process (lookup cache, limiter).
        self.core = DeliveryCore(config)

    def dispatcher(self) -> EmbeddedDispatcher:
        return EmbeddedDispatcher(self.config, self.runtime.store, self.core)

    def drain(self, seconds: float = 5.0) -> None:
        """Run the dispatcher until nothing is due (or `seconds` pass)."""
        import time

        dispatcher = self.dispatcher()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                dispatcher.tick()
                time.sleep(0.02)
                stats = self.runtime.store.queue_stats()
                if stats["depth"] == 0 and not dispatcher._busy:
                    break
        finally:
            dispatcher.pool.shutdown(wait=True)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Any]:
    started: list[LiveService] = []

    def factory(raw: dict[str, Any] | None = None, **overrides: Any) -> LiveService:
        service = LiveService(load(raw or base_config(tmp_path, **overrides)))
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()


@pytest.fixture
def service(make_service: Any, lsq_sim: ServedApp, tmp_path: Path) -> LiveService:
    """generic -> LeadSquared simulator, in-process web app on loopback."""
    return make_service(base_config(tmp_path, lsq_sim.url))
