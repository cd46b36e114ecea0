"""POST /webhooks/generic over real HTTP: every documented answer, and nothing queued on a 4xx."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from service.sources.base import InboundRequest
from service.sources.generic.adapter import verify_standard_webhook
from tests.support import canonical_event, post_generic, signed_headers

VECTORS = Path("/work/shared/research/standard-webhooks")


def queued(service) -> int:
    service.runtime.store.drain_inbox()  # accepted commands join the queue tables here
    with service.runtime.store.read() as db:
        return db.execute("SELECT COUNT(*) AS n FROM commands").fetchone()["n"]


def test_standard_webhooks_test_vector_verifies() -> None:
    # The spec's own numbers (libraries/python/tests/test_webhooks.py::test_sign_function).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    from service.cli.simulators import sign_standard_webhook

    assert (
        sign_standard_webhook(secret, headers["webhook-id"], 1614265330, body) == headers["webhook-signature"]
    )
    # Its timestamp is years old: the 5-minute tolerance rejects it as a replay.
    from service.sources.base import AuthenticationFailed

    with pytest.raises(AuthenticationFailed, match="too old"):
        verify_standard_webhook(InboundRequest(source="generic", body=body, headers=headers), [secret])


def test_accepted_only_after_the_command_is_queued(service) -> None:
    response = post_generic(service.url, canonical_event(), "msg_ok")
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "command_id": "generic:msg_ok"}
    row = service.runtime.store.get_event("generic:msg_ok")
    assert row["command"]["lead"]["email"] == "jane@example.com"
    assert row["deliveries"][0]["provider"] == "leadsquared"


def test_rotated_secrets_are_both_accepted(make_service, lsq_sim, tmp_path) -> None:
    from tests.support import SIGNING_SECRET, base_config

    old = "whsec_" + "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA=="
    service = make_service(
        base_config(tmp_path, lsq_sim.url, sources={"generic": {"secrets": [SIGNING_SECRET, old]}})
    )
    assert post_generic(service.url, canonical_event(), "msg_new").status_code == 202
    assert post_generic(service.url, canonical_event(city="Paris"), "msg_old", secret=old).status_code == 202


def test_duplicate_event_is_answered_200_and_not_queued_twice(service) -> None:
    assert post_generic(service.url, canonical_event(), "msg_dup").status_code == 202
    again = post_generic(service.url, canonical_event(), "msg_dup")
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "command_id": "generic:msg_dup"}
    assert queued(service) == 1
    assert service.runtime.store.get_event("generic:msg_dup")["duplicates_received"] == 1


def test_double_submitted_form_is_caught_by_the_fingerprint_window(make_service, lsq_sim, tmp_path) -> None:
    from tests.support import admin_get, base_config

    service = make_service(base_config(tmp_path, lsq_sim.url, dedup={"fingerprint_window_seconds": 600}))
    assert post_generic(service.url, canonical_event(), "msg_form_1").status_code == 202
    second = post_generic(service.url, canonical_event(), "msg_form_2")  # new id, same content
    assert second.status_code == 200
    assert second.json() == {
        "status": "duplicate",
        "command_id": "generic:msg_form_2",
        "duplicate_of": "generic:msg_form_1",
    }
    assert post_generic(service.url, canonical_event(city="Paris"), "msg_form_3").status_code == 202
    # The double submit is in the event log, with nothing to deliver.
    event = admin_get(service.url, "/v1/events/generic:msg_form_2").json()
    assert event["status"] == "duplicate" and event["duplicate_of"] == "generic:msg_form_1"
    assert [d["status"] for d in event["deliveries"]] == ["duplicate"]
    listed = admin_get(service.url, "/v1/events?status=duplicate").json()["events"]
    assert [e["command_id"] for e in listed] == ["generic:msg_form_2"]


def _post(service, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{service.url}/webhooks/generic", data=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "case",
    ["wrong_signature", "other_secret", "stale", "future", "missing_header", "garbage_signature"],
)
def test_bad_signatures_are_401(service, case: str) -> None:
    body = json.dumps(canonical_event()).encode()
    headers = signed_headers(body, f"msg_{case}")
    if case == "wrong_signature":
        headers["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    elif case == "other_secret":
        headers = signed_headers(body, f"msg_{case}", secret="whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==")
    elif case == "stale":
        headers = signed_headers(body, f"msg_{case}", ts=int(time.time()) - 301)
    elif case == "future":
        headers = signed_headers(body, f"msg_{case}", ts=int(time.time()) + 400)
    elif case == "missing_header":
        del headers["webhook-signature"]
    else:
        headers["webhook-signature"] = "v1,,,not base64!!"
    response = _post(service, body, headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "UNAUTHORIZED"
    assert queued(service) == 0


def test_body_tampered_after_signing_is_401(service) -> None:
    body = json.dumps(canonical_event()).encode()
    headers = signed_headers(body, "msg_tamper")
    response = _post(service, body.replace(b"London", b"Berlin"), headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"changes": {"city": "London"}}, "lead"),
        ({"lead": {}, "changes": {"city": "London"}}, "lead._schema"),
        ({"lead": {"email": "not-an-email"}, "changes": {}}, "lead.email"),
        ({"lead": {"email": "a@b.co"}, "changes": {"value": "a lot"}}, "changes"),
        ({"lead": {"email": "a@b.co"}, "changes": {"shoe_size": 44}}, "changes"),
        ({"lead": {"email": "a@b.co"}, "changes": {"city": {"nested": 1}}}, "changes"),
        ({"lead": {"email": "a@b.co"}, "changes": {}, "occurred_at": "yesterday"}, "occurred_at"),
        ({"lead": {"email": "a@b.co"}, "changes": {}, "colour": "red"}, "colour"),
        ({"lead": {"email": "a@b.co"}, "changes": [], "metadata": "x"}, "metadata"),
    ],
)
def test_invalid_events_get_every_field_error(service, event: dict, field: str) -> None:
    response = post_generic(service.url, event, f"msg_invalid_{field}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert field in body["details"], body
    assert queued(service) == 0


def test_several_errors_are_reported_together(service) -> None:
    response = post_generic(
        service.url, {"lead": {"email": "nope"}, "changes": {"value": "x"}, "extra": 1}, "m"
    )
    assert set(response.json()["details"]) >= {"lead.email", "changes", "extra"}


def test_oversized_body_is_413(service) -> None:
    event = canonical_event()
    event["metadata"] = {"blob": "x" * (256 * 1024)}
    response = post_generic(service.url, event, "msg_big")
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert queued(service) == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"not json at all", "application/json"), (b'{"a":1}', "text/plain"), (b"{'a': 1}", "application/json")],
)
def test_non_json_is_415(service, body: bytes, content_type: str) -> None:
    headers = signed_headers(body, "msg_nonjson")
    headers["Content-Type"] = content_type
    response = _post(service, body, headers)
    assert response.status_code == 415, response.text
    assert queued(service) == 0


def test_binary_body_is_a_4xx_not_a_500(service) -> None:
    headers = signed_headers(b"{}", "msg_binary")
    response = _post(service, b"\xff\xfe\x00", headers)
    assert response.status_code == 401
    assert queued(service) == 0


def test_json_that_is_not_an_object_is_400(service) -> None:
    body = b"[1, 2, 3]"
    assert _post(service, body, signed_headers(body, "msg_list")).status_code == 400


def test_unknown_source_is_404_json(service) -> None:
    response = requests.post(f"{service.url}/webhooks/nope", data=b"{}", timeout=5)
    assert response.status_code == 404 and response.json()["code"] == "UNKNOWN_SOURCE"


def test_health_and_readiness(service) -> None:
    assert requests.get(f"{service.url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{service.url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["providers"] == {"leadsquared": "configured"}


def test_readiness_names_a_provider_without_credentials(make_service, tmp_path) -> None:
    from tests.support import base_config

    raw = base_config(tmp_path)
    raw["providers"] = {"octanist": {"type": "octanist", "base_url": "http://127.0.0.1:9"}}
    raw["routes"] = [{"source": "generic", "providers": ["octanist"]}]
    service = make_service(raw)
    ready = requests.get(f"{service.url}/readyz", timeout=5)
    assert ready.status_code == 503
    assert any("api_key not configured" in reason for reason in ready.json()["reasons"])


def test_request_id_is_echoed_or_assigned(service) -> None:
    body = json.dumps(canonical_event("rid@example.com")).encode()
    given = _post(service, body, {**signed_headers(body, "msg_rid_1"), "X-Request-Id": "r" * 80})
    assert given.status_code == 202 and given.headers["X-Request-Id"] == "r" * 64
    assigned = [
        _post(service, body, signed_headers(body, f"msg_rid_{i}")).headers["X-Request-Id"] for i in (2, 3)
    ]
    assert assigned[0] != assigned[1] and all(len(rid) == 32 and int(rid, 16) >= 0 for rid in assigned)
    unknown = requests.post(f"{service.url}/webhooks/nope", data=b"{}", timeout=10)
    assert unknown.status_code == 404 and len(unknown.headers["X-Request-Id"]) == 32
