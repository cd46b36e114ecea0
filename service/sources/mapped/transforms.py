"""The documented per-field transforms of a mapped sender (trim, lower, split_name, to_number, date)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.sources.common import to_number

Transform = Callable[[Any], Any]

# `date` formats besides a strptime pattern.
DATE_FORMATS = ("iso8601", "unix", "unix_ms")


class TransformError(ValueError):
    """A value the transform cannot convert; reported per field as a 400."""


def _trim(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def to_finite_number(value: Any) -> Any:
    """A number (`"1,200"` -> 1200); anything else, NaN and infinities included, is a TransformError."""
    number = to_number(value)
    if (number is None and value not in (None, "")) or (number is not None and not math.isfinite(number)):
        raise TransformError(f"{str(value)[:40]!r} is not a number")
    return number


def _name_part(part: str) -> Transform:
    """`split_name:first` is the first word, `split_name:last` every word after it."""

    def split(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        words = value.split()
        if part == "first":
            return words[0] if words else None
        return " ".join(words[1:]) or None

    return split


def parse_date(value: Any, fmt: str = "iso8601") -> datetime | None:
    """A sender's timestamp as an aware datetime (UTC when the text names no zone)."""
    if value is None or value == "":
        return None
    try:
        if fmt in ("unix", "unix_ms"):
            seconds = float(value) / (1000.0 if fmt == "unix_ms" else 1.0)
            return datetime.fromtimestamp(seconds, UTC)
        text = str(value).strip()
        if fmt == "iso8601":
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        else:
            parsed = datetime.strptime(text, fmt)
    except (TypeError, ValueError, OverflowError, OSError):
        raise TransformError(f"{str(value)[:40]!r} is not a date in the format {fmt!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date(fmt: str) -> Transform:
    def convert(value: Any) -> Any:
        parsed = parse_date(value, fmt)
        return parsed.isoformat() if parsed else None

    return convert


def build_transform(spec: str) -> Transform:
    """One transform from its config name; ValueError names what is allowed."""
    name, _, arg = spec.partition(":")
    if name in ("trim", "lower", "to_number") and not arg:
        return {"trim": _trim, "lower": _lower, "to_number": to_finite_number}[name]
    if name == "split_name" and arg in ("first", "last"):
        return _name_part(arg)
    if name == "date":
        fmt = arg or "iso8601"
        if fmt not in DATE_FORMATS and "%" not in fmt:
            raise ValueError(f"date format {fmt!r}: use iso8601, unix, unix_ms or a strptime pattern")
        return _date(fmt)
    raise ValueError(
        f"unknown transform {spec!r}; allowed: trim, lower, to_number, split_name:first,"
        " split_name:last, date[:iso8601|unix|unix_ms|<strptime pattern>]"
    )
