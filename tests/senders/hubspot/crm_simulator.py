"""HubSpot CRM API simulator: the three batch calls the HubSpot adapter makes.

- `POST /crm/v3/objects/contacts/batch/read` and `/crm/v3/objects/deals/batch/read`:
  body `{"properties": [...], "inputs": [{"id": "..."}]}` (at most 100 inputs); answer 200
  `{"status": "COMPLETE", "results": [...]}`, or 207 with `errors` naming missing ids.
- `POST /crm/v4/associations/deal/contact/batch/read`: `{"inputs": [{"id": deal}]}` ->
  `{"results": [{"from": {"id"}, "to": [{"toObjectId", "associationTypes"}]}]}`.
- `Authorization: Bearer <private app token>`, else 401 INVALID_AUTHENTICATION; more than
  100 calls in 10 s per token: 429 RATE_LIMIT (private app burst limit).
Seed with `POST /_sim/contacts` and `POST /_sim/deals` (`[{"id", "properties", "contacts"}]`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from flask import Flask, jsonify, request

from handlers.simulation import SimulatorState, SlidingWindowLimit, add_control_routes
from tests.senders.simulator_gate import install_gate

BATCH_LIMIT = 100


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def create_hubspot_simulator(access_token: str, rate_limit: tuple[int, float] = (100, 10.0)) -> Flask:
    app = Flask("hubspot-simulator")
    state = SimulatorState()
    lock = threading.Lock()
    objects: dict[str, dict[str, dict[str, Any]]] = {"contacts": {}, "deals": {}}
    deal_contacts: dict[str, list[str]] = {}
    app.extensions["sim_state"] = state

    def reset() -> None:
        with lock:
            objects["contacts"].clear()
            objects["deals"].clear()
            deal_contacts.clear()

    add_control_routes(app, state, reset_extra=reset)
    install_gate(
        app,
        state,
        lambda: request.headers.get("Authorization") == f"Bearer {access_token}",
        {
            "status": "error",
            "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            "category": "INVALID_AUTHENTICATION",
        },
        SlidingWindowLimit(*rate_limit),
        {
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "TEN_SECONDLY_ROLLING",
        },
    )

    @app.post("/_sim/contacts")
    def seed_contacts() -> Any:
        with lock:
            for item in request.get_json(force=True):
                objects["contacts"][str(item["id"])] = dict(item.get("properties") or {})
        return jsonify({"ok": True})

    @app.post("/_sim/deals")
    def seed_deals() -> Any:
        with lock:
            for item in request.get_json(force=True):
                objects["deals"][str(item["id"])] = dict(item.get("properties") or {})
                deal_contacts[str(item["id"])] = [str(c) for c in item.get("contacts") or []]
        return jsonify({"ok": True})

    def bad_request(message: str) -> Any:
        state.record(400)
        return jsonify({"status": "error", "message": message, "category": "VALIDATION_ERROR"}), 400

    def inputs() -> list[str] | None:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            return None
        ids = [item.get("id") for item in body["inputs"] if isinstance(item, dict)]
        if len(ids) != len(body["inputs"]) or not all(isinstance(i, str) and i for i in ids):
            return None
        return ids

    @app.post("/crm/v3/objects/<object_type>/batch/read")
    def batch_read(object_type: str) -> Any:
        if object_type not in objects:
            state.record(404)
            return jsonify({"status": "error", "message": f"Unknown object type {object_type}"}), 404
        ids = inputs()
        if ids is None:
            return bad_request("Invalid input JSON: inputs must be a list of {id}")
        if len(ids) > BATCH_LIMIT:
            return bad_request(f"Batch input must not exceed {BATCH_LIMIT} inputs")
        wanted = (request.get_json(silent=True) or {}).get("properties") or []
        results, missing = [], []
        with lock:
            for object_id in ids:
                props = objects[object_type].get(object_id)
                if props is None:
                    missing.append(object_id)
                    continue
                chosen = {k: props.get(k) for k in wanted} if wanted else dict(props)
                chosen["hs_object_id"] = object_id
                results.append(
                    {
                        "id": object_id,
                        "properties": chosen,
                        "createdAt": _now(),
                        "updatedAt": _now(),
                        "archived": False,
                    }
                )
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": _now(),
            "completedAt": _now(),
        }
        if missing:
            body["numErrors"] = 1
            body["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {object_type.upper()[:-1]} objects, they may be deleted or not exist.",
                    "context": {"ids": missing},
                }
            ]
        status = 207 if missing else 200
        state.record(status)
        return jsonify(body), status

    @app.post("/crm/v4/associations/deal/contact/batch/read")
    def associations() -> Any:
        ids = inputs()
        if ids is None:
            return bad_request("Invalid input JSON: inputs must be a list of {id}")
        if len(ids) > BATCH_LIMIT:
            return bad_request(f"Batch input must not exceed {BATCH_LIMIT} inputs")
        results = []
        with lock:
            for deal_id in ids:
                contacts = deal_contacts.get(deal_id) or []
                if contacts:
                    results.append(
                        {
                            "from": {"id": deal_id},
                            "to": [
                                {
                                    "toObjectId": int(c),
                                    "associationTypes": [
                                        {"category": "HUBSPOT_DEFINED", "typeId": 3, "label": None}
                                    ],
                                }
                                for c in contacts
                            ],
                        }
                    )
        state.record(200)
        return jsonify({"status": "COMPLETE", "results": results, "startedAt": _now(), "completedAt": _now()})

    @app.errorhandler(404)
    def not_found(_: Any) -> Any:
        state.record(404)
        return jsonify(
            {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"}
        ), 404

    @app.errorhandler(405)
    def not_allowed(_: Any) -> Any:
        state.record(405)
        return jsonify({"status": "error", "message": "method not allowed"}), 405

    return app
