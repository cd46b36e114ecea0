"""The admin API's event filters over real HTTP, on the embedded store: lead by email, phone or
id, source, event type, time; a bad filter value is a 400, never a 5xx."""

from __future__ import annotations

import time
from typing import Any

from tests.support import admin_get, canonical_event, post_generic


def test_events_filter_by_lead_source_and_time(service: Any) -> None:
    started = time.time()
    for number, email in enumerate(["jane@example.com", "joe@example.com", "jane@example.com"]):
        assert post_generic(service.url, canonical_event(email=email), f"msg_{number}").status_code == 202
    phone_event = {
        "event_type": "form.submitted",
        "lead": {"phone": "+14155550100"},
        "changes": {"city": "Rome"},
    }
    assert post_generic(service.url, phone_event, "msg_phone").status_code == 202

    def listed(query: str) -> list[str]:
        answer = admin_get(service.url, f"/v1/events?{query}")
        assert answer.status_code == 200, answer.text
        return [e["command_id"] for e in answer.json()["events"]]

    assert listed("lead=JANE@example.com") == ["generic:msg_0", "generic:msg_2"]
    assert listed("lead=%2B14155550100") == ["generic:msg_phone"]
    assert listed("source=generic&event_type=form.submitted&limit=2") == ["generic:msg_0", "generic:msg_1"]
    assert listed(f"since={started - 1}&until={time.time() + 1}&lead=joe@example.com") == ["generic:msg_1"]
    assert listed(f"since={time.time() + 60}") == []
    bad = admin_get(service.url, "/v1/events?since=yesterday")
    assert bad.status_code == 400 and bad.json()["code"] == "VALIDATION_ERROR"
    shown = admin_get(service.url, "/v1/events/generic:msg_phone").json()
    assert shown["lead"]["phone"] == "+14155550100"
    assert [t["status"] for t in shown["timeline"]] == ["received"]
