"""Salesforce Outbound Message SOAP: the `notifications` envelope read with defusedxml, the Ack and faults written."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from service.sources.base import PayloadInvalid, UnsupportedMediaType

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100  # the WSDL's maxOccurs

ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse>'
    b"</soapenv:Body>"
    b"</soapenv:Envelope>"
)


@dataclass(frozen=True)
class Notification:
    id: str
    object_type: str  # Lead, Contact, Opportunity, ... (the xsi:type without its prefix)
    fields: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str
    notifications: list[Notification]


def fault(code: str, message: str) -> bytes:
    """A SOAP 1.1 fault; `code` is Client (the message is wrong) or Server (retry later)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>soapenv:{code}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()


def _invalid(message: str) -> PayloadInvalid:
    return PayloadInvalid(message, {"_schema": [message]})


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(parent: Element, name: str) -> str:
    child = parent.find(f"{{{OUTBOUND}}}{name}")
    if child is None or not (child.text or "").strip():
        raise _invalid(f"the notifications element has no {name}")
    return child.text.strip()


def _sobject(element: Element) -> tuple[str, dict[str, str | None]]:
    declared = element.get(f"{{{XSI}}}type") or ""
    object_type = declared.rsplit(":", 1)[-1]
    if not object_type:
        raise _invalid("an sObject has no xsi:type")
    values: dict[str, str | None] = {}
    for child in element:
        nil = child.get(f"{{{XSI}}}nil") == "true"
        values[_local(child.tag)] = None if nil else (child.text or "")
    return object_type, values


def parse_message(body: bytes, content_type: str, max_bytes: int) -> OutboundMessage:
    """The envelope, or PayloadInvalid / UnsupportedMediaType. DTDs, entities and external
    references are refused outright (defusedxml), and the size is bounded before parsing."""
    media = content_type.split(";")[0].strip().lower()
    if media not in ("text/xml", "application/xml", "application/soap+xml"):
        raise UnsupportedMediaType(f"expected text/xml, got {content_type!r}")
    if len(body) > max_bytes:
        raise _invalid(f"the message is larger than {max_bytes} bytes")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise _invalid(f"the body is not acceptable XML: {type(exc).__name__}") from None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise _invalid("the body is not a SOAP 1.1 envelope")
    notifications = root.find(f"{{{SOAP_ENV}}}Body/{{{OUTBOUND}}}notifications")
    if notifications is None:
        raise _invalid("the SOAP body has no outbound notifications element")
    items: list[Notification] = []
    for element in notifications.findall(f"{{{OUTBOUND}}}Notification"):
        sobject = element.find(f"{{{OUTBOUND}}}sObject")
        if sobject is None:
            raise _invalid("a Notification has no sObject")
        object_type, values = _sobject(sobject)
        items.append(Notification(id=_text(element, "Id"), object_type=object_type, fields=values))
    if not items or len(items) > MAX_NOTIFICATIONS:
        raise _invalid(f"a message carries 1 to {MAX_NOTIFICATIONS} notifications, this one {len(items)}")
    return OutboundMessage(
        organization_id=_text(notifications, "OrganizationId"),
        action_id=_text(notifications, "ActionId"),
        notifications=items,
    )
