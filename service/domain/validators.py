"""Config value types and validators every layer declares (http(s) URLs, secrets, string lists), and marshmallow error flattening."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields

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


class StringList(fields.List):
    """A list of strings that also accepts a comma-separated string (handy in env vars)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.String(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        return super()._deserialize(value, attr, data, **kwargs)


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error messages -> {"lead.email": ["Not a valid email address."]}:
    the one flattening, for 400 answers and config errors alike."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            for name, texts in flatten_messages(value, f"{prefix}.{key}" if prefix else str(key)).items():
                out.setdefault(name, []).extend(texts)
    elif isinstance(messages, list) and not all(isinstance(m, str) for m in messages):
        for item in messages:
            for name, texts in flatten_messages(item, prefix).items():
                out.setdefault(name, []).extend(texts)
    else:
        out[prefix or "_schema"] = [str(m) for m in (messages if isinstance(messages, list) else [messages])]
    return out
