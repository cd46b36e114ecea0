"""The console's blueprint and what applies to every page of it: a signed-in session (and a CSRF
token on every form) except on the sign-in page, and the security headers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, request, url_for

from service.web.console import auth

console = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
PUBLIC_ENDPOINTS = {"console.login", "console.static"}


def current_runtime() -> Any:
    return current_app.extensions["leadrelay"]


def configured_admin_token() -> str:
    return current_runtime().config["server"].get("admin_token") or ""


@console.before_request
def require_session() -> Any:
    request.console_session = None  # type: ignore[attr-defined]
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not configured_admin_token():
        abort(403, "the console is off: set server.admin_token")
    session = auth.session_of(configured_admin_token())
    if session is None:
        if request.method != "GET":
            abort(401, "sign in to the console first")
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    request.console_session = session  # type: ignore[attr-defined]
    if request.method == "POST" and not auth.csrf_valid(session, request.form.get("csrf_token")):
        abort(403, "missing or wrong CSRF token: reload the page and submit the form again")
    return None


@console.after_request
def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
