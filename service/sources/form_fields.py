"""Matching a web form's free-text field names to the sender's field map, as site builders
name them: the exact name first, then the name normalised (case, spaces, punctuation and
digits ignored, so Webflow's `Email 2` is `email`), and, for the email only, the value's
shape (an email-shaped value in a field nothing mapped). Every match that was not exact is
reported (canonical field -> form field), so the webhook's answer can say which was used."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Shape only (one @, a dot in the domain, no spaces); identity_from validates it properly.
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def normalised_name(name: str) -> str:
    """`Email 2`, `e-mail`, `EMAIL_ADDRESS ` -> `email`, `email`, `emailaddress`."""
    return "".join(char for char in name.casefold() if char.isalpha())


@dataclass
class FormMatch:
    values: dict[str, Any] = field(default_factory=dict)  # keyed by field-map source names
    by_shape: dict[str, Any] = field(default_factory=dict)  # canonical field -> value
    inferred: dict[str, str] = field(default_factory=dict)  # canonical field -> form field


def match_form_fields(data: Mapping[str, Any], field_map: Mapping[str, str]) -> FormMatch:
    match = FormMatch()
    filled: set[str] = set()  # canonical fields already fed
    used: set[str] = set()  # form fields already read
    for name, value in data.items():
        if name in field_map:
            match.values[name] = value
            filled.add(field_map[name])
            used.add(name)
    by_normalised: dict[str, str] = {}
    for source in field_map:
        by_normalised.setdefault(normalised_name(source), source)
    for name, value in data.items():
        source = by_normalised.get(normalised_name(name)) if name not in used else None
        if source is None or field_map[source] in filled:
            continue
        match.values[source] = value
        filled.add(field_map[source])
        used.add(name)
        match.inferred[field_map[source]] = name
    if "email" not in filled:
        for name, value in data.items():
            if name not in used and isinstance(value, str) and EMAIL_SHAPE.fullmatch(value.strip()):
                match.by_shape["email"] = value.strip()
                match.inferred["email"] = name
                break
    return match
