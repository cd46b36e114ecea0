"""The webhook path's shortcuts answer exactly what the Flask/werkzeug machinery they replace did."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, jsonify
from werkzeug.datastructures import EnvironHeaders

from service import metrics
from service.domain.command import LeadIdentity
from service.logs import new_request_id
from service.sources.base import InboundRequest, PayloadInvalid
from service.sources.generic.adapter import GenericAdapter
from service.web.app import GuardedJSONProvider
from service.web.webhooks import EnvironHeaderView, json_response

ENVIRONS: list[dict[str, Any]] = [
    {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "12",
        "HTTP_HOST": "example.com",
        "HTTP_WEBHOOK_ID": "msg_1",
        "HTTP_X_EMPTY": "",
        "HTTP_CONTENT_TYPE": "text/evil",
        "HTTP_CONTENT_LENGTH": "99",
        "wsgi.url_scheme": "http",
    },
    {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "", "CONTENT_LENGTH": "", "HTTP_X_API_KEY": "k"},
    {"REQUEST_METHOD": "GET"},
]
NAMES = [
    "content-type",
    "Content-Type",
    "content-length",
    "host",
    "webhook-id",
    "Webhook-Id",
    "x-empty",
    "x-api-key",
    "X_API_KEY",
    "x_api_key",
    "missing",
    "http-host",
]


@pytest.mark.parametrize("environ", ENVIRONS)
def test_header_view_answers_what_the_lowered_dict_held(environ: dict[str, Any]) -> None:
    eager = {k.lower(): v for k, v in EnvironHeaders(environ).items()}
    view = EnvironHeaderView(environ)
    assert dict(view) == eager
    assert len(view) == len(eager)
    for name in NAMES:
        assert view.get(name.lower()) == eager.get(name.lower()), name
        assert (name.lower() in view) == (name.lower() in eager), name
        if name.lower() in eager:
            assert view[name.lower()] == eager[name.lower()]
        else:
            with pytest.raises(KeyError):
                view[name.lower()]


BODIES: list[Any] = [
    {"status": "accepted", "command_id": "generic:1", "matched_fields": {"email": "E-Mail"}},
    {"error": "the payload is not valid", "code": "VALIDATION_ERROR", "details": {"lead": ["x"]}},
    {"status": "ignored", "ignored": ["form.viewed", "ünïcode ☃"], "b": None, "a": [1, 2.5, True]},
    {"when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)},
    [],
]


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("body", BODIES)
def test_json_response_is_what_jsonify_answered(body: Any, debug: bool) -> None:
    app = Flask("t")
    app.json = GuardedJSONProvider(app)
    app.debug = debug
    with app.app_context():
        ours = app.make_response(json_response(body, 202))
        theirs = app.make_response((jsonify(body), 202))
    assert ours.status_code == theirs.status_code == 202
    assert ours.get_data() == theirs.get_data()
    assert list(ours.headers.items()) == list(theirs.headers.items())


def test_request_ids_are_32_hex_digits_and_a_forked_child_draws_its_own_prefix() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its id and leave without running pytest's teardown
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert len(child) == 32 and child[:16] != new_request_id()[:16]


def test_count_webhook_counts_on_the_labelled_child() -> None:
    child = metrics.WEBHOOKS_RECEIVED.labels(source="unit-test", outcome="accepted")
    before = child._value.get()
    metrics.count_webhook("unit-test", "accepted")
    metrics.count_webhook("unit-test", "accepted")
    assert child._value.get() == before + 2


@pytest.mark.parametrize(
    ("event", "details"),
    [
        ({"lead": {}, "changes": {}}, {"lead._schema": ["at least one of id, email or phone is required"]}),
        ({"lead": {"email": "nope"}, "changes": {}}, {"lead.email": ["Not a valid email address."]}),
        ({"lead": {"email": "a@b.co", "x": 1}, "changes": {}}, {"lead.x": ["Unknown field."]}),
        ({"lead": "a@b.co", "changes": {}}, {"lead._schema": ["Invalid input type."]}),
        ({"lead": {"id": "1"}, "changes": []}, {"changes": ["Not a valid mapping type."]}),
    ],
)
def test_canonical_event_refusals(event: dict[str, Any], details: dict[str, Any]) -> None:
    adapter = GenericAdapter("generic", {"secrets": []})
    with pytest.raises(PayloadInvalid) as refused:
        adapter.parse(InboundRequest(source="generic", body=json.dumps(event).encode()))
    assert refused.value.details == details


def test_canonical_event_lead_is_a_normalised_identity() -> None:
    adapter = GenericAdapter("generic", {"secrets": []})
    event = {"lead": {"email": " Jane@Example.COM", "phone": "+1 415 555 0100"}, "changes": {"city": "X"}}
    payload = adapter.parse(InboundRequest(source="generic", body=json.dumps(event).encode()))
    assert payload["lead"] == LeadIdentity(email="jane@example.com", phone="+14155550100")
    assert payload["changes"] == {"city": "X"} and payload["metadata"] == {}
