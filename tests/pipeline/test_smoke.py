from __future__ import annotations

import requests

from tests.support import post_generic, sim_calls


def test_signed_webhook_reaches_leadsquared_once(service, lsq_sim) -> None:
    requests.post(f"{lsq_sim.url}/_sim/leads", json=[{"EmailAddress": "jane@example.com"}], timeout=5)
    first = post_generic(
        service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "London"}}, "msg_a"
    )
    assert first.status_code == 202, first.text
    again = post_generic(
        service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "London"}}, "msg_a"
    )
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    service.drain()
    updates = sim_calls(lsq_sim.url, "Lead.Update")
    assert len(updates) == 1
    assert updates[0]["query"]["postUpdatedLead"] == "true"
    assert updates[0]["json"] == [{"Attribute": "mx_City", "Value": "London"}]
