"""Console sign-in: the admin token checked once, then a signed, expiring, HttpOnly, SameSite=Strict
session cookie carrying the CSRF token every state-changing request must echo."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from flask import Response, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "leadrelay_console"
LOGIN_COOKIE = "leadrelay_console_login"  # the sign-in form's own CSRF token, before a session exists
SESSION_SECONDS = 8 * 3600
LOGIN_FORM_SECONDS = 3600
COOKIE_PATH = "/console"


def _serializer(admin_token: str, purpose: str) -> URLSafeTimedSerializer:
    # Derived from the admin token: rotating the token signs every console session out.
    secret = hmac.new(admin_token.encode(), b"leadrelay-console-v1", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(secret, salt=purpose)


def token_matches(admin_token: str, offered: str) -> bool:
    return bool(admin_token) and hmac.compare_digest(offered.strip().encode(), admin_token.encode())


def session_of(admin_token: str) -> dict[str, Any] | None:
    """The signed-in session (with its `csrf` token), or None when absent, forged or expired."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or not admin_token:
        return None
    try:
        data = _serializer(admin_token, "session").loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("csrf"), str) else None


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )


def start_session(response: Response, admin_token: str) -> None:
    data = {"csrf": secrets.token_urlsafe(24)}
    _set_cookie(response, SESSION_COOKIE, _serializer(admin_token, "session").dumps(data), SESSION_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")


def login_form_token(response: Response, admin_token: str) -> str:
    """A fresh CSRF token for the sign-in form, bound to a signed cookie."""
    token = secrets.token_urlsafe(24)
    _set_cookie(response, LOGIN_COOKIE, _serializer(admin_token, "login").dumps(token), LOGIN_FORM_SECONDS)
    return token


def login_form_token_valid(admin_token: str, offered: str) -> bool:
    raw = request.cookies.get(LOGIN_COOKIE)
    if not raw or not offered or not admin_token:
        return False
    try:
        expected = _serializer(admin_token, "login").loads(raw, max_age=LOGIN_FORM_SECONDS)
    except BadSignature:
        return False
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), offered.encode())


def csrf_valid(session: dict[str, Any], offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(session["csrf"].encode(), (offered or "").encode())
