"""The Flask app factory (embedded mode: `gunicorn 'service.web.app:create_app()'`; the image runs `service.cli.serve:create_web_app()`, which wires either mode)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from service import metrics
from service.config import Config, load_config
from service.domain.state import StateUnavailable
from service.logs import configure_logging, new_request_id, request_id_var
from service.pipeline.ingest import QueueUnavailable
from service.runtime import Runtime, build_runtime
from service.sources.base import BodyUnreadable
from service.sources.json_body import decode_json
from service.web.admin import admin
from service.web.console.views import console  # from views: the blueprint with its pages on it
from service.web.health import health
from service.web.openapi import openapi
from service.web.providers import providers_api
from service.web.sources_admin import sources_admin
from service.web.webhooks import error_response, read_body, webhooks

log = logging.getLogger("leadrelay.app")

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class GuardedJSONProvider(DefaultJSONProvider):
    """Every JSON request body (admin API, dry runs) decodes through the senders' guarded decoder:
    a document nested absurdly deep is a 400, never a RecursionError (a 5xx)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return decode_json(s)


def create_app(config: Config | None = None, runtime: Runtime | None = None) -> Flask:
    config = config or load_config()
    if runtime is None:
        configure_logging(config["logging"]["level"], config["logging"]["json"])
        runtime = build_runtime(config)
    app = Flask("leadrelay")
    app.json = GuardedJSONProvider(app)
    app.config["LEADRELAY"] = config.data
    app.config["MAX_CONTENT_LENGTH"] = config["server"]["max_body_bytes"]
    app.extensions["leadrelay"] = runtime
    app.register_blueprint(health)
    app.register_blueprint(webhooks)
    app.register_blueprint(admin)
    app.register_blueprint(sources_admin)
    app.register_blueprint(providers_api)
    app.register_blueprint(openapi)
    app.register_blueprint(console)

    # One before_request function, not two: Flask checks each for a coroutine on every request.
    @app.before_request
    def before_each_request() -> Any:
        req = request._get_current_object()  # one context look-up instead of one per attribute
        # Assign the request id. The environ key is what request.headers.get("X-Request-Id")
        # reads, without the proxy.
        rid = (req.environ.get("HTTP_X_REQUEST_ID") or new_request_id())[:64]
        g.request_id = rid
        request_id_var.set(rid)
        # Read every body (cached) before a view runs, so one that cannot be read (malformed
        # chunked framing) is a 400 on every route, and a chunked body without a
        # Content-Length is still seen by the views. Webhooks read theirs inside the route,
        # which counts what it refuses per sender.
        if req.blueprint != "webhooks" and req.method in ("POST", "PUT", "PATCH"):
            try:
                read_body()
            except BodyUnreadable as exc:
                log.info("request body unreadable", extra={"detail": exc.log_detail})
                return error_response(exc.status, exc.code, exc.message)
        return None

    @app.after_request
    def echo_request_id(response: Any) -> Any:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    def count_webhook_failure(code: str) -> None:
        # Webhooks refused before their adapter ran (413 body too large, a crash) are
        # counted too; the source label only takes configured names (bounded cardinality).
        if request.endpoint == "webhooks.receive":
            source = (request.view_args or {}).get("source", "")
            source = source if source in runtime.adapters else "unknown"
            metrics.count_webhook(source, code.lower())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = "the body is larger than the limit" if status == 413 else (exc.description or exc.name)
        code = HTTP_CODES.get(status, exc.name.upper().replace(" ", "_"))
        count_webhook_failure(code)
        return error_response(status, code, message)

    @app.errorhandler(StateUnavailable)
    def state_unavailable(exc: StateUnavailable) -> Any:
        log.warning("database unavailable: %s", exc)
        response, status = error_response(503, "UNAVAILABLE", "the database cannot answer now; retry later")
        response.headers["Retry-After"] = "5"
        return response, status

    @app.errorhandler(QueueUnavailable)
    def queue_unavailable(exc: QueueUnavailable) -> Any:
        # A replay in distributed mode produces to the command topic; the broker refused it.
        log.warning("command queue unavailable: %s", exc)
        response, status = error_response(
            503, "UNAVAILABLE", "the command queue cannot take it now; retry later"
        )
        response.headers["Retry-After"] = "5"
        return response, status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        # A bug of ours, not the sender's fault and not known to be transient: log it
        # (redacted) and answer a JSON 500 without Retry-After, which would invite the sender
        # to repeat a request that may never succeed. The body names no internals.
        log.exception("unhandled error")
        count_webhook_failure("INTERNAL_ERROR")
        return error_response(500, "INTERNAL_ERROR", "unexpected error in leadrelay")

    if config.sandbox:
        log.warning("SANDBOX MODE: providers are local simulators, no real CRM is called")
    return app
