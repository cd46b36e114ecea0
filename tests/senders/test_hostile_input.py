"""Hostile input never gets a 5xx: deeply nested, non-UTF-8, malformed, oversized and
oddly framed requests against every sender route, correctly signed where the sender signs,
so each one reaches the decoding it attacks. A few hundred requests in all."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from service.sources.json_body import json_depth_exceeds
from tests.senders.conftest import (
    GOOGLE_KEY,
    UNBOUNCE_TOKEN,
    calendly_headers,
    fixture_bytes,
    fixture_json,
    hubspot_v3_headers,
    meta_headers,
    pipedrive_headers,
    senders_config,
    typeform_headers,
    webflow_headers,
)
from tests.senders.hubspot.test_hubspot import CONTACTS, DEALS
from tests.support import (
    ROOT,
    SIGNING_SECRET,
    canonical_event,
    free_port,
    wait_http_ok,
    write_config,
)

DEEP = 40_000


def with_strings(value: Any, suffix: str) -> Any:
    """`value` with `suffix` appended to every string in it (keys left alone)."""
    if isinstance(value, str):
        return value + suffix
    if isinstance(value, dict):
        return {k: with_strings(v, suffix) for k, v in value.items()}
    if isinstance(value, list):
        return [with_strings(v, suffix) for v in value]
    return value


def hostile_bodies(document: Any) -> dict[str, bytes]:
    """Malformed variants of one sender's documented payload."""
    valid = json.dumps(document).encode()
    inner = valid[1:-1] if isinstance(document, dict) else b'"x": 1'
    return {
        "deep array": b"[" * DEEP + b"]" * DEEP,
        "deep object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        "deep unterminated": b"[" * DEEP,
        "deep inside the payload": b"{" + inner + b', "x": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        "one level too deep": b"{" + inner + b', "x": ' + b"[" * 64 + b"]" * 64 + b"}",
        "brackets inside strings": b"{" + inner + b', "x": "' + b"[" * DEEP + b'"}',
        "not utf-8": valid.replace(b'"', b'"\xff\xfe', 2),
        "utf-16": json.dumps(document).encode("utf-16"),
        "lone surrogates": json.dumps(with_strings(document, "\ud800")).encode(),
        "nul characters": json.dumps(with_strings(document, "\u0000")).encode(),
        "huge integer": b'{"n": ' + b"9" * 5000 + b"}",
        "huge float": b'{"n": 1e999999, "m": NaN, "o": -Infinity}',
        "truncated": valid[: len(valid) // 2],
        "empty": b"",
        "scalar": b"42",
        "null": b"null",
        "array of nulls": b"[null, null]",
        "wrong types": json.dumps(
            with_strings(document, "") if isinstance(document, list) else [document]
        ).encode(),
    }


def standard_webhook_headers(body: bytes) -> dict[str, str]:
    """Standard Webhooks over the raw bytes (the reference signer only takes text)."""
    msg_id, ts = f"hostile-{hashlib.sha256(body).hexdigest()[:16]}", str(int(time.time()))
    key = base64.b64decode(SIGNING_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


def signed_senders(url: str) -> dict[str, tuple[str, Any, Any]]:
    """sender -> (path, documented payload, signer(body) -> headers)."""
    return {
        "generic": ("/webhooks/generic", canonical_event(), standard_webhook_headers),
        "hubspot": ("/webhooks/hubspot", fixture_json("hubspot", "crm_batch_docs_example.json"),
                    lambda b: hubspot_v3_headers(f"{url}/webhooks/hubspot", b)),
        "typeform": ("/webhooks/typeform", fixture_json("typeform", "form_response_docs_example.json"),
                     typeform_headers),
        "meta": ("/webhooks/meta", fixture_json("meta", "leadgen_notification_docs_example.json"), meta_headers),
        "pipedrive": ("/webhooks/pipedrive", fixture_json("pipedrive", "deal_won.json"),
                      lambda b: pipedrive_headers()),
        "calendly": ("/webhooks/calendly", fixture_json("calendly", "invitee_created_docs_example.json"),
                     calendly_headers),
        "webflow": ("/webhooks/webflow", fixture_json("webflow", "form_submission_docs_example.json"),
                    webflow_headers),
        "google_ads": ("/webhooks/google_ads", fixture_json("google_ads", "lead_docs_example.json"),
                       lambda b: {"Content-Type": "application/json"}),
    }  # fmt: skip


def raw_request(url: str, head: str, body: bytes = b"") -> int:
    """Send bytes as they are (requests would fix the framing) and return the status code."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return int(received.split(b" ", 2)[1])


def bad_chunked(path: str, content_type: str = "application/json") -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: leadrelay\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    )


def truncated(path: str) -> str:
    """Content-Length promises 100 bytes; 9 arrive before the client stops sending."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: leadrelay\r\nContent-Type: application/json\r\n"
        'Content-Length: 100\r\nConnection: close\r\n\r\n{"a": [1,'
    )


@pytest.fixture
def every_sender(
    make_service: Any, tmp_path: Path, hubspot_sim: Any, graph_sim: Any, pipedrive_sim: Any
) -> Any:
    requests.post(f"{hubspot_sim.url}/_sim/contacts", json=CONTACTS, timeout=5).raise_for_status()
    requests.post(f"{hubspot_sim.url}/_sim/deals", json=DEALS, timeout=5).raise_for_status()
    lead = fixture_json("meta", "graph_lead_docs_example.json")
    requests.post(f"{graph_sim.url}/_sim/leads", json=[lead], timeout=5).raise_for_status()
    sims = {"hubspot": hubspot_sim.url, "graph": graph_sim.url, "pipedrive": pipedrive_sim.url}
    return make_service(senders_config(tmp_path, sims, google_ads={"accept_test_leads": True}))


@pytest.mark.slow
def test_no_hostile_body_or_header_gets_a_server_error(every_sender: Any) -> None:
    url = every_sender.url
    answers: list[tuple[str, str, int, str]] = []

    def record(sender: str, case: str, response: requests.Response) -> None:
        answers.append((sender, case, response.status_code, response.text[:200]))

    for sender, (path, document, sign) in signed_senders(url).items():
        for case, body in hostile_bodies(document).items():
            record(sender, case, requests.post(url + path, data=body, headers=sign(body), timeout=30))
        valid = json.dumps(document).encode()
        odd_headers = {
            "content-type text/plain": {"Content-Type": "text/plain"},
            "content-type utf-16": {"Content-Type": "application/json; charset=utf-16"},
            "content-type garbage": {"Content-Type": "\x7f;;=;"},
            "signature garbage": {k: "\xe9" * 300 for k in sign(valid) if k.lower() != "content-type"},
            "timestamp huge": {k: "9" * 400 for k in sign(valid) if "timestamp" in k.lower()},
        }
        for case, extra in odd_headers.items():
            headers = {**sign(valid), **extra}
            record(sender, case, requests.post(url + path, data=valid, headers=headers, timeout=30))
        record(sender, "unsigned deep", requests.post(url + path, data=b"[" * DEEP, timeout=30))
        answers.append((sender, "malformed chunked", raw_request(url, bad_chunked(path)), ""))
        answers.append((sender, "truncated", raw_request(url, truncated(path)), ""))

    form = fixture_json("unbounce", "form_post_docs_example.json")
    unbounce = f"/webhooks/unbounce/{UNBOUNCE_TOKEN}"
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    for case, data_json in hostile_bodies(json.loads(form["data.json"])).items():
        body = urlencode({**form, "data.json": data_json}).encode()
        record("unbounce", case, requests.post(url + unbounce, data=body, headers=form_headers, timeout=30))
    for case, body in {"not utf-8 form": b"data.json=%FF%FE&x=\xff", "deep raw": b"[" * DEEP}.items():
        record("unbounce", case, requests.post(url + unbounce, data=body, headers=form_headers, timeout=30))
    code = raw_request(url, bad_chunked(unbounce, "application/x-www-form-urlencoded"))
    answers.append(("unbounce", "malformed chunked", code, ""))

    server_errors = [a for a in answers if a[2] >= 500]
    assert len(answers) > 200
    assert server_errors == [], server_errors
    # The attacks that used to be 5xx are now named 4xx answers.
    by_case = {(s, c): code for s, c, code, _ in answers}
    for sender in ("generic", "typeform", "webflow", "google_ads", "hubspot"):
        assert by_case[(sender, "deep array")] == 400
        assert by_case[(sender, "deep inside the payload")] == 400
        assert by_case[(sender, "malformed chunked")] == 400
    assert by_case[("generic", "not utf-8")] == 415
    assert by_case[("google_ads", "unsigned deep")] == 400  # before the key is looked at


def test_nesting_limit_message_and_bracket_text(senders: Any) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    answer = requests.post(f"{senders.url}/webhooks/google_ads", data=deep, timeout=30)
    assert answer.status_code == 400
    assert "nested deeper than 64 levels" in answer.json()["error"]
    # Brackets in string values count for nothing: Google's example with a bracket-laden
    # value is accepted.
    lead = fixture_json("google_ads", "lead_docs_example.json")
    lead["is_test"] = False
    lead["user_column_data"][0]["string_value"] = "[" * 5000 + "{" * 5000
    answer = requests.post(f"{senders.url}/webhooks/google_ads", json=lead, timeout=30)
    assert answer.status_code == 202, answer.text


def test_signed_body_that_is_not_utf8_is_415_not_a_signature_failure(senders: Any) -> None:
    body = json.dumps(canonical_event()).encode().replace(b"Jane", b"J\xe4ne")  # Latin-1
    answer = requests.post(
        f"{senders.url}/webhooks/generic", data=body, headers=standard_webhook_headers(body), timeout=10
    )
    assert answer.status_code == 415, answer.text
    assert "UTF-8" in answer.json()["error"] and "signature" not in answer.json()["error"]


def test_upstream_failure_answer_names_no_internal_address(senders: Any) -> None:
    # The HubSpot API base is a closed loopback port: the look-up fails after its retries.
    body = fixture_bytes("hubspot", "contact_creation_delivery.json")
    url = f"{senders.url}/webhooks/hubspot"
    answer = requests.post(url, data=body, headers=hubspot_v3_headers(url, body), timeout=30)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.json()["error"] == "the HubSpot CRM look-up failed"
    for internal in ("127.0.0.1", "HTTPConnectionPool", "Errno", "Traceback", "refused"):
        assert internal not in answer.text


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gthread", "sync"])
def test_malformed_chunked_framing_is_400_under_gunicorn(tmp_path: Path, worker_class: str) -> None:
    raw = senders_config(tmp_path)
    raw["server"]["metrics_port"] = 0
    config_path = write_config(tmp_path, raw)
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:service.web.gunicorn_conf", "-k", worker_class,
         "-w", "1", "-b", f"127.0.0.1:{port}", "service.web.app:create_app()"],
        env={**os.environ, "LEADRELAY_CONFIG": str(config_path), "GUNICORN_ACCESSLOG": ""},
        cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/healthz")
        for path in ("/webhooks/generic", "/webhooks/typeform", "/webhooks/google_ads"):
            assert raw_request(url, bad_chunked(path)) == 400, (tmp_path / "gunicorn.log").read_text()
            # gunicorn hands the app the bytes that came; what the app makes of them is a 4xx.
            assert 400 <= raw_request(url, truncated(path)) < 500, (tmp_path / "gunicorn.log").read_text()
        deep = b"[" * DEEP + b"]" * DEEP
        assert requests.post(f"{url}/webhooks/google_ads", data=deep, timeout=30).status_code == 400
        key = {"google_key": GOOGLE_KEY}
        assert requests.post(f"{url}/webhooks/google_ads", json=key, timeout=30).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def nesting(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\u00e9\U0001f600', max_size=8)
NESTED_JSON = st.recursive(
    st.none() | st.integers() | TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
    max_leaves=30,
)


@given(value=NESTED_JSON, ensure_ascii=st.booleans())
@settings(max_examples=300, deadline=None, database=None)
def test_the_depth_scan_sees_the_nesting_the_parser_sees(value: Any, ensure_ascii: bool) -> None:
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    depth = nesting(value)
    # Brackets, quotes and backslashes inside strings and keys never count.
    assert not json_depth_exceeds(body, limit=depth)
    if depth:
        assert json_depth_exceeds(body, limit=depth - 1)
