"""LeadSquared: Update a Lead (Async), seeds 000 and 002.

`POST {async-host}/lead/update?accessKey=..&secretKey=..&leadId=..&postUpdatedLead=true` with the
`x-api-key` header and the same JSON list body as the sync API. The answer carries a
`RequestID`; the delivery waits in `polling` while `poll` asks the Update a Lead Status API
(`GET {async-host}{status_path}?RequestID=..`, `x-api-key` only) how the task ended:
`Success` -> delivered, `FAILURE` / `ERROR` -> dead-lettered with `StatusReason`,
`In-Queue` -> ask again later. The status and metrics paths are not printed in the seeds,
so they are settings (defaults inferred from the sibling Capture API).

Lead ids are resolved on the account's sync host (`lookup_base_url`), exactly as the sync
handler does: the async host has no lookup API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import requests
from marshmallow import fields, validate

from handlers.base import (
    DeliveryResult,
    Outcome,
    PermanentError,
    ProviderUpdate,
    TransientError,
    classify_exception,
)
from handlers.leadsquared.handler import LeadSquaredHandler, classify_leadsquared
from service.domain.validators import http_url

DEFAULT_UPDATE_PATH = "/lead/update"
DEFAULT_STATUS_PATH = "/lead/update/status"
DEFAULT_METRICS_PATH = "/lead/update/metrics"

TERMINAL_SUCCESS = {"success"}
TERMINAL_FAILURE = {"failure", "error"}

# The metrics API's fields -> our gauge names. One LeadSquared page spells the rate
# `ProcessingratePerMinute`; both spellings are read.
METRIC_FIELDS: dict[str, tuple[str, ...]] = {
    "pending_messages": ("PendingMessages",),
    "max_delay_seconds": ("MaxDelayInSeconds",),
    "processing_rate_per_minute": ("ProcessingRatePerMinute", "ProcessingratePerMinute"),
}


def request_id_of(body: Any) -> str | None:
    """Update answers `RequestID`; Capture's status answers `RequestId`: accept either."""
    if not isinstance(body, dict):
        return None
    for key in ("RequestID", "RequestId", "requestId"):
        if body.get(key):
            return str(body[key])
    return None


def parse_message(message: Any) -> Any:
    """`TaskStatus.Message` is the original sync answer as a JSON string (or null)."""
    if isinstance(message, str):
        try:
            return json.loads(message)
        except ValueError:
            return message
    return message


class LeadSquaredAsyncHandler(LeadSquaredHandler):
    kind: ClassVar[str] = "leadsquared_async"
    default_base_url: ClassVar[str] = "https://asyncapi.leadsquared.com"
    credential_set: ClassVar[tuple[str, ...]] = ("access_key", "secret_key", "api_key")
    settings_fields: ClassVar[dict[str, Any]] = {
        **LeadSquaredHandler.settings_fields,
        "api_key": fields.String(load_default=None, allow_none=True),  # the async `x-api-key`
        # The account's sync API host, for lead lookups (default: base_url, as in the sandbox).
        "lookup_base_url": fields.String(load_default=None, allow_none=True, validate=http_url),
        "update_path": fields.String(load_default=DEFAULT_UPDATE_PATH),
        "status_path": fields.String(load_default=DEFAULT_STATUS_PATH),
        "metrics_path": fields.String(load_default=DEFAULT_METRICS_PATH),
        "poll_interval_seconds": fields.Float(load_default=2.0, validate=validate.Range(min=0.01)),
        "poll_max_interval_seconds": fields.Float(load_default=60.0, validate=validate.Range(min=0.01)),
    }

    def __init__(
        self, name: str, settings: Mapping[str, Any], session: requests.Session | None = None
    ) -> None:
        super().__init__(name, settings, session)
        self.update_path = settings.get("update_path") or DEFAULT_UPDATE_PATH
        self.status_path = settings.get("status_path") or DEFAULT_STATUS_PATH
        self.metrics_path = settings.get("metrics_path") or DEFAULT_METRICS_PATH

    def configuration_problem(self) -> str | None:
        missing = [k for k in ("access_key", "secret_key", "api_key") if not self.settings.get(k)]
        if missing:
            return f"{self.name}: {', '.join(missing)} not configured"
        return None

    def _api_key_header(self) -> dict[str, str]:
        return {"x-api-key": self.settings["api_key"]}

    def deliver(self, update: ProviderUpdate) -> DeliveryResult:
        what = f"{self.name} lead/update (async)"
        result = self.post_update(
            update, self.base_url + self.update_path, what, headers=self._api_key_header()
        )
        if result.outcome is not Outcome.DELIVERED or result.status_code is None:
            if result.status_code == 401:
                result.reason += " / x-api-key"
            return result
        request_id = request_id_of(result.response)
        if not request_id:
            # Accepted without a handle to follow: resending blindly could apply it twice.
            return DeliveryResult(
                Outcome.PERMANENT,
                reason=f"{what}: accepted without a RequestID; cannot follow the task",
                status_code=result.status_code,
                response=result.response,
                details=result.details,
            )
        return DeliveryResult(
            Outcome.ACCEPTED,
            reason="accepted; polling the status API",
            status_code=result.status_code,
            response=result.response,
            request_id=request_id,
            details=result.details,
        )

    def poll(self, request_id: str) -> DeliveryResult:
        what = f"{self.name} lead update status"
        try:
            response = self.session.get(
                self.base_url + self.status_path,
                params={"RequestID": request_id},
                headers=self._api_key_header(),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            return classify_exception(exc, what)
        result = classify_leadsquared(response, what)
        if result.outcome is not Outcome.DELIVERED:
            if result.status_code == 404:
                result.reason += f" (check status_path {self.status_path!r})"
            return result
        body = result.response if isinstance(result.response, dict) else {}
        task = body.get("TaskStatus") if isinstance(body.get("TaskStatus"), dict) else {}
        status = str(task.get("Status") or "")
        reason = str(task.get("StatusReason") or "")
        answer = {
            "RequestID": request_id_of(body) or request_id,
            "Status": status,
            "StatusReason": reason,
            "TaskLastStep": task.get("TaskLastStep"),
            "Message": parse_message(task.get("Message")),
        }
        folded = status.strip().lower()
        if folded in TERMINAL_SUCCESS:
            return DeliveryResult(
                Outcome.DELIVERED, reason=reason, status_code=result.status_code, response=answer
            )
        if folded in TERMINAL_FAILURE:
            return DeliveryResult(
                Outcome.PERMANENT,
                reason=f"{what}: {status}: {reason or 'no reason given'}",
                status_code=result.status_code,
                response=answer,
                details={"status_reason": reason},
            )
        # In-Queue (or a step we do not know yet): not finished, ask again later (bounded).
        return DeliveryResult(
            Outcome.PENDING,
            reason=f"{what}: {status or 'no status'}",
            status_code=result.status_code,
            response=answer,
        )

    def provider_metrics(self) -> dict[str, float] | None:
        """Get Update Lead Metrics: pending messages, max delay, processing rate."""
        what = f"{self.name} lead update metrics"
        try:
            response = self.session.get(
                self.base_url + self.metrics_path, headers=self._api_key_header(), timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise TransientError(classify_exception(exc, what).reason) from None
        result = classify_leadsquared(response, what)
        if result.outcome is not Outcome.DELIVERED:
            if result.outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED):
                raise TransientError(result.reason, result.retry_after)
            raise PermanentError(result.reason, stage=result.stage)
        body = result.response if isinstance(result.response, dict) else {}
        values: dict[str, float] = {}
        for name, keys in METRIC_FIELDS.items():
            for key in keys:
                if body.get(key) is not None:
                    try:
                        values[name] = float(body[key])
                    except (TypeError, ValueError):
                        pass
                    break
        return values
