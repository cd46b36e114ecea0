"""Validators for configuration values that every layer declares: http(s) URLs and secrets."""

from __future__ import annotations

from urllib.parse import urlsplit

from marshmallow import ValidationError

# A secret shorter than this is refused at start-up: it is guessable, and a value that short
# would mask innocent text wherever redaction replaces it.
MIN_SECRET_LENGTH = 8
# The admin token guards the event log and replay; 16 characters of a random token (the
# docs suggest `openssl rand -hex 16`, 32) put guessing out of reach.
MIN_ADMIN_TOKEN_LENGTH = 16


def http_url(value: str | None) -> None:
    """An absolute http:// or https:// URL with a host (None: not set)."""
    if value is None:
        return
    text = str(value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ValidationError(f"{text!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
        raise ValidationError(f"{text!r} is not an http:// or https:// URL with a host")
