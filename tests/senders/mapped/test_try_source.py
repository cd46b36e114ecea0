"""The dry run: `leadrelay try-source` and `POST /v1/sources/<name>/try` show the command a
payload would become, or every error, and queue nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from service.cli import main
from tests.senders.mapped.conftest import API_KEY, HERE, recipe_config
from tests.support import ADMIN_TOKEN, write_config

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_cli_prints_the_command_and_its_providers(tmp_path: Path, capsys: Any) -> None:
    path = write_config(tmp_path, recipe_config(tmp_path, "http://127.0.0.1:9"))
    payload = HERE / "fixtures" / "make_http_request.json"
    code = main(["--config", str(path), "try-source", "make", "--payload", str(payload)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    (command,) = result["commands"]
    assert command["command_id"] == "make:make-7f3c9a1e-0b2d-4c55-9e61-2a7b0c1d9e88"
    assert command["lead"]["email"] == "ada.lovelace@example.com"
    assert command["changes"]["status"] == "qualified" and command["changes"]["value"] == 12500
    assert command["providers"] == ["leadsquared"]
    assert result["verification"].startswith("not checked")
    assert not (tmp_path / "leadrelay.db").exists()  # nothing was queued: no store was even opened


def test_cli_lists_every_error_and_checks_headers_when_given(tmp_path: Path, capsys: Any) -> None:
    path = write_config(tmp_path, recipe_config(tmp_path, "http://127.0.0.1:9"))
    payload = tmp_path / "bad.json"
    payload.write_text(
        json.dumps({"id": "x", "lead": {"email": "nope", "dealValue": "lots", "stage": "Qualified"}})
    )
    headers = tmp_path / "headers.txt"
    headers.write_text("Content-Type: application/json\nAuthorization: Basic bm9wZTpub3Bl\n")
    code = main(
        ["--config", str(path), "try-source", "make", "--payload", str(payload), "--headers", str(headers)]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["verification"].startswith("failed")
    assert "changes.value" in result["errors"] and "lead.email" in result["errors"]


def test_admin_api_dry_run_needs_the_token_and_queues_nothing(make_service: Any, tmp_path: Path) -> None:
    service = make_service(recipe_config(tmp_path, "http://127.0.0.1:9"))
    url = f"{service.url}/v1/sources/wpforms/try"
    payload = json.loads((HERE / "fixtures" / "wpforms_webhook_json.json").read_text())
    assert requests.post(url, json={"payload": payload}, timeout=10).status_code == 401
    spec = {"payload": payload, "headers": {"X-Api-Key": API_KEY, "Content-Type": "application/json"}}
    response = requests.post(url, json=spec, headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] and result["verification"] == "passed"
    assert result["commands"][0]["changes"]["first_name"] == "Grace"
    form = {
        "payload": "name=Bo&email=bo%40example.com&form_id=1&entry_id=2",
        "content_type": "application/x-www-form-urlencoded",
    }
    assert requests.post(url, json=form, headers=ADMIN, timeout=10).json()["errors"][
        "_request"
    ]  # wpforms takes JSON
    assert service.runtime.store.queue_stats()["depth"] == 0
    missing = requests.post(f"{service.url}/v1/sources/nope/try", json=spec, headers=ADMIN, timeout=10)
    assert missing.status_code == 404
    assert requests.post(url, json={"headers": {}}, headers=ADMIN, timeout=10).status_code == 400
    for bad in ({"payload": {}, "query": "k=v"}, {"payload": {}, "headers": ["X-Api-Key"]}):
        assert requests.post(url, json=bad, headers=ADMIN, timeout=10).status_code == 400
    # The request is loaded with the schema /openapi.json shows: every bad key is named.
    bad = requests.post(
        url, json={"payload": {}, "headers": {"X-Api-Key": 7}, "token": ["t"]}, headers=ADMIN, timeout=10
    )
    assert bad.status_code == 400
    assert set(bad.json()["details"]) == {"headers.X-Api-Key.value", "token"}, bad.json()
