"""The mapped sender's mechanics over a live service: verification presets, per-field errors,
start-up validation of every expression, the success body and the `verify: none` flag."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from service.config import ConfigError
from tests.support import SIGNING_SECRET, base_config, load, signed_headers

OLD_SECRET = "old-hmac-secret-31a7"
NEW_SECRET = "new-hmac-secret-8e2c"
MAPPING = {
    "event_id": "id",
    "lead": {"email": "email"},
    "changes": {
        "email": "email",
        "first_name": "first",
        "value": {"path": "amount", "transforms": ["to_number"]},
    },
}
EVENT = {"id": "evt-1", "email": "jane@example.com", "first": "Jane", "amount": "10"}


def config(tmp_path: Path, **sources: Any) -> dict[str, Any]:
    raw = base_config(tmp_path)
    raw["sources"].update({name: {"type": "mapped", "mapping": MAPPING, **s} for name, s in sources.items()})
    raw["routes"] = [{"source": "*", "providers": ["leadsquared"]}]
    return raw


def post(service: Any, name: str, body: bytes, headers: dict[str, str], path: str = "") -> requests.Response:
    return requests.post(f"{service.url}/webhooks/{name}{path}", data=body, headers=headers, timeout=10)


def sign(secret: str, message: bytes, digest: Any = hashlib.sha256) -> bytes:
    return hmac.new(secret.encode(), message, digest).digest()


HMAC_PRESETS = {
    # GitHub-style: hex SHA-256 over the raw body, "sha256=" prefix, two secrets (rotation).
    "gh": {"method": "hmac", "header": "X-Hub-Signature-256", "prefix": "sha256=", "secrets": [OLD_SECRET, NEW_SECRET]},
    # Base64 SHA-1 over "<timestamp>.<body>" with a timestamp header and a 300 s window.
    "ts": {"method": "hmac", "header": "X-Signature", "encoding": "base64", "algorithm": "sha1",
           "message": "{header:x-timestamp}.{body}", "timestamp_header": "X-Timestamp", "secrets": [NEW_SECRET]},
}  # fmt: skip


def test_hmac_presets_accept_every_rotated_secret_and_refuse_forgeries(
    make_service: Any, tmp_path: Path
) -> None:
    service = make_service(config(tmp_path, **{name: {"verify": v} for name, v in HMAC_PRESETS.items()}))
    body = json.dumps(EVENT).encode()
    for secret in (OLD_SECRET, NEW_SECRET):
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + sign(secret, body).hex(),
        }
        assert post(service, "gh", body, headers).status_code in (200, 202)
    forged = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + sign("guess", body).hex(),
    }
    assert post(service, "gh", body, forged).status_code == 401
    unprefixed = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(OLD_SECRET, body).hex()}
    assert post(service, "gh", body, unprefixed).status_code == 401

    now = str(int(time.time()))
    good = base64.b64encode(sign(NEW_SECRET, now.encode() + b"." + body, hashlib.sha1)).decode()
    headers = {"Content-Type": "application/json", "X-Timestamp": now, "X-Signature": good}
    assert post(service, "ts", body, headers).status_code == 202
    stale = str(int(time.time()) - 3600)
    old_sig = base64.b64encode(sign(NEW_SECRET, stale.encode() + b"." + body, hashlib.sha1)).decode()
    stale_headers = {"Content-Type": "application/json", "X-Timestamp": stale, "X-Signature": old_sig}
    response = post(service, "ts", body, stale_headers)
    assert response.status_code == 401 and "window" in response.json()["error"]


def test_basic_api_key_url_token_and_standard_webhooks_presets(make_service: Any, tmp_path: Path) -> None:
    service = make_service(
        config(
            tmp_path,
            basic={"verify": {"method": "basic", "username": "u", "passwords": ["pw-1-long", "pw-2-long"]}},
            query={"verify": {"method": "api_key", "query_param": "key", "api_keys": ["query-key-123"]}},
            token={"verify": {"method": "url_token", "tokens": ["url-token-abc123"]}},
            sw={"verify": {"method": "standard_webhooks", "secrets": [SIGNING_SECRET]}},
        )
    )
    body = json.dumps(EVENT).encode()
    ctype = {"Content-Type": "application/json"}
    auth = "Basic " + base64.b64encode(b"u:pw-2-long").decode()
    assert post(service, "basic", body, {**ctype, "Authorization": auth}).status_code == 202
    wrong = "Basic " + base64.b64encode(b"u:pw-3-long").decode()
    assert post(service, "basic", body, {**ctype, "Authorization": wrong}).status_code == 401
    assert post(service, "query", body, ctype, "?key=query-key-123").status_code == 202
    assert post(service, "query", body, ctype, "?key=nope").status_code == 401
    assert post(service, "token", body, ctype, "/url-token-abc123").status_code == 202
    assert post(service, "token", body, ctype, "/url-token-abc124").status_code == 401
    assert post(service, "sw", body, signed_headers(body, "msg_1")).status_code == 202
    assert (
        post(
            service, "sw", body, {**signed_headers(body, "msg_2"), "webhook-signature": "v1,AAAA"}
        ).status_code
        == 401
    )


def test_unset_secrets_fail_closed(make_service: Any, tmp_path: Path) -> None:
    service = make_service(config(tmp_path, empty={"verify": {"method": "api_key", "header": "X-Api-Key"}}))
    response = post(
        service, "empty", json.dumps(EVENT).encode(), {"Content-Type": "application/json", "X-Api-Key": ""}
    )
    assert response.status_code == 401


def test_every_mapping_error_is_a_400_naming_its_field(make_service: Any, tmp_path: Path) -> None:
    service = make_service(config(tmp_path, open={"verify": {"method": "none"}}))
    bad = {"id": "evt-2", "email": "not-an-email", "first": "Jo", "amount": "ten"}
    response = post(service, "open", json.dumps(bad).encode(), {"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    details = response.json()["details"]
    assert "changes.value" in details and "lead.email" in details
    nobody = post(service, "open", json.dumps({"first": "Jo"}).encode(), {"Content-Type": "application/json"})
    assert nobody.status_code == 400 and "lead" in json.dumps(nobody.json()["details"])
    assert post(service, "open", b"<xml/>", {"Content-Type": "text/xml"}).status_code == 415
    for amount in ("NaN", "1e999"):  # never a silent clear or a non-finite value downstream
        weird = post(
            service,
            "open",
            json.dumps({**EVENT, "amount": amount}).encode(),
            {"Content-Type": "application/json"},
        )
        assert weird.status_code == 400 and "changes.value" in weird.json()["details"]


def test_unverified_sources_are_flagged_in_readyz_and_a_success_body_is_answered(
    make_service: Any, tmp_path: Path, caplog: Any
) -> None:
    with caplog.at_level("WARNING", logger="leadrelay.sources.mapped"):
        service = make_service(config(tmp_path, open={"verify": {"method": "none"}, "success_body": "OK"}))
    assert "source open accepts requests without any verification" in caplog.text
    ready = requests.get(f"{service.url}/readyz", timeout=5).json()
    assert ready["unverified_sources"] == ["open"]
    response = post(service, "open", json.dumps(EVENT).encode(), {"Content-Type": "application/json"})
    assert response.status_code == 202 and response.text == "OK"


def test_multipart_text_parts_are_read_and_file_parts_left_out(make_service: Any, tmp_path: Path) -> None:
    service = make_service(config(tmp_path, mp={"verify": {"method": "none"}}))
    fields = {k: (None, v) for k, v in EVENT.items()}
    fields["upload"] = ("cv.pdf", b"%PDF-1.4", "application/pdf")
    prepared = requests.Request("POST", service.url + "/webhooks/mp", files=fields).prepare()
    response = requests.Session().send(prepared, timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["command_id"] == "mp:evt-1"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"lead": {"email": "email"}, "changes": {"fullname": "name"}}, "sources.bad.mapping.changes.fullname: unknown canonical field"),
        ({"lead": {"email": "email["}}, "sources.bad.mapping.lead.email: invalid JMESPath expression"),
        ({"lead": {"email": {"path": "e", "transforms": ["upper"]}}}, "sources.bad.mapping.lead.email: unknown transform 'upper'"),
        ({"lead": {"email": "e"}, "changes": {"status": {"path": "s", "map": {"W": "closed"}}}}, "sources.bad.mapping.changes.status"),
        ({"lead": {"handle": "e"}}, "sources.bad.mapping.lead.handle"),
        ({"changes": {"first_name": "f"}}, "sources.bad.mapping.lead: map at least one"),
        ({"lead": {"email": "e"}, "occurred_at": {"path": "t", "format": "yesterday"}}, "sources.bad.mapping.occurred_at"),
    ],
)  # fmt: skip
def test_bad_mappings_are_config_errors_naming_the_key(
    mapping: dict[str, Any], message: str, tmp_path: Path
) -> None:
    raw = config(tmp_path, bad={"verify": {"method": "none"}})
    raw["sources"]["bad"]["mapping"] = mapping
    with pytest.raises(ConfigError) as error:
        load(raw)
    assert message in str(error.value)


def test_verification_must_be_declared(tmp_path: Path) -> None:
    raw = config(tmp_path, bare={})
    raw["sources"]["bare"].pop("verify", None)
    with pytest.raises(ConfigError, match="sources.bare.verify"):
        load(raw)
    raw["sources"]["bare"]["verify"] = {"method": "hmac", "secrets": ["x-secret"], "message": "{body}{nonce}"}
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load(raw)


def test_a_batch_maps_each_event_and_a_fixed_json_body_ignores_the_header(
    make_service: Any, tmp_path: Path
) -> None:
    """`mapping.events` selects the events of a batch (here an Elfsight-style list of answers per
    lead); `body: json` reads JSON even when the sender labels it text/plain."""
    mapping = {
        "events": "leads[]",
        "event_id": "id",
        "lead": {"email": "fields[?name=='Email'].value | [0]"},
        "changes": {"first_name": "fields[?name=='Name'].value | [0]"},
    }
    service = make_service(
        config(tmp_path, batch={"verify": {"method": "none"}, "body": "json", "mapping": mapping})
    )
    leads = [
        {
            "id": f"l-{n}",
            "fields": [{"name": "Name", "value": f"N{n}"}, {"name": "Email", "value": f"n{n}@example.com"}],
        }
        for n in range(3)
    ]
    response = post(service, "batch", json.dumps({"leads": leads}).encode(), {"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text
    assert response.json()["command_ids"] == ["batch:l-0", "batch:l-1", "batch:l-2"]
    leads[1]["fields"][1]["value"] = "broken"
    bad = post(
        service, "batch", json.dumps({"leads": leads, "v": 2}).encode(), {"Content-Type": "text/plain"}
    )
    assert bad.status_code == 400 and "events.1.lead.email" in bad.json()["details"]
    assert post(service, "batch", b'{"leads": []}', {"Content-Type": "application/json"}).status_code == 400


def test_json_field_is_decoded_in_a_form_or_a_json_object(make_service: Any, tmp_path: Path) -> None:
    mapping = {"event_id": "id", "lead": {"email": "data.email"}, "changes": {"first_name": "data.first"}}
    source = {"verify": {"method": "none"}, "json_field": "data", "mapping": mapping}
    service = make_service(config(tmp_path, wrapped=source))
    inner = json.dumps({"email": "kai@example.com", "first": "Kai"})
    as_json = post(
        service,
        "wrapped",
        json.dumps({"id": "w-1", "data": inner}).encode(),
        {"Content-Type": "application/json"},
    )
    assert as_json.status_code == 202, as_json.text
    form = f"id=w-2&data={requests.utils.quote(inner)}".encode()
    as_form = post(service, "wrapped", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert as_form.status_code == 202, as_form.text
    missing = post(service, "wrapped", b"id=w-3", {"Content-Type": "application/x-www-form-urlencoded"})
    assert missing.status_code == 400 and "data" in missing.json()["details"]
    broken = post(
        service, "wrapped", b"id=w-4&data=%7Bnot", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert broken.status_code == 400 and broken.json()["details"]["data"] == ["Not valid JSON."]
