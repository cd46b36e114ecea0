"""Fixtures for the sender tests: every sender configured on one live service (loopback),
the sender-API simulators on loopback, the vendors' documented example payloads, and
signers that follow each vendor's documented algorithm."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from handlers.simulation import ServedApp
from tests.senders.hubspot.crm_simulator import create_hubspot_simulator
from tests.senders.meta.graph_simulator import create_graph_simulator
from tests.senders.pipedrive.api_simulator import create_pipedrive_simulator
from tests.support import admin_get, base_config, deep_merge

HERE = Path(__file__).resolve().parent

HUBSPOT_SECRET = "hubspot-client-secret-5f0c2a"
HUBSPOT_TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
TYPEFORM_SECRET = "typeform-secret-9b1e"
META_APP_SECRET = "meta-app-secret-77aa"
META_VERIFY_TOKEN = "meta-verify-token-31d4"
META_ACCESS_TOKEN = "EAAGm0PX4ZCpsBAExampleToken"
PIPEDRIVE_USER = "leadrelay-pd"
PIPEDRIVE_PASSWORD = "pd-password-6e2b"
PIPEDRIVE_TOKEN = "pd-api-token-0c9f"
CALENDLY_KEY = "calendly-signing-key-4a8d"
WEBFLOW_SECRET = "webflow-secret-2c7e"
UNBOUNCE_TOKEN = "ub-url-token-8d1f2a9c3b4e"
GOOGLE_KEY = "examplekey-8f2d"
SALESFORCE_ORG = "00D5e000000HxYzEAK"
MAPPED_KEY = "mapped-api-key-47e1c9"

FAST_FETCH = {"api_timeout_seconds": 2, "api_attempts": 3, "api_backoff_base_seconds": 0.01}


def fixture_bytes(sender: str, name: str) -> bytes:
    return (HERE / sender / "fixtures" / name).read_bytes()


def fixture_json(sender: str, name: str) -> Any:
    return json.loads(fixture_bytes(sender, name))


# ---- simulators ---------------------------------------------------------------------------


@pytest.fixture
def hubspot_sim() -> Iterator[ServedApp]:
    served = ServedApp(create_hubspot_simulator(HUBSPOT_TOKEN)).start()
    yield served
    served.stop()


@pytest.fixture
def graph_sim() -> Iterator[ServedApp]:
    served = ServedApp(create_graph_simulator(META_ACCESS_TOKEN)).start()
    yield served
    served.stop()


@pytest.fixture
def pipedrive_sim() -> Iterator[ServedApp]:
    served = ServedApp(create_pipedrive_simulator(PIPEDRIVE_TOKEN)).start()
    yield served
    served.stop()


def senders_config(tmp_path: Path, sims: dict[str, str] | None = None, **sources: Any) -> dict[str, Any]:
    """base_config plus every sender, each routed to LeadSquared (never drained here)."""
    sims = sims or {}
    configured: dict[str, Any] = {
        "hubspot": {
            "type": "hubspot",
            "client_secret": HUBSPOT_SECRET,
            "access_token": HUBSPOT_TOKEN,
            "api_base_url": sims.get("hubspot", "http://127.0.0.1:9"),
            **FAST_FETCH,
        },
        "typeform": {"type": "typeform", "secret": TYPEFORM_SECRET},
        "meta": {
            "type": "meta_lead_ads",
            "app_secret": META_APP_SECRET,
            "verify_token": META_VERIFY_TOKEN,
            "access_token": META_ACCESS_TOKEN,
            "api_base_url": sims.get("graph", "http://127.0.0.1:9"),
            **FAST_FETCH,
        },
        "pipedrive": {
            "type": "pipedrive",
            "username": PIPEDRIVE_USER,
            "password": PIPEDRIVE_PASSWORD,
            "api_token": PIPEDRIVE_TOKEN,
            "api_base_url": sims.get("pipedrive", "http://127.0.0.1:9"),
            **FAST_FETCH,
        },
        "calendly": {"type": "calendly", "signing_key": CALENDLY_KEY},
        "webflow": {"type": "webflow", "secret": WEBFLOW_SECRET},
        "unbounce": {"type": "unbounce", "url_token": UNBOUNCE_TOKEN},
        "google_ads": {"type": "google_ads", "google_key": GOOGLE_KEY},
        "salesforce": {"type": "salesforce", "organization_id": SALESFORCE_ORG},
        "mapped": {
            "type": "mapped",
            "verify": {"method": "api_key", "header": "X-Api-Key", "api_keys": [MAPPED_KEY]},
            "mapping": {
                "event_id": "id",
                "lead": {"email": "email"},
                "changes": {"first_name": "first_name"},
            },
        },
    }
    configured = deep_merge(configured, sources)
    raw = base_config(tmp_path)
    raw["sources"].update(configured)
    raw["routes"] = [{"source": "*", "providers": ["leadsquared"]}]
    return raw


@pytest.fixture
def senders(make_service: Any, tmp_path: Path) -> Any:
    """A live service with every sender configured (no look-up simulators)."""
    return make_service(senders_config(tmp_path))


# ---- reading back what was queued ----------------------------------------------------------


def queued(service: Any) -> int:
    service.runtime.store.drain_inbox()  # accepted commands join the queue tables here
    with service.runtime.store.read() as db:
        row = db.execute("SELECT COUNT(*) AS n FROM commands").fetchone()
    return int(row["n"])


def command_of(service: Any, command_id: str) -> dict[str, Any]:
    """The stored command, read through the admin API's event log."""
    response = admin_get(service.url, f"/v1/events/{requests.utils.quote(command_id, safe='')}")
    assert response.status_code == 200, response.text
    return response.json()["command"]


def post(service: Any, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(service.url + path, data=body, headers=headers, timeout=15)


# ---- signers (the vendors' documented algorithms) ------------------------------------------


def _hmac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def hubspot_v3_headers(
    url: str, body: bytes, secret: str = HUBSPOT_SECRET, ts_ms: int | None = None
) -> dict[str, str]:
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    signature = base64.b64encode(_hmac(secret, b"POST" + url.encode() + body + ts.encode())).decode()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": ts,
        "X-HubSpot-Signature-Version": "v3",
    }


def hubspot_legacy_headers(
    url: str, body: bytes, version: str, secret: str = HUBSPOT_SECRET
) -> dict[str, str]:
    material = secret.encode() + (b"POST" + url.encode() if version == "v2" else b"") + body
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature": hashlib.sha256(material).hexdigest(),
        "X-HubSpot-Signature-Version": version,
    }


def typeform_headers(body: bytes, secret: str = TYPEFORM_SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Typeform-Signature": "sha256=" + base64.b64encode(_hmac(secret, body)).decode(),
    }


def meta_headers(body: bytes, secret: str = META_APP_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + _hmac(secret, body).hex()}


def pipedrive_headers(user: str = PIPEDRIVE_USER, password: str = PIPEDRIVE_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Content-Type": "application/json", "Authorization": f"Basic {token}"}


def calendly_headers(body: bytes, key: str = CALENDLY_KEY, ts: int | None = None) -> dict[str, str]:
    t = str(int(time.time()) if ts is None else ts)
    signature = _hmac(key, t.encode() + b"." + body).hex()
    return {"Content-Type": "application/json", "Calendly-Webhook-Signature": f"t={t},v1={signature}"}


def webflow_headers(body: bytes, secret: str = WEBFLOW_SECRET, ts_ms: int | None = None) -> dict[str, str]:
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    return {
        "Content-Type": "application/json",
        "x-webflow-timestamp": ts,
        "x-webflow-signature": _hmac(secret, ts.encode() + b":" + body).hex(),
    }
