"""Provider fixtures: each simulator on loopback HTTP (helpers live in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.octanist.simulator import create_octanist_simulator
from handlers.pollybot.simulator import create_pollybot_simulator
from handlers.simulation import ServedApp
from tests.providers.helpers import LSQ_ASYNC_KEY, OCTANIST_KEY, POLLYBOT_KEY
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY


def serve(app: Any) -> Iterator[ServedApp]:
    served = ServedApp(app).start()
    yield served
    served.stop()


@pytest.fixture
def lsq_async_sim() -> Iterator[ServedApp]:
    """One LeadSquared simulator serving the sync lookups and the Async API."""
    yield from serve(
        create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, async_api_key=LSQ_ASYNC_KEY)
    )


@pytest.fixture
def pollybot_sim() -> Iterator[ServedApp]:
    yield from serve(create_pollybot_simulator(POLLYBOT_KEY))


@pytest.fixture
def octanist_sim() -> Iterator[ServedApp]:
    yield from serve(create_octanist_simulator(OCTANIST_KEY))
