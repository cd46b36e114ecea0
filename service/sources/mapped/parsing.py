"""A mapped sender's body: JSON, url-encoded form or multipart form (no files), optionally a JSON
document inside one form field, decoded into one document the expressions read."""

from __future__ import annotations

import json
from dataclasses import replace
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from service.sources.base import InboundRequest, PayloadInvalid, UnsupportedMediaType

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
BODY_KINDS = ("auto", "json", "form", "multipart")


def media_type(request: InboundRequest) -> str:
    return request.content_type.split(";")[0].strip().lower()


def body_kind(request: InboundRequest, configured: str) -> str:
    """The configured kind (it wins over the header), or (auto) the one the Content-Type names."""
    ctype = media_type(request)
    detected = (
        "form" if ctype == FORM
        else "multipart" if ctype == MULTIPART
        else "json" if ctype in ("application/json", "text/json", "") or ctype.endswith("+json")
        else None
    )  # fmt: skip
    if configured == "auto":
        if detected is None:
            raise UnsupportedMediaType(f"expected JSON, {FORM} or {MULTIPART}, got {request.content_type!r}")
        return detected
    if configured == "multipart" and detected != "multipart":
        # Only the Content-Type carries the boundary the parts are split on.
        raise UnsupportedMediaType(f"this source takes {MULTIPART} bodies, got {request.content_type!r}")
    # A fixed kind wins over the header: some senders post JSON as text/plain or with none.
    return configured


def _collect(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form pairs as a dict; a repeated name (checkboxes) keeps every value as a list."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            previous = out[name]
            out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[name] = value
    return out


def parse_form(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadInvalid("the form is not UTF-8", {"_schema": ["not UTF-8"]}) from None
    return _collect(parse_qsl(text, keep_blank_values=True))


def parse_multipart(body: bytes, content_type: str) -> dict[str, Any]:
    """Text parts by name; file parts are not supported and are left out."""
    if "boundary=" not in content_type:
        raise PayloadInvalid("the multipart body has no boundary", {"_schema": ["missing boundary"]})
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise PayloadInvalid("the multipart body cannot be read", {"_schema": ["not multipart"]})
    pairs: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_filename():
            continue
        payload = part.get_payload(decode=True) or b""
        try:
            pairs.append((str(name), payload.decode(part.get_content_charset() or "utf-8")))
        except (UnicodeDecodeError, LookupError):
            raise PayloadInvalid("a form part is not UTF-8", {str(name): ["not UTF-8"]}) from None
    return _collect(pairs)


def parse_document(request: InboundRequest, kind: str, json_field: str | None) -> Any:
    """The document the expressions read. With `json_field`, that field (of a form, or of a JSON
    object) holds a JSON document as text and is decoded in place (Jotform's `rawRequest`)."""
    kind = body_kind(request, kind)
    if kind == "json":  # the one JSON decoding every sender shares, whatever the header said
        document = replace(request, content_type="application/json").json()
    else:
        document = (
            parse_form(request.body)
            if kind == "form"
            else parse_multipart(request.body, request.content_type)
        )
    if not json_field:
        return document
    if not isinstance(document, dict) or json_field not in document:
        raise PayloadInvalid(
            f"the body has no {json_field} field", {json_field: ["Missing data for required field."]}
        )
    if isinstance(document[json_field], str):
        try:
            document[json_field] = json.loads(document[json_field])
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise PayloadInvalid(f"{json_field} is not JSON", {json_field: ["Not valid JSON."]}) from None
    elif kind != "json":  # a repeated form field: a list of texts, not one JSON document
        raise PayloadInvalid(f"{json_field} is not JSON", {json_field: ["Not valid JSON."]})
    return document
