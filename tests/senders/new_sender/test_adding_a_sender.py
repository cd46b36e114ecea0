"""docs/adding-an-integration.md, checked: a sender added by nothing but a folder (outside the
package, written by this test) and one registry entry is configured, verified, queued and
delivered to the LeadSquared simulator end to end."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.sources import SOURCE_KINDS
from tests.support import base_config, sim_calls

SECRET = "acme-shared-secret-1"

ADAPTER = '''
"""Acme Forms (`type: acme_forms`): a JSON form post with a shared-secret header."""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import fields

from service.sources.base import AuthenticationFailed, InboundRequest
from service.sources.common import (
    LooseSchema, field_map_setting, load_with, received, require_header, require_secret, same, secret_setting,
)
from service.sources.sender import SenderAdapter


class Submission(LooseSchema):
    id = fields.String(required=True)
    fields = fields.Dict(keys=fields.String(), required=True)


class AcmeFormsAdapter(SenderAdapter):
    name: ClassVar[str] = "acme_forms"
    settings_fields: ClassVar[dict[str, Any]] = {"secret": secret_setting(), "field_map": field_map_setting()}
    default_field_map: ClassVar[dict[str, str]] = {"Email": "email", "City": "city", "Name": "full_name"}
    handlers: ClassVar[dict[str, str]] = {"submission": "submission"}
    schema = Submission()

    def verify(self, request: InboundRequest) -> None:
        secret = require_secret(self.settings.get("secret"), "secret")
        if not same(secret, require_header(request, "x-acme-secret")):
            raise AuthenticationFailed("x-acme-secret does not match")

    def parse(self, request: InboundRequest) -> dict[str, Any]:
        return load_with(self.schema, request.json())

    def event_id(self, payload: dict[str, Any], request: InboundRequest) -> str | None:
        return payload["id"]

    def events(self, payload: dict[str, Any], request: InboundRequest) -> list[tuple[str, Any]]:
        return [("submission", payload)]

    def submission(self, payload: dict[str, Any], request: InboundRequest, context: Any = None):
        mapped = self.map_values(payload["fields"])
        command = self.command(
            event_id=self.event_id(payload, request), event_type="submission",
            occurred_at=received(request), changes=mapped.changes, request=request,
        )
        return [command], mapped.skipped
'''


@pytest.fixture
def acme_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """The folder (service/sources/acme_forms/ in the real tree) and its registry line."""
    root = tmp_path / "integrations"
    folder = root / "acme_forms"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text('"""Acme Forms: the adapter."""\n')
    (folder / "adapter.py").write_text(textwrap.dedent(ADAPTER))
    monkeypatch.syspath_prepend(str(root))
    adapter = importlib.import_module("acme_forms.adapter").AcmeFormsAdapter
    monkeypatch.setitem(SOURCE_KINDS, adapter.name, adapter)
    yield adapter
    for name in ("acme_forms.adapter", "acme_forms"):
        sys.modules.pop(name, None)


def test_a_sender_added_as_a_folder_works_end_to_end(
    acme_forms: type, make_service: Any, lsq_sim: Any, tmp_path: Path
) -> None:
    [lead_id] = requests.post(
        f"{lsq_sim.url}/_sim/leads", json=[{"EmailAddress": "jane@example.com"}], timeout=5
    ).json()["ids"]
    raw = base_config(
        tmp_path,
        lsq_sim.url,
        sources={"acme": {"type": "acme_forms", "secret": SECRET}},
        routes=[{"source": "acme", "providers": ["leadsquared"]}],
    )
    service = make_service(raw)
    body = json.dumps({"id": "sub-1", "fields": {"Email": "jane@example.com", "City": "Lyon"}})
    url = f"{service.url}/webhooks/acme"
    headers = {"Content-Type": "application/json"}
    assert (
        requests.post(url, data=body, headers={**headers, "x-acme-secret": "wrong"}, timeout=5).status_code
        == 401
    )
    answer = requests.post(url, data=body, headers={**headers, "x-acme-secret": SECRET}, timeout=5)
    assert answer.status_code == 202, answer.text
    assert answer.json()["command_id"] == "acme:sub-1"
    service.drain()
    [update] = sim_calls(lsq_sim.url, "Lead.Update")
    assert update["query"]["leadId"] == lead_id
    assert {"Attribute": "mx_City", "Value": "Lyon"} in json.loads(update["body"])
