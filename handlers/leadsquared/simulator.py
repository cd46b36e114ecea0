"""A LeadSquared simulator that follows the documented contract (seed 001 and the wider docs).

- `POST /v2/LeadManagement.svc/Lead.Update?accessKey&secretKey&leadId[&postUpdatedLead]`
- `GET  /v2/LeadManagement.svc/Leads.GetByEmailaddress?emailaddress=` -> `[]` when unknown
- `GET  /v2/LeadManagement.svc/RetrieveLeadByPhoneNumber?phone=` (digits; Phone or Mobile)
- `GET  /v2/LeadManagement.svc/Leads.GetById?id=`
- wrong keys: 401; malformed body or an attribute the lead schema does not have: 400;
  unknown path: 404; over 25 calls in any 5 s per access key: 429; an unknown leadId:
  500 with an `MX*Exception` (how the real API reports business errors).
Every call is recorded (`GET /_sim/calls`). The Async API (`/lead/update`, its status and
metrics) is served by the same app: see `simulators/leadsquared_async.py`.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

from flask import Flask, Response, jsonify, request

from handlers.leadsquared_async.simulator import add_async_routes
from handlers.simulation import is_control_request, simulator_app

# The lead schema the simulator accepts: standard fields plus the custom ones we map to.
KNOWN_ATTRIBUTES = {
    "FirstName", "LastName", "EmailAddress", "Phone", "Mobile", "Company", "JobTitle", "Website",
    "Source", "ProspectStage", "Notes", "Score", "OwnerIdEmailAddress",
    "mx_City", "mx_State", "mx_Country", "mx_Zip", "mx_Deal_Value", "mx_Loss_Reason",
}  # fmt: skip

BASE = "/v2/LeadManagement.svc"


def _error(status: int, exception_type: str, message: str) -> tuple[Response, int]:
    return jsonify({"Status": "Error", "ExceptionType": exception_type, "ExceptionMessage": message}), status


class LeadSquaredStore:
    def __init__(self) -> None:
        self.leads: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._auto = itertools.count(1)

    def add(self, fields: dict[str, Any]) -> str:
        lead_id = str(fields.get("ProspectID") or uuid.uuid4())
        with self.lock:
            self.leads[lead_id] = {
                "ProspectID": lead_id,
                "ProspectAutoId": str(next(self._auto)),
                **{k: (None if v is None else str(v)) for k, v in fields.items() if k != "ProspectID"},
            }
        return lead_id

    def find(self, predicate: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(lead) for lead in self.leads.values() if predicate(lead)]


def create_leadsquared_simulator(
    access_key: str = "sim-access-key",
    secret_key: str = "sim-secret-key",
    rate_limit: tuple[int | None, float] = (25, 5.0),
    async_api_key: str = "sim-async-api-key",
) -> Flask:
    store = LeadSquaredStore()
    app, state, limit = simulator_app(
        "leadsquared-simulator",
        store,
        rate_limit,
        {"Status": "Error", "ExceptionType": "SimulatedFault", "ExceptionMessage": "fault"},
        on_reset=lambda: async_queue.reset(),
    )
    app.config["ASYNC_API_KEY"] = async_api_key
    async_queue = add_async_routes(
        app, state, store, KNOWN_ATTRIBUTES, (access_key, secret_key), async_api_key
    )

    @app.before_request
    def gate() -> Any:
        if is_control_request():
            return None
        if request.path.startswith(BASE):
            if request.args.get("accessKey") != access_key or request.args.get("secretKey") != secret_key:
                state.record(401)
                return _error(401, "MXUnAuthorizedAccessException", "Invalid AccessKey or SecretKey")
        allowed, _ = limit.allow(request.args.get("accessKey") or request.headers.get("x-api-key") or "anon")
        if not allowed:
            state.record(429)
            return _error(
                429, "MXAPIRateLimitExceededException", "API calls exceeded the limit of 25 in 5 second(s)"
            )
        return None

    @app.post(f"{BASE}/Lead.Update")
    def lead_update() -> Any:
        lead_id = request.args.get("leadId")
        body = request.get_json(silent=True)
        if request.mimetype != "application/json" or not isinstance(body, list):
            state.record(400)
            return _error(
                400, "MXInvalidInputException", "The message body must be a JSON array of Attribute/Value"
            )
        for item in body:
            if not (
                isinstance(item, dict)
                and set(item) == {"Attribute", "Value"}
                and isinstance(item["Attribute"], str)
            ):
                state.record(400)
                return _error(400, "MXInvalidInputException", 'Each item must be {"Attribute", "Value"}')
            if item["Attribute"] not in KNOWN_ATTRIBUTES:
                state.record(400)
                return _error(
                    400, "MXInvalidInputException", f"Attribute '{item['Attribute']}' does not exist"
                )
        if not lead_id:
            state.record(500)
            return _error(
                500, "MXMandatoryAttributeMissingException", "'leadId' is mandatory for updating lead"
            )
        with store.lock:
            lead = store.leads.get(lead_id)
            if lead is None:
                state.record(500)
                return _error(500, "MXInvalidEntityReferenceException", f"Lead '{lead_id}' does not exist")
            for item in body:
                lead[item["Attribute"]] = None if item["Value"] == "" else str(item["Value"])
        state.record(200)
        return jsonify({"Status": "Success", "Message": {"AffectedRows": 1}})

    @app.get(f"{BASE}/Leads.GetByEmailaddress")
    def by_email() -> Any:
        email = (request.args.get("emailaddress") or "").strip().lower()
        state.record(200)
        return jsonify(store.find(lambda lead: (lead.get("EmailAddress") or "").lower() == email))

    @app.get(f"{BASE}/RetrieveLeadByPhoneNumber")
    def by_phone() -> Any:
        phone = request.args.get("phone") or ""
        if not phone.isdigit():
            state.record(400)
            return _error(400, "MXInvalidInputException", "Pass digits only")

        def matches(lead: dict[str, Any]) -> bool:
            for name in ("Phone", "Mobile"):
                digits = "".join(ch for ch in (lead.get(name) or "") if ch.isdigit())
                if digits and (digits == phone or digits.endswith(phone) or phone.endswith(digits)):
                    return True
            return False

        state.record(200)
        return jsonify(store.find(matches)[:1])

    @app.get(f"{BASE}/Leads.GetById")
    def by_id() -> Any:
        lead_id = request.args.get("id") or ""
        state.record(200)
        return jsonify(store.find(lambda lead: lead["ProspectID"] == lead_id))

    @app.errorhandler(404)
    def not_found(_: Any) -> Any:
        state.record(404)
        return _error(404, "NotFound", "The API could not be found. Please check the API signature.")

    @app.errorhandler(405)
    def not_allowed(_: Any) -> Any:
        state.record(404)
        return _error(404, "NotFound", "The API could not be found. Please check the API signature.")

    return app
