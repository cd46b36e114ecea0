"""Pipedrive API simulator: `GET /api/v2/persons/{id}` with `x-api-token`.

Wrong or missing token: 401 `{"success": false, "error": "unauthorized access", "errorCode": 401}`;
unknown person: 404 `{"success": false, "error": "Person not found"}`; a known person:
`{"success": true, "data": {"id", "name", "first_name", "last_name", "emails": [...], "phones": [...]}}`.
Seed with `POST /_sim/leads` (`[{"id": 1, "name": ..., "emails": [...], "phones": [...]}]`).
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, jsonify, request

from handlers.simulation import SimulatorState, add_control_routes
from tests.senders.simulator_gate import install_gate


def create_pipedrive_simulator(api_token: str) -> Flask:
    app = Flask("pipedrive-simulator")
    state = SimulatorState()
    lock = threading.Lock()
    persons: dict[str, dict[str, Any]] = {}
    app.extensions["sim_state"] = state

    def reset() -> None:
        with lock:
            persons.clear()

    def seed(items: list[dict[str, Any]]) -> dict[str, Any]:
        with lock:
            for item in items:
                persons[str(item["id"])] = dict(item)
        return {"ids": [str(item["id"]) for item in items]}

    add_control_routes(app, state, reset_extra=reset, seed_leads=seed)
    install_gate(
        app,
        state,
        lambda: (request.headers.get("x-api-token") or request.args.get("api_token")) == api_token,
        {
            "success": False,
            "error": "unauthorized access",
            "errorCode": 401,
            "error_info": "Please check developers.pipedrive.com",
        },
    )

    @app.get("/api/v2/persons/<person_id>")
    def get_person(person_id: str) -> Any:
        with lock:
            person = persons.get(person_id)
        if person is None:
            state.record(404)
            return jsonify({"success": False, "error": "Person not found", "errorCode": 404}), 404
        state.record(200)
        return jsonify({"success": True, "data": person})

    return app
