"""The sandbox registry: provider kind -> its simulator (`handlers/<provider>/simulator.py`), credentials and demo leads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.octanist.simulator import create_octanist_simulator
from handlers.pollybot.simulator import create_pollybot_simulator


@dataclass(frozen=True)
class SimulatorFactory:
    create: Callable[[], Any]
    credentials: dict[str, str] = field(default_factory=dict)  # provider settings that match the simulator
    # Provider settings that must point at the simulator's URL (LeadSquared Async: both hosts).
    url_settings: tuple[str, ...] = ("base_url",)
    demo_leads: list[dict[str, Any]] = field(default_factory=list)

    def seed(self, base_url: str) -> None:
        if self.demo_leads:
            requests.post(f"{base_url}/_sim/leads", json=self.demo_leads, timeout=5).raise_for_status()


SANDBOX_LEADSQUARED_LEADS = [
    {"FirstName": "Jane", "LastName": "Doe", "EmailAddress": "jane@example.com", "Phone": "+14155550100"},
    {"FirstName": "Raj", "LastName": "Patel", "EmailAddress": "raj@example.com", "Phone": "+919999999999"},
]

SANDBOX_POLLYBOT_LEADS = [
    {"name": "Jane Doe", "email": "jane@example.com", "phone": "+14155550100", "source": "website"},
    {"name": "Raj Patel", "email": "raj@example.com", "phone": "+919999999999", "source": "webinar"},
]
SANDBOX_OCTANIST_LEADS = [
    {"name": "Jane Doe", "email": "jane@example.com", "phone": "+14155550100"},
    {"name": "Raj Patel", "email": "raj@example.com", "phone": "+919999999999"},
]

SIMULATORS: dict[str, SimulatorFactory] = {
    "leadsquared": SimulatorFactory(
        create=lambda: create_leadsquared_simulator("sandbox-access-key", "sandbox-secret-key"),
        credentials={"access_key": "sandbox-access-key", "secret_key": "sandbox-secret-key"},
        demo_leads=SANDBOX_LEADSQUARED_LEADS,
    ),
    # The LeadSquared simulator serves the Async API too (and the lookups on the same host).
    "leadsquared_async": SimulatorFactory(
        create=lambda: create_leadsquared_simulator(
            "sandbox-access-key", "sandbox-secret-key", async_api_key="sandbox-async-api-key"
        ),
        credentials={
            "access_key": "sandbox-access-key",
            "secret_key": "sandbox-secret-key",
            "api_key": "sandbox-async-api-key",
        },
        url_settings=("base_url", "lookup_base_url"),
        demo_leads=SANDBOX_LEADSQUARED_LEADS,
    ),
    "pollybot": SimulatorFactory(
        create=lambda: create_pollybot_simulator("sk-workspace_sandbox"),
        credentials={"api_key": "sk-workspace_sandbox"},
        demo_leads=SANDBOX_POLLYBOT_LEADS,
    ),
    "octanist": SimulatorFactory(
        create=lambda: create_octanist_simulator("octanist-sandbox-key"),
        credentials={"api_key": "octanist-sandbox-key"},
        demo_leads=SANDBOX_OCTANIST_LEADS,
    ),
}
