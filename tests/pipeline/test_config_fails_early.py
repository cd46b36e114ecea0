"""Configuration that would fail at runtime fails at start-up (and in `check-config`),
naming the key and, for an environment override, the variable that set it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import ConfigError, load_config
from service.domain.redact import redact, redact_obj
from tests.support import ROOT, base_config, write_config


def refusal(tmp_path: Path, raw: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, raw), environ=environ or {})
    return str(caught.value)


@pytest.mark.parametrize(
    "bad", ["not a url ::", "ftp://api.leadsquared.com", "api.leadsquared.com", "http://"]
)
def test_a_provider_base_url_must_be_an_http_url(tmp_path: Path, bad: str) -> None:
    text = refusal(tmp_path, base_config(tmp_path, providers={"leadsquared": {"base_url": bad}}))
    assert "providers.leadsquared.base_url:" in text and "http" in text


def test_an_environment_override_is_named_by_its_variable(tmp_path: Path) -> None:
    variable = "LEADRELAY__PROVIDERS__LEADSQUARED__BASE_URL"
    text = refusal(tmp_path, base_config(tmp_path), {variable: "ftp://api.leadsquared.com"})
    assert f"providers.leadsquared.base_url (from {variable}):" in text
    text = refusal(tmp_path, base_config(tmp_path), {"LEADRELAY__SERVER__ADMIN_TOKEN": "short"})
    assert "server.admin_token (from LEADRELAY__SERVER__ADMIN_TOKEN):" in text


@pytest.mark.parametrize("bad", ["https://api.hubapi.com/ path", "not a url ::"])
def test_sender_and_public_urls_are_checked_too(tmp_path: Path, bad: str) -> None:
    raw = base_config(tmp_path, server={"public_base_url": bad})
    raw["sources"]["hubspot"] = {"type": "hubspot", "client_secret": "hubspot-secret-1", "api_base_url": bad}
    text = refusal(tmp_path, raw)
    assert "server.public_base_url:" in text and "sources.hubspot.api_base_url:" in text


def test_a_signing_secret_must_be_base64(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    raw["sources"]["generic"]["secrets"] = ["whsec_this is not base64!"]
    assert "sources.generic.secrets:" in refusal(tmp_path, raw)
    raw["sources"]["generic"]["secrets"] = ["whsec_dGVzdC1zaWduaW5nLXNlY3JldC0wMTIzNDU2Nzg5"]
    load_config(write_config(tmp_path, raw), environ={})


def test_leadsquared_credentials_come_as_a_pair(tmp_path: Path) -> None:
    for sandbox in ("auto", "off"):
        raw = base_config(tmp_path, sandbox=sandbox)
        del raw["providers"]["leadsquared"]["secret_key"]
        text = refusal(tmp_path, raw)
        assert "providers.leadsquared.secret_key: required with access_key" in text
        assert "LEADRELAY__PROVIDERS__LEADSQUARED__SECRET_KEY" in text
    # No keys at all: sandbox mode stands in, unless it is off.
    raw = base_config(tmp_path, sandbox="auto")
    del raw["providers"]["leadsquared"]["secret_key"], raw["providers"]["leadsquared"]["access_key"]
    load_config(write_config(tmp_path, raw), environ={})
    raw["sandbox"] = "off"
    assert "providers.leadsquared.access_key: required (sandbox is off)" in refusal(tmp_path, raw)


def test_admin_token_and_secrets_have_a_minimum_length(tmp_path: Path) -> None:
    text = refusal(tmp_path, base_config(tmp_path, server={"admin_token": "x"}))
    assert "server.admin_token: Shorter than minimum length 16." in text
    load_config(write_config(tmp_path, base_config(tmp_path, server={"admin_token": "0123456789abcdef"})))
    raw = base_config(tmp_path)
    raw["sources"]["typeform"] = {"type": "typeform", "secret": "abc"}
    assert "sources.typeform.secret: a secret must be at least 8 characters" in refusal(tmp_path, raw)


def test_the_shortest_accepted_secret_is_redacted(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    raw["sources"]["typeform"] = {"type": "typeform", "secret": "tf-8char"}
    load_config(write_config(tmp_path, raw), environ={})
    assert redact("signed with tf-8char") == "signed with ***"


def test_mapping_sections_hold_names_not_secrets(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    raw["sources"]["typeform"] = {
        "type": "typeform",
        "secret": "typeform-secret-long",
        "field_map": {"hidden.api_token": "note"},
    }
    load_config(write_config(tmp_path, raw), environ={})  # "note" is no (too short) secret
    assert redact("note") == "note"


def test_sandbox_off_written_as_yaml_writes_it(tmp_path: Path) -> None:
    raw = base_config(tmp_path)
    path = write_config(tmp_path, raw)
    path.write_text(path.read_text().replace("sandbox: 'off'", "sandbox: off"))
    assert yaml.safe_load(path.read_text())["sandbox"] is False  # what YAML makes of it
    assert load_config(path, environ={})["sandbox"] == "off"
    assert load_config(path, environ={"LEADRELAY__SANDBOX": "on"})["sandbox"] == "on"
    assert load_config(path, environ={"LEADRELAY__SANDBOX": "off"})["sandbox"] == "off"


def test_redaction_masks_credentials_not_data_that_sounds_like_one() -> None:
    stored = redact_obj(
        {
            "metadata": {"response_token": "a3a12ec67a1365927098a606107fac15", "token": "t-1"},
            "request": {
                "accessKey": "u$r1",
                "secretKey": "s3cr3t",
                "x-api-key": "k",
                "Authorization": "Bearer z",
            },
        }
    )
    assert stored["metadata"] == {"response_token": "a3a12ec67a1365927098a606107fac15", "token": "t-1"}
    assert set(stored["request"].values()) == {"***"}


def test_check_config_exits_non_zero_naming_key_and_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY")}
    env |= {"LEADRELAY_CONFIG": str(path), "LEADRELAY__PROVIDERS__LEADSQUARED__BASE_URL": "not a url ::"}
    run = subprocess.run(
        [sys.executable, "-m", "service.cli", "check-config"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "providers.leadsquared.base_url (from LEADRELAY__PROVIDERS__LEADSQUARED__BASE_URL)" in run.stderr
