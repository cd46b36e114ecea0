"""Provider test helpers: handlers built from validated config, a service routed to the
providers a test names, and the simulators' control endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from handlers import HANDLER_KINDS
from handlers.base import ProviderHandler, ProviderUpdate
from service.domain.command import LeadIdentity
from tests.support import LSQ_ACCESS_KEY, LSQ_SECRET_KEY, base_config, load

LSQ_ASYNC_KEY = "lsq-async-api-key-x1y2z3"
POLLYBOT_KEY = "sk-workspace_test_0123456789abcdef"
OCTANIST_KEY = "octanist-test-key-7f6e5d"
SECRETS = (LSQ_ACCESS_KEY, LSQ_SECRET_KEY, LSQ_ASYNC_KEY, POLLYBOT_KEY, OCTANIST_KEY)


def provider_entry(kind: str, url: str, **extra: Any) -> dict[str, Any]:
    """A raw provider config entry with the credentials its simulator expects."""
    credentials: dict[str, dict[str, Any]] = {
        "leadsquared": {"access_key": LSQ_ACCESS_KEY, "secret_key": LSQ_SECRET_KEY},
        "leadsquared_async": {
            "access_key": LSQ_ACCESS_KEY,
            "secret_key": LSQ_SECRET_KEY,
            "api_key": LSQ_ASYNC_KEY,
            "poll_interval_seconds": 0.05,
            "poll_max_interval_seconds": 0.2,
        },
        "pollybot": {"api_key": POLLYBOT_KEY},
        "octanist": {"api_key": OCTANIST_KEY},
    }
    return {"type": kind, "base_url": url, "timeout_seconds": 5, **credentials[kind], **extra}


def build_handler(tmp_path: Path, name: str, entry: dict[str, Any]) -> ProviderHandler:
    """The handler the service would build for this entry (validated, defaults applied)."""
    config = load(base_config(tmp_path, providers={name: entry}))
    settings = config.providers[name]
    return HANDLER_KINDS[settings["type"]](name, settings)


def routed_config(tmp_path: Path, providers: dict[str, dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """generic -> exactly `providers` (the default LeadSquared entry is replaced)."""
    raw = base_config(tmp_path, routes=[{"source": "generic", "providers": list(providers)}], **overrides)
    raw["providers"] = providers
    return raw


def update(
    lead_email: str | None = None,
    lead_id: str | None = None,
    lead_phone: str | None = None,
    metadata: dict[str, Any] | None = None,
    **changes: Any,
) -> ProviderUpdate:
    """A provider update: the lead's identity (`lead_*`), canonical `changes`, `metadata`."""
    return ProviderUpdate(
        lead=LeadIdentity(id=lead_id, email=lead_email, phone=lead_phone),
        changes=changes,
        metadata=metadata or {},
    )


def seed(sim_url: str, leads: list[dict[str, Any]]) -> list[str]:
    response = requests.post(f"{sim_url}/_sim/leads", json=leads, timeout=5)
    response.raise_for_status()
    return response.json()["ids"]


def fault(sim_url: str, path: str, status: int, count: int = 1, **extra: Any) -> None:
    requests.post(
        f"{sim_url}/_sim/faults", json={"path": path, "status": status, "count": count, **extra}, timeout=5
    ).raise_for_status()


def script_async(sim_url: str, scripts: list[dict[str, Any]] | None = None, **defaults: Any) -> None:
    requests.post(
        f"{sim_url}/_sim/async", json={"scripts": scripts or [], "defaults": defaults}, timeout=5
    ).raise_for_status()
