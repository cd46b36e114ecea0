"""Keep secrets out of logs, errors and stored events.

Two nets: every configured secret value is registered at config load and replaced
wherever it appears; and well-known carriers (LeadSquared's `accessKey`/`secretKey` query
parameters, `Authorization`, `x-api-key`) are masked even when the value is unknown.
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "***"

_SECRET_QUERY = re.compile(
    r"(?i)((?:access_?key|secret_?key|api_?key|token|access_token|password|secret|hapikey|google_key)=)[^&\s\"']+"
)
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_SECRET_HEADER = re.compile(
    r"(?i)((?:x-api-key|x-lsq-accesskey|x-lsq-secretkey)[\"']?\s*[:=]\s*[\"']?)[^\"',\s}]+"
)
SECRET_KEY_NAMES = re.compile(
    r"(?i)(secret|token|password|access_?key|api_?key|authorization|verify_token|google_key|signing_key)"
)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: Any) -> None:
    """Remember a secret value so `redact` replaces it anywhere it appears."""
    global _pattern
    if not isinstance(value, str) or len(value) < 4:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _SECRET_QUERY.sub(rf"\1{MASK}", text)
    text = _AUTH_HEADER.sub(rf"\1 {MASK}", text)
    return _SECRET_HEADER.sub(rf"\1{MASK}", text)


def redact_obj(value: Any) -> Any:
    """Redact every string inside a JSON-like value; mask values under secret-looking keys."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: (
                MASK
                if isinstance(k, str) and SECRET_KEY_NAMES.search(k) and isinstance(v, str)
                else redact_obj(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value


def register_secrets_in(config: Any) -> None:
    """Walk a config tree and register the value of every secret-looking key."""
    if isinstance(config, dict):
        for key, value in config.items():
            if isinstance(key, str) and SECRET_KEY_NAMES.search(key):
                if isinstance(value, list):
                    for item in value:
                        register_secret(item)
                else:
                    register_secret(value)
            register_secrets_in(value)
    elif isinstance(config, list):
        for item in config:
            register_secrets_in(item)
