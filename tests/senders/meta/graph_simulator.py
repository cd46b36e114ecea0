"""Meta Graph API simulator: `GET /<version>/<leadgen_id>` for Lead Ads.

- the access token in `Authorization: Bearer ...` (or `?access_token=`); wrong or missing:
  400 OAuthException code 190, as Graph reports it;
- an unknown lead id: 400 GraphMethodException code 100, subcode 33 ("does not exist");
- a known lead: `{"id", "created_time", "ad_id", "form_id", "field_data": [{"name", "values"}]}`
  restricted to the requested `fields`.
Seed leads with `POST /_sim/leads` (`[{"id": "...", "field_data": [...], ...}]`).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from flask import Flask, jsonify, request

from handlers.simulation import SimulatorState, add_control_routes
from tests.senders.simulator_gate import install_gate

VERSION = re.compile(r"^v\d+\.\d+$")


def create_graph_simulator(access_token: str) -> Flask:
    app = Flask("meta-graph-simulator")
    state = SimulatorState()
    lock = threading.Lock()
    leads: dict[str, dict[str, Any]] = {}
    app.extensions["sim_state"] = state

    def reset() -> None:
        with lock:
            leads.clear()

    def seed(items: list[dict[str, Any]]) -> dict[str, Any]:
        with lock:
            for item in items:
                leads[str(item["id"])] = dict(item)
        return {"ids": [str(item["id"]) for item in items]}

    add_control_routes(app, state, reset_extra=reset, seed_leads=seed)

    def authorised() -> bool:
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.args.get("access_token", "")
        return given == access_token

    install_gate(
        app,
        state,
        authorised,
        {
            "error": {
                "message": "Invalid OAuth access token - Cannot parse access token",
                "type": "OAuthException",
                "code": 190,
                "fbtrace_id": "AbCdEfGhIjK",
            }
        },
    )

    @app.get("/<version>/<object_id>")
    def get_object(version: str, object_id: str) -> Any:
        if not VERSION.match(version):
            return missing(object_id)
        with lock:
            lead = leads.get(object_id)
        if lead is None:
            return missing(object_id)
        wanted = [f for f in (request.args.get("fields") or "").split(",") if f]
        body = {k: v for k, v in lead.items() if not wanted or k in wanted or k == "id"}
        state.record(200)
        return jsonify(body)

    def missing(object_id: str) -> Any:
        state.record(400)
        return jsonify(
            {
                "error": {
                    "message": f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be "
                    "loaded due to missing permissions, or does not support this operation.",
                    "type": "GraphMethodException",
                    "code": 100,
                    "error_subcode": 33,
                    "fbtrace_id": "AbCdEfGhIjK",
                }
            }
        ), 400

    return app
