"""Decoding an untrusted JSON document: UTF-8, a nesting-depth limit checked on the raw
bytes before the parser runs, then `json.loads`. Every JSON sender decodes through here
(`InboundRequest.json`, Unbounce's `data.json` form field).

Why a scan first: Python's JSON parser and everything that walks the result recurse once
per nesting level, so a small body nested tens of thousands of levels deep raises
RecursionError (a 5xx) wherever it is touched. The scan is linear, allocates nothing per
level and skips string contents, so a bracket inside a string never counts.
"""

from __future__ import annotations

import json
import re
from typing import Any

# No vendor payload we know nests deeper than 10 levels; 64 leaves room and stays far below
# the interpreter's recursion limit for everything that walks the decoded value.
MAX_JSON_DEPTH = 64

# A JSON string once its escaped backslashes and quotes are gone. The closing quote is
# optional so an unterminated string runs to the end in one match (linear time).
_STRING = re.compile(rb'"[^"]*"?')
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_OPENERS = frozenset(b"[{")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonRefused(ValueError):
    """Well-formed JSON we do not take (the sender's fault: 400): nested deeper than
    MAX_JSON_DEPTH, or a string with an unpaired surrogate escape such as "\\ud800",
    which is no Unicode character and cannot be stored or sent anywhere as UTF-8."""


class NotUtf8(ValueError):
    """The bytes are not UTF-8; RFC 8259 requires JSON exchanged between systems to be (415)."""


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when brackets outside strings nest deeper than `limit`."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot nest deeper than the number of openers
    # All at C speed: escapes out (a backslash is legal only inside a string, so before the
    # first one outside a string this lexes exactly as JSON does), strings out, everything
    # but brackets out; then one pass over the brackets.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRING.sub(b"", unescaped).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False


def decode_json(body: bytes | str, *, big_ints_as_str: bool = False) -> Any:
    """The decoded document. Raises JsonRefused, NotUtf8 or ValueError (not JSON).

    `big_ints_as_str`: every integer stays its exact decimal text (ids beyond 2^53)."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if json_depth_exceeds(raw):
        raise JsonRefused(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = raw.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise NotUtf8("the body is not UTF-8 (JSON must be UTF-8, RFC 8259)") from None
    try:
        value = json.loads(text, parse_int=str) if big_ints_as_str else json.loads(text)
    except RecursionError:
        # Unreachable below the depth limit; kept so it can never become a 5xx.
        raise JsonRefused(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _SURROGATE_ESCAPE.search(raw):
        # Paired escapes decode to one character; an unpaired one survives as a lone
        # surrogate, which the UTF-8 encoder refuses: find it once, here.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonRefused("the JSON has an unpaired surrogate escape (\\ud800-\\udfff)") from None
    return value
