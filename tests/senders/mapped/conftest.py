"""Fixtures for the mapped-sender tests: the documented recipes on a live service routed to the
LeadSquared simulator, and helpers that read what the simulator was sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support import ROOT, base_config, deep_merge, sim_calls

HERE = Path(__file__).resolve().parent
RECIPES = yaml.safe_load((ROOT / "config" / "examples" / "mapped.yaml").read_text())["sources"]
API_KEY = "recipe-api-key-5c1e9b7a"
PASSWORD = "recipe-basic-password-2f8d"
URL_TOKEN = "recipe-url-token-9a4c3e1b7d"
# The environment-provided secret each recipe needs, as an operator sets it.
SECRETS = {
    "api_key": {"api_keys": [API_KEY]},
    "basic": {"passwords": [PASSWORD]},
    "url_token": {"tokens": [URL_TOKEN]},
}


def fixture_bytes(name: str) -> bytes:
    return (HERE / "fixtures" / name).read_bytes()


def recipe_config(tmp_path: Path, lsq_url: str, **sources: Any) -> dict[str, Any]:
    """Every recipe, with its secrets set, routed to the LeadSquared simulator."""
    configured = {
        name: deep_merge(recipe, {"verify": SECRETS[recipe["verify"]["method"]]})
        for name, recipe in RECIPES.items()
    }
    raw = base_config(tmp_path, lsq_url)
    raw["sources"].update(deep_merge(configured, sources))
    raw["routes"] = [{"source": "*", "providers": ["leadsquared"]}]
    return raw


def seed_lead(sim_url: str, email: str) -> str:
    return requests.post(f"{sim_url}/_sim/leads", json=[{"EmailAddress": email}], timeout=5).json()["ids"][0]


def lsq_updates(sim_url: str) -> list[dict[str, str]]:
    """Each Lead.Update body the simulator accepted, as {Attribute: Value}."""
    return [
        {item["Attribute"]: item["Value"] for item in call["json"]}
        for call in sim_calls(sim_url, "Lead.Update")
        if call["status"] == 200
    ]
