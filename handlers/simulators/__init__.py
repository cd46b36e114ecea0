"""Provider simulators, by provider kind: for tests, the sandbox (`make run`) and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from handlers.simulators.leadsquared import create_leadsquared_simulator


@dataclass(frozen=True)
class SimulatorFactory:
    create: Callable[[], Any]
    credentials: dict[str, str] = field(default_factory=dict)  # provider settings that match the simulator
    demo_leads: list[dict[str, Any]] = field(default_factory=list)

    def seed(self, base_url: str) -> None:
        if self.demo_leads:
            requests.post(f"{base_url}/_sim/leads", json=self.demo_leads, timeout=5).raise_for_status()


SANDBOX_LEADSQUARED_LEADS = [
    {"FirstName": "Jane", "LastName": "Doe", "EmailAddress": "jane@example.com", "Phone": "+14155550100"},
    {"FirstName": "Raj", "LastName": "Patel", "EmailAddress": "raj@example.com", "Phone": "+919999999999"},
]

SIMULATORS: dict[str, SimulatorFactory] = {
    "leadsquared": SimulatorFactory(
        create=lambda: create_leadsquared_simulator("sandbox-access-key", "sandbox-secret-key"),
        credentials={"access_key": "sandbox-access-key", "secret_key": "sandbox-secret-key"},
        demo_leads=SANDBOX_LEADSQUARED_LEADS,
    ),
}
