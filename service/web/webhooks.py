"""`POST /webhooks/<source>` (and `GET` for handshakes such as Meta's): one route for every
sender. The adapter verifies, validates and normalises; the ingestor dedups and queues."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from service import metrics
from service.domain.dedup import DedupUnavailable
from service.domain.state import StateUnavailable
from service.pipeline.ingest import IngestResult, QueueUnavailable
from service.runtime import Runtime
from service.sources.base import AdapterError, BodyUnreadable, InboundRequest, SourceAdapter

log = logging.getLogger("leadrelay.webhooks")
webhooks = Blueprint("webhooks", __name__)


# What `jsonify` writes outside debug mode (Flask's DefaultJSONProvider: sorted keys, ASCII,
# compact, its `default` for dates and dataclasses), with one encoder built once: jsonify
# builds an encoder and goes through the provider on every call (~3 us of every webhook).
_ENCODER = json.JSONEncoder(
    sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=DefaultJSONProvider.default
)


def json_response(body: Any, status: int = 200) -> tuple[Response, int]:
    """`jsonify(body), status` in the same bytes and content type, built more cheaply."""
    if current_app.debug:
        return jsonify(body), status  # indented, as jsonify does in debug mode
    return Response(_ENCODER.encode(body) + "\n", status, content_type="application/json"), status


def error_response(status: int, code: str, message: str, details: Any = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message, "code": code}
    if details:
        body["details"] = details
    return json_response(body, status)


def read_body() -> bytes:
    """The raw body. A body that cannot be read is the sender's fault: 400, whatever the server
    under us raises for it (werkzeug: OSError "Invalid chunk header"; gunicorn: its
    InvalidChunkSize/ChunkMissingTerminator parse errors, NoMoreData)."""
    try:
        return request.get_data(cache=True)
    except HTTPException:
        raise  # 413 and werkzeug's ClientDisconnected (400) already say what happened
    except Exception as exc:  # noqa: BLE001 - the transport's own exception types vary
        raise BodyUnreadable(
            "the request body could not be read (malformed chunked framing or a truncated body)",
            log_detail=f"{type(exc).__name__}: {exc}",
        ) from None


_BODY_HEADERS = {"CONTENT_TYPE", "CONTENT_LENGTH"}


class EnvironHeaderView(Mapping[str, str]):
    """The request's headers by lower-cased name, read from the WSGI environ on demand.

    Adapters look up two or three headers; copying every header into a dict first cost more
    than the look-ups. Answers exactly what `{k.lower(): v for k, v in request.headers.items()}`
    held: no name with "_" (werkzeug lists HTTP_X_Y as x-y), an empty Content-Type or
    Content-Length counts as absent, a client's own HTTP_CONTENT_TYPE is ignored."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        if "_" in name:
            return default
        key = name.upper().replace("-", "_")
        if key in _BODY_HEADERS:
            return self._environ.get(key) or default
        value = self._environ.get("HTTP_" + key)
        return default if value is None else value

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                yield key[5:].replace("_", "-").lower()
            elif key in _BODY_HEADERS and value:
                yield key.replace("_", "-").lower()

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"EnvironHeaderView({dict(self)!r})"


def inbound_request(
    source: str, path_params: dict[str, str] | None = None, with_url: bool = True
) -> InboundRequest:
    """`with_url`: build the public URL (only adapters that sign it need it)."""
    url = ""
    if with_url:
        public_base = current_app.config["LEADRELAY"]["server"].get("public_base_url")
        url = (public_base.rstrip("/") + request.full_path.rstrip("?")) if public_base else request.url
    environ = request.environ
    return InboundRequest(
        source=source,
        body=read_body(),
        headers=EnvironHeaderView(environ),
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        url=url,
        # Most senders send no query string: no MultiDict parsed for them.
        query=request.args.to_dict() if environ.get("QUERY_STRING") else {},
        path_params=path_params or {},
        content_type=environ.get("CONTENT_TYPE") or "",
        received_at=time.time(),
        transport="http",
    )


def _runtime() -> Runtime:
    return current_app.extensions["leadrelay"]


@webhooks.route("/webhooks/<source>", methods=["POST"])
@webhooks.route("/webhooks/<source>/<token>", methods=["POST"])
def receive(source: str, token: str | None = None) -> Any:
    runtime = _runtime()
    adapter = runtime.adapters.get(source)
    if adapter is None:
        metrics.count_webhook("unknown", "unknown_source")
        return error_response(404, "UNKNOWN_SOURCE", f"no source named {source!r} is configured")
    response, status = handle(runtime, adapter, source, {"token": token} if token else None)
    if type(adapter).answer is SourceAdapter.answer:
        return response, status  # leadrelay's own JSON answer (most senders): nothing to re-render
    rendered = adapter.answer(status, response.get_json(silent=True) or {})
    if rendered is not None:
        # The sender's own answer format (SOAP, a configured body); headers such as Retry-After stay.
        status, body, content_type = rendered
        response.set_data(body)
        response.content_type = content_type
    return response, status


def handle(
    runtime: Runtime, adapter: SourceAdapter, source: str, path_params: dict[str, str] | None
) -> tuple[Response, int]:
    try:
        inbound = inbound_request(source, path_params, with_url=adapter.signs_url)
        adapter.verify(inbound)
        payload = adapter.parse(inbound)
        normalised = adapter.normalise(payload, inbound)
        runtime.ingestor.refuse_unconvertible(normalised.commands)
    except AdapterError as exc:
        metrics.count_webhook(source, exc.code.lower())
        log.info(
            "webhook rejected: %s",
            exc.message,
            extra={"source": source, "status": exc.status, "detail": exc.log_detail},
        )
        response, status = error_response(exc.status, exc.code, exc.message, exc.details)
        if status == 503:
            # A look-up the adapter needs failed; nothing was acknowledged, the sender retries.
            response.headers["Retry-After"] = "30"
        return response, status
    for event_type in normalised.ignored:
        metrics.EVENTS_IGNORED.labels(source=source, event_type=event_type).inc()
    if normalised.skipped_mappings:
        metrics.MAPPINGS_SKIPPED.labels(source=source).inc(normalised.skipped_mappings)
    if not normalised.commands:
        metrics.count_webhook(source, "ignored")
        return json_response({"status": "ignored", "ignored": normalised.ignored}, 200)

    results: list[IngestResult] = []
    try:
        # One command: the access-log line names it (X-Command-Id), so its "command queued"
        # line is DEBUG; a second INFO line per accept cost about a fifth of ingest under load.
        # Several (a batch sender): each keeps its INFO line, linking it to the request id.
        level = logging.DEBUG if len(normalised.commands) == 1 else logging.INFO
        for command in normalised.commands:
            results.append(runtime.ingestor.accept(command, log_level=level))
    except (QueueUnavailable, DedupUnavailable, StateUnavailable) as exc:
        metrics.count_webhook(source, "unavailable")
        log.warning("cannot accept work now: %s", exc, extra={"source": source})
        response, status = error_response(
            503, "UNAVAILABLE", "leadrelay cannot take events right now; retry later"
        )
        response.headers["Retry-After"] = "5"
        return response, status
    # Fields inferred rather than mapped by name: the answer says which sender field was used.
    return ingest_response(source, results, {"matched_fields": normalised.matched_fields})


def ingest_response(
    source: str, results: list[IngestResult], extra: dict[str, Any] | None = None
) -> tuple[Response, int]:
    statuses = {r.status for r in results}
    # A 2xx must mean every command is durably queued: one still being accepted by a concurrent
    # request (which may yet fail) makes the whole answer a retry; the others dedup on it.
    if "in_progress" in statuses:
        metrics.count_webhook(source, "in_progress")
        response, status = error_response(
            503, "IN_PROGRESS", "this event is being accepted by another request; retry later"
        )
        response.headers["Retry-After"] = "2"
        return response, status
    outcome = "accepted" if "accepted" in statuses else "duplicate"
    metrics.count_webhook(source, outcome)
    body: dict[str, Any] = {"status": outcome}
    command_header = None
    if len(results) == 1:
        body["command_id"] = command_header = results[0].command_id
        if results[0].duplicate_of:
            body["duplicate_of"] = results[0].duplicate_of
    else:
        body["command_ids"] = [r.command_id for r in results]
        body["results"] = [
            {"command_id": r.command_id, "status": r.status}
            | ({"duplicate_of": r.duplicate_of} if r.duplicate_of else {})
            for r in results
        ]
    body.update({key: value for key, value in (extra or {}).items() if value})
    response, status = json_response(body, 202 if outcome == "accepted" else 200)
    if command_header:
        response.headers["X-Command-Id"] = command_header  # for the access log and the sender
    return response, status


@webhooks.route("/webhooks/<source>", methods=["GET"])
def handshake(source: str) -> Any:
    adapter = _runtime().adapters.get(source)
    if adapter is None:
        return error_response(404, "UNKNOWN_SOURCE", f"no source named {source!r} is configured")
    try:
        answer = adapter.handle_get(inbound_request(source))
    except AdapterError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    if answer is None:
        return error_response(405, "METHOD_NOT_ALLOWED", "this source accepts POST only")
    status, text = answer
    return Response(text, status=status, mimetype="text/plain")
