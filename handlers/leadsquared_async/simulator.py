"""LeadSquared's Async API, added to the LeadSquared simulator (seeds 000 and 002).

- `POST /lead/update?accessKey&secretKey&leadId[&postUpdatedLead]` + `x-api-key`: a JSON list
  of `{"Attribute", "Value"}`; answers `{"Status": "Request accepted...", "RequestID"}`.
- `GET /lead/update/status?RequestID=` + `x-api-key`: the task, `In-Queue` until it has
  been processed, then `Success` (with `Message`, the sync answer as a JSON string) or
  `FAILURE` (unknown lead, unknown attribute) with `StatusReason`.
- `GET /lead/update/metrics` + `x-api-key`: PendingMessages, MaxDelayInSeconds, ProcessingRatePerMinute.

A task is processed once `process_seconds` have passed *and* it has been polled
`in_queue_polls` times. `POST /_sim/async` changes that: `{"defaults": {...}}` for every new
task, `{"scripts": [{...}, ...]}` for the next tasks one each; keys `process_seconds`,
`in_queue_polls`, `status` / `reason` (force the end state and its spelling),
`request_id_key` (`RequestID` or `RequestId`), and in defaults `rate_key` (the metrics
spelling of ProcessingRatePerMinute).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from handlers.simulation import SimulatorState

ASYNC_UPDATE_PATH = "/lead/update"
ASYNC_STATUS_PATH = "/lead/update/status"
ASYNC_METRICS_PATH = "/lead/update/metrics"


@dataclass
class AsyncTask:
    request_id: str
    lead_id: str
    body: list[dict[str, Any]]
    created: float
    ready_at: float
    in_queue_polls: int
    forced_status: str | None = None
    forced_reason: str | None = None
    polls: int = 0
    status: str = "In-Queue"
    reason: str = "Request is in queue"
    message: str | None = None
    finished_at: float | None = None


@dataclass
class AsyncQueue:
    tasks: dict[str, AsyncTask] = field(default_factory=dict)
    defaults: dict[str, Any] = field(
        default_factory=lambda: {"process_seconds": 0.2, "in_queue_polls": 0, "request_id_key": "RequestID"}
    )
    scripts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.tasks.clear()
            self.scripts.clear()
            self.defaults = AsyncQueue().defaults


def _error(status: int, exception_type: str, message: str) -> tuple[Response, int]:
    return jsonify({"Status": "Error", "ExceptionType": exception_type, "ExceptionMessage": message}), status


def add_async_routes(
    app: Flask,
    state: SimulatorState,
    store: Any,
    known_attributes: set[str],
    credentials: tuple[str, str],
    api_key: str,
) -> AsyncQueue:
    queue = AsyncQueue()
    app.extensions["sim_async"] = queue

    def process(task: AsyncTask, now: float) -> None:
        """Apply the update the way the sync API would, or fail it the way LeadSquared does."""
        if task.forced_status:
            task.status = task.forced_status
            task.reason = task.forced_reason or (
                "Request was successfully completed"
                if task.forced_status.lower() == "success"
                else "MXSimulatedException: forced failure"
            )
            if task.status.lower() == "success":
                task.message = json.dumps({"Status": "Success", "Message": {"AffectedRows": 1}})
        else:
            unknown = [item["Attribute"] for item in task.body if item["Attribute"] not in known_attributes]
            with store.lock:
                lead = store.leads.get(task.lead_id)
                if lead is None:
                    task.status = "FAILURE"
                    task.reason = f"MXInvalidEntityReferenceException: Lead '{task.lead_id}' does not exist"
                elif unknown:
                    task.status = "FAILURE"
                    task.reason = f"MXInvalidInputException: Attribute '{unknown[0]}' does not exist"
                else:
                    for item in task.body:
                        lead[item["Attribute"]] = None if item["Value"] == "" else str(item["Value"])
                    task.status = "Success"
                    task.reason = "Request was successfully completed"
                    task.message = json.dumps({"Status": "Success", "Message": {"AffectedRows": 1}})
        task.finished_at = now

    def settle(task: AsyncTask, now: float, polled: bool) -> None:
        if task.finished_at is not None:
            return
        if polled and task.polls < task.in_queue_polls:
            task.polls += 1
            return
        if now >= task.ready_at and task.polls >= task.in_queue_polls:
            process(task, now)

    def api_key_ok() -> bool:
        return request.headers.get("x-api-key") == api_key

    @app.post("/_sim/async")
    def sim_async() -> Response:
        spec = request.get_json(force=True)
        with queue.lock:
            queue.defaults.update(spec.get("defaults") or {})
            queue.scripts.extend(spec.get("scripts") or [])
        return jsonify({"ok": True})

    @app.post(ASYNC_UPDATE_PATH)
    def async_update() -> Any:
        if not api_key_ok():
            state.record(401)
            return _error(401, "MXUnAuthorizedAccessException", "Missing or invalid x-api-key")
        if (request.args.get("accessKey"), request.args.get("secretKey")) != credentials:
            state.record(401)
            return _error(401, "MXUnAuthorizedAccessException", "Invalid AccessKey or SecretKey")
        body = request.get_json(silent=True)
        if request.mimetype != "application/json" or not isinstance(body, list) or not body:
            state.record(400)
            return _error(400, "MXInvalidInputException", "The body must be a JSON array of Attribute/Value")
        for item in body:
            if not (
                isinstance(item, dict)
                and set(item) == {"Attribute", "Value"}
                and isinstance(item["Attribute"], str)
            ):
                state.record(400)
                return _error(400, "MXInvalidInputException", 'Each item must be {"Attribute", "Value"}')
        lead_id = request.args.get("leadId")
        if not lead_id:
            state.record(400)
            return _error(400, "MXMandatoryAttributeMissingException", "'leadId' is mandatory")
        now = time.time()
        with queue.lock:
            script = {**queue.defaults, **(queue.scripts.pop(0) if queue.scripts else {})}
            task = AsyncTask(
                request_id=str(uuid.uuid4()),
                lead_id=lead_id,
                body=body,
                created=now,
                ready_at=now + float(script.get("process_seconds", 0)),
                in_queue_polls=int(script.get("in_queue_polls", 0)),
                forced_status=script.get("status"),
                forced_reason=script.get("reason"),
            )
            queue.tasks[task.request_id] = task
            id_key = str(script.get("request_id_key") or "RequestID")
        state.record(200)
        return jsonify(
            {
                "Status": "Request accepted. Please use below request id to check the status",
                id_key: task.request_id,
            }
        )

    @app.get(ASYNC_STATUS_PATH)
    def async_status() -> Any:
        if not api_key_ok():
            state.record(401)
            return _error(401, "MXUnAuthorizedAccessException", "Missing or invalid x-api-key")
        request_id = request.args.get("RequestID") or ""
        now = time.time()
        with queue.lock:
            task = queue.tasks.get(request_id)
            if task is None:
                state.record(400)
                return _error(400, "MXInvalidInputException", f"RequestID '{request_id}' not found")
            settle(task, now, polled=True)
            answer = {
                "RequestID": task.request_id,
                "TaskStatus": {
                    "TaskType": "Lead Update",
                    "Status": task.status,
                    "StatusReason": task.reason,
                    "TaskCurrentStep": None if task.finished_at else "In-Queue",
                    "TaskLastStep": "In-Process-Queue" if task.finished_at else None,
                    "RequestBody": json.dumps(task.body),
                    "Message": task.message,
                },
            }
        state.record(200)
        return jsonify(answer)

    @app.get(ASYNC_METRICS_PATH)
    def async_metrics() -> Any:
        if not api_key_ok():
            state.record(401)
            return _error(401, "MXUnAuthorizedAccessException", "Missing or invalid x-api-key")
        now = time.time()
        with queue.lock:
            for task in queue.tasks.values():
                settle(task, now, polled=False)
            waiting = [t for t in queue.tasks.values() if t.finished_at is None]
            done_last_minute = [t for t in queue.tasks.values() if t.finished_at and t.finished_at > now - 60]
            rate_key = str(queue.defaults.get("rate_key") or "ProcessingRatePerMinute")
        state.record(200)
        return jsonify(
            {
                "PendingMessages": len(waiting),
                "MaxDelayInSeconds": int(max((now - t.created for t in waiting), default=0)),
                rate_key: float(len(done_last_minute)),
            }
        )

    return queue
