"""Salesforce Outbound Messages: the documented SOAP envelope in, the exact acknowledgement out
only once every notification is queued, a SOAP fault otherwise; each lead lands in LeadSquared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from handlers.simulation import ServedApp
from service.config import ConfigError
from tests.senders.mapped.conftest import lsq_updates, seed_lead
from tests.support import base_config, load, wait_until
from tests.support_postgres import ScratchDatabase

HERE = Path(__file__).resolve().parent
ORG = "00D5e000000HxYzEAK"
SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b'<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


def message(name: str) -> bytes:
    return (HERE / "fixtures" / name).read_bytes()


def salesforce_config(tmp_path: Path, lsq_url: str = "http://127.0.0.1:9", **settings: Any) -> dict[str, Any]:
    raw = base_config(tmp_path, lsq_url)
    raw["sources"]["salesforce"] = {"type": "salesforce", "organization_id": ORG, **settings}
    raw["routes"] = [{"source": "*", "providers": ["leadsquared"]}]
    return raw


def post(service: Any, body: bytes, headers: dict[str, str] = SOAP) -> requests.Response:
    return requests.post(f"{service.url}/webhooks/salesforce", data=body, headers=headers, timeout=10)


def queued(service: Any) -> int:
    service.runtime.store.drain_inbox()  # accepted commands join the queue tables here
    with service.runtime.store.read() as db:
        return int(db.execute("SELECT COUNT(*) AS n FROM commands").fetchone()["n"])


def test_lead_message_is_acknowledged_and_each_lead_lands(
    make_service: Any, lsq_sim: ServedApp, tmp_path: Path
) -> None:
    service = make_service(salesforce_config(tmp_path, lsq_sim.url))
    seed_lead(lsq_sim.url, "marc.benioff@example.com")
    seed_lead(lsq_sim.url, "parker@example.com")
    response = post(service, message("lead_notifications.xml"))
    assert response.status_code == 200, response.text
    assert response.content == ACK
    assert response.headers["Content-Type"].startswith("text/xml")
    assert queued(service) == 2
    service.drain()
    updates = wait_until(
        lambda: len(lsq_updates(lsq_sim.url)) == 2 and lsq_updates(lsq_sim.url), what="2 updates"
    )
    by_name = {u["LastName"]: u for u in updates}
    assert by_name["Benioff"]["FirstName"] == "Marc"
    assert by_name["Benioff"]["Company"] == "Universal Technologies"
    assert by_name["Benioff"]["ProspectStage"] == "Contacted"  # Working - Contacted -> contacted
    assert by_name["Benioff"]["JobTitle"] == "CEO"
    assert by_name["Parker"]["ProspectStage"] == "Customer"  # Closed - Converted -> won
    assert "Phone" not in by_name["Parker"]  # xsi:nil is "no value", never sent as a clear


def test_a_resent_message_is_acknowledged_once_more_and_queues_nothing(
    make_service: Any, tmp_path: Path
) -> None:
    service = make_service(salesforce_config(tmp_path))
    body = message("lead_notifications.xml")
    assert post(service, body).status_code == 200
    again = post(service, body)  # Salesforce resends until acknowledged, for up to 24 hours
    assert again.status_code == 200 and again.content == ACK
    assert queued(service) == 2
    with service.runtime.store.read() as db:
        ids = [r["command_id"] for r in db.execute("SELECT command_id FROM commands")]
    assert sorted(ids) == ["salesforce:04l5e00000AbCdEAAV", "salesforce:04l5e00000AbCdFAAV"]


def test_contact_and_opportunity_land_with_their_default_maps(
    make_service: Any, lsq_sim: ServedApp, tmp_path: Path
) -> None:
    config = salesforce_config(
        tmp_path, lsq_sim.url, field_maps={"Opportunity": {"Contact_Email__c": "email"}}
    )
    service = make_service(config)
    seed_lead(lsq_sim.url, "rose.gonzalez@example.com")
    seed_lead(lsq_sim.url, "marc.benioff@example.com")
    assert post(service, message("contact_notification.xml")).content == ACK
    assert post(service, message("opportunity_notification.xml")).content == ACK
    service.drain()
    updates = wait_until(
        lambda: len(lsq_updates(lsq_sim.url)) == 2 and lsq_updates(lsq_sim.url), what="2 updates"
    )
    contact = next(u for u in updates if u.get("LastName") == "Gonzalez")
    assert contact["Mobile"] == "(512) 555-0142" and contact["mx_City"] == "Austin"
    deal = next(u for u in updates if "mx_Deal_Value" in u)
    assert deal["ProspectStage"] == "Customer" and deal["mx_Deal_Value"] == "125000"


def test_an_opportunity_without_a_person_is_acknowledged_and_ignored(
    make_service: Any, tmp_path: Path
) -> None:
    service = make_service(salesforce_config(tmp_path))
    response = post(service, message("opportunity_notification.xml"))
    assert response.status_code == 200 and response.content == ACK  # no retry can ever map it
    assert queued(service) == 0


def test_another_org_gets_a_client_fault_and_nothing_is_queued(make_service: Any, tmp_path: Path) -> None:
    service = make_service(salesforce_config(tmp_path, organization_id="00D000000000001AAA"))
    response = post(service, message("lead_notifications.xml"))
    assert response.status_code == 401
    assert b"<faultcode>soapenv:Client</faultcode>" in response.content
    assert queued(service) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"<not xml",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><x>&b;</x>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body/></soapenv:Envelope>',
    ],
    ids=["malformed", "entity-expansion", "external-entity", "no-notifications"],
)
def test_bad_xml_is_a_client_fault_that_leaks_nothing(body: bytes, make_service: Any, tmp_path: Path) -> None:
    service = make_service(salesforce_config(tmp_path))
    response = post(service, body)
    assert response.status_code == 400, response.text
    assert b"<faultcode>soapenv:Client</faultcode>" in response.content
    assert b"root:" not in response.content and b"Traceback" not in response.content
    assert queued(service) == 0


def test_when_nothing_can_be_queued_the_answer_is_a_server_fault(
    make_service: Any, tmp_path: Path, postgres: str
) -> None:
    # The database goes away under the service: nothing can be accepted, so nothing is acknowledged.
    database = ScratchDatabase(postgres)
    raw = salesforce_config(tmp_path)
    raw["database"] = {"url": database.url, "connect_timeout_seconds": 1.0}
    service = make_service(raw)
    database.drop()
    response = post(service, message("lead_notifications.xml"))
    assert response.status_code == 500
    assert b"<faultcode>soapenv:Server</faultcode>" in response.content
    assert b"127.0.0.1" not in response.content and b"Ack" not in response.content


def test_salesforce_cannot_be_bound_to_a_kafka_topic(tmp_path: Path) -> None:
    raw = salesforce_config(tmp_path)
    raw["kafka"] = {"sources": [{"topic": "sf", "format": "salesforce"}]}
    with pytest.raises(ConfigError, match="HTTP only"):
        load(raw)


def test_no_ack_while_a_notification_is_still_being_accepted_elsewhere(
    make_service: Any, tmp_path: Path
) -> None:
    service = make_service(salesforce_config(tmp_path))
    # A concurrent delivery of the same message holds the second notification's claim.
    service.runtime.dedup.claim("cmd:salesforce:04l5e00000AbCdFAAV", 60)
    response = post(service, message("lead_notifications.xml"))
    assert response.status_code == 500 and b"soapenv:Server" in response.content
    assert response.headers["Retry-After"]
    service.runtime.dedup.release("cmd:salesforce:04l5e00000AbCdFAAV")  # that delivery failed
    retry = post(service, message("lead_notifications.xml"))
    assert retry.status_code == 200 and retry.content == ACK
    assert queued(service) == 2  # the first notification was not queued twice
