"""The example sender config stays valid; sender settings are validated at start-up; every
sender secret is registered for redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.config import ConfigError, validate_config
from service.domain.redact import redact
from service.runtime import build_adapters
from tests.senders.conftest import (
    CALENDLY_KEY,
    GOOGLE_KEY,
    HUBSPOT_TOKEN,
    META_APP_SECRET,
    PIPEDRIVE_PASSWORD,
    PIPEDRIVE_USER,
    UNBOUNCE_TOKEN,
    senders_config,
)
from tests.support import ROOT, load


def test_example_sender_config_is_valid_without_secrets() -> None:
    raw = yaml.safe_load((ROOT / "config" / "leadrelay.yaml").read_text())
    examples = yaml.safe_load((ROOT / "config" / "examples" / "senders.yaml").read_text())
    raw["sources"].update(examples["sources"])
    config = validate_config(raw)
    assert {s["type"] for s in config.sources.values()} >= {
        "hubspot", "typeform", "meta_lead_ads", "pipedrive", "calendly", "webflow", "unbounce", "google_ads",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("source", "bad", "message"),
    [
        ("typeform", {"field_map": {"readable_ref_email": "e-mail"}}, "sources.typeform.field_map"),
        ("hubspot", {"stage_map": {"closedwon": "victory"}}, "sources.hubspot.stage_map"),
        ("hubspot", {"signature_versions": ["v4"]}, "sources.hubspot.signature_versions"),
        ("meta", {"api_attempts": 0}, "sources.meta.api_attempts"),
        ("webflow", {"secrets": "typo"}, "sources.webflow.secrets"),
    ],
)
def test_bad_sender_settings_fail_at_start_up(tmp_path: Path, source: str, bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load(senders_config(tmp_path, **{source: bad}))


def test_every_sender_secret_is_redacted(tmp_path: Path) -> None:
    # Registered when the config loads (secret-looking keys) or when the adapters are built
    # at start-up (names such as google_key, signing_key and username).
    build_adapters(load(senders_config(tmp_path)))
    for secret in (HUBSPOT_TOKEN, META_APP_SECRET, PIPEDRIVE_USER, PIPEDRIVE_PASSWORD, CALENDLY_KEY,
                   UNBOUNCE_TOKEN, GOOGLE_KEY):  # fmt: skip
        assert secret not in redact(f"error talking to upstream with {secret} in it")
