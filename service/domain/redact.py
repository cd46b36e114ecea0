"""Keep secrets out of logs, errors and stored events.

Two nets: every configured secret value is registered at config load and replaced
wherever it appears; and well-known carriers (LeadSquared's `accessKey`/`secretKey` query
parameters, `Authorization`, `x-api-key`, signing secrets) are masked even when the value
is unknown. Data whose key merely contains a secret-sounding word (Typeform's
`response_token`, a `token` field) is data, and stays.
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
# What every _AUTH_HEADER match contains, under the same flags: searched first because it is
# several times cheaper than the full pattern, and log lines rarely contain either word.
_AUTH_SCHEME = re.compile(r"(?i)b(?:earer|asic)")
_SECRET_HEADER = re.compile(
    r"(?i)((?:x-api-key|x-lsq-accesskey|x-lsq-secretkey)[\"']?\s*[:=]\s*[\"']?)[^\"',\s}]+"
)
# Config keys (ours) whose values are secrets: matched anywhere in the key name.
SECRET_KEY_NAMES = re.compile(
    r"(?i)(secret|token|password|access_?key|api_?key|authorization|verify_token|google_key|signing_key)"
)
# Config sections that map names to names (`field_map: {response_token: note}`): no secrets.
MAPPING_SECTIONS = frozenset({"field_map", "status_map", "stage_map"})
# Keys that carry a credential wherever they appear in a JSON document (provider answers,
# stored commands), compared without case, `-` or `_`: exact names, not substrings.
CREDENTIAL_KEYS = frozenset(
    {
        "accesskey", "secretkey", "apikey", "xapikey", "xlsqaccesskey", "xlsqsecretkey",
        "authorization", "proxyauthorization", "password", "clientsecret", "accesstoken",
        "refreshtoken", "hapikey", "googlekey", "signingkey", "signingsecret", "secret",
        "secrets", "verifytoken", "urltoken", "appsecret",
    }
)  # fmt: skip

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: Any) -> None:
    """Remember a secret value so `redact` replaces it anywhere it appears."""
    global _pattern
    # Every non-empty value: config validation refuses secrets shorter than
    # MIN_SECRET_LENGTH, so nothing registered is short enough to mask innocent text.
    if not isinstance(value, str) or not value:
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
    # Every log line goes through here (two per accepted webhook): the full patterns run only
    # where a match is possible; _SECRET_QUERY alone cost about 20 us per line.
    if "=" in text:  # a query-style secret is always `name=value`
        text = _SECRET_QUERY.sub(rf"\1{MASK}", text)
    if _AUTH_SCHEME.search(text):
        text = _AUTH_HEADER.sub(rf"\1 {MASK}", text)
    return _SECRET_HEADER.sub(rf"\1{MASK}", text)


def is_credential_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "").replace("_", "") in CREDENTIAL_KEYS


def redact_obj(value: Any) -> Any:
    """Redact every string inside a JSON-like value; mask values under credential keys."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: MASK if is_credential_key(k) and isinstance(v, str) else redact_obj(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value


def secret_settings(config: Any, path: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every secret in a config tree: string values under a
    secret-looking key, outside the name-to-name mapping sections."""
    found: list[tuple[str, str]] = []
    if isinstance(config, dict):
        for key, value in config.items():
            name = f"{path}.{key}" if path else str(key)
            if key in MAPPING_SECTIONS:
                continue
            if isinstance(key, str) and SECRET_KEY_NAMES.search(key):
                values = value if isinstance(value, list) else [value]
                found.extend((name, item) for item in values if isinstance(item, str) and item)
            found.extend(secret_settings(value, name))
    elif isinstance(config, list):
        for index, item in enumerate(config):
            found.extend(secret_settings(item, f"{path}.{index}"))
    return found


def register_secrets_in(config: Any) -> None:
    """Register the value of every secret in a config tree (see `secret_settings`)."""
    for _, value in secret_settings(config):
        register_secret(value)
