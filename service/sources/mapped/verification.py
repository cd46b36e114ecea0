"""Verification presets of a mapped sender: HMAC, basic auth, API key, URL token, Standard Webhooks, none."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.domain.validators import StringList
from service.sources.base import AuthenticationFailed, InboundRequest
from service.sources.common import (
    b64_matches,
    check_fresh,
    hex_matches,
    parse_int_header,
    require_header,
    same,
)
from service.sources.generic.adapter import verify_standard_webhook

METHODS = ("none", "hmac", "basic", "api_key", "url_token", "standard_webhooks")
DIGESTS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
# `{body}`, `{method}`, `{url}`, `{header:<name>}`: what an HMAC may be computed over.
PLACEHOLDER = re.compile(r"\{(body|method|url|header:[A-Za-z0-9_-]+)\}")


class VerifySchema(Schema):
    """`verify:` of a mapped source. Secrets are lists so one can be rotated without downtime."""

    class Meta:
        unknown = RAISE

    method = fields.String(required=True, validate=validate.OneOf(METHODS))
    secrets = StringList(load_default=list)  # hmac, standard_webhooks
    algorithm = fields.String(load_default="sha256", validate=validate.OneOf(tuple(DIGESTS)))
    header = fields.String(load_default=None, allow_none=True)  # hmac signature / api_key header
    encoding = fields.String(load_default="hex", validate=validate.OneOf(("hex", "base64")))
    prefix = fields.String(load_default="")  # e.g. "sha256=" before the digest
    message = fields.String(load_default="{body}")  # what is signed
    timestamp_header = fields.String(load_default=None, allow_none=True)
    tolerance_seconds = fields.Integer(load_default=300, validate=validate.Range(min=1))
    username = fields.String(load_default=None, allow_none=True)  # basic
    passwords = StringList(load_default=list)  # basic
    query_param = fields.String(load_default=None, allow_none=True)  # api_key in the query string
    api_keys = StringList(load_default=list)  # api_key
    tokens = StringList(load_default=list)  # url_token

    @validates_schema
    def _complete(self, data: dict[str, Any], **_: Any) -> None:
        method = data["method"]
        # Secret lists may stay empty here (they come from the environment); an empty list
        # fails closed at request time (401), as every sender's unset secret does.
        need = {"hmac": ("header",), "basic": ("username",)}.get(method, ())
        errors = {name: [f"required for method {method}"] for name in need if not data.get(name)}
        if method == "api_key" and bool(data.get("header")) == bool(data.get("query_param")):
            errors["header"] = ["api_key needs exactly one of header or query_param"]
        if method == "hmac":
            unknown = [
                p
                for p in re.findall(r"\{([^}]*)\}", data["message"])
                if not PLACEHOLDER.fullmatch("{" + p + "}")
            ]
            if unknown:
                errors["message"] = [
                    f"unknown placeholder(s) {', '.join(unknown)}; allowed: {{body}}, {{method}}, {{url}}, {{header:<name>}}"
                ]
        if errors:
            raise ValidationError(errors)


def signed_message(template: str, request: InboundRequest) -> bytes:
    """The template with its placeholders filled; the body goes in as its raw bytes."""
    out = bytearray()
    last = 0
    for match in PLACEHOLDER.finditer(template):
        out += template[last : match.start()].encode()
        name = match.group(1)
        if name == "body":
            out += request.body
        elif name == "method":
            out += request.method.encode()
        elif name == "url":
            out += request.url.encode()
        else:
            out += require_header(request, name.split(":", 1)[1]).encode()
        last = match.end()
    out += template[last:].encode()
    return bytes(out)


def _verify_hmac(settings: Mapping[str, Any], request: InboundRequest) -> None:
    given = require_header(request, settings["header"]).strip()
    prefix = settings["prefix"]
    if prefix:
        if not given.startswith(prefix):
            raise AuthenticationFailed(f"{settings['header']} does not start with {prefix!r}")
        given = given[len(prefix) :]
    if settings.get("timestamp_header"):
        sent = parse_int_header(
            require_header(request, settings["timestamp_header"]), settings["timestamp_header"]
        )
        check_fresh(sent / 1000.0 if sent > 10**11 else sent, request, settings["tolerance_seconds"])
    message = signed_message(settings["message"], request)
    digest = DIGESTS[settings["algorithm"]]
    matches = hex_matches if settings["encoding"] == "hex" else b64_matches
    # Every secret is tried (no early exit on the first mismatch's position): rotation.
    if not any([matches(hmac.new(s.encode(), message, digest).digest(), given) for s in settings["secrets"]]):
        raise AuthenticationFailed(f"{settings['header']} does not match")


def _verify_basic(settings: Mapping[str, Any], request: InboundRequest) -> None:
    scheme, _, token = (request.header("authorization") or "").partition(" ")
    if scheme.lower() != "basic" or not token:
        raise AuthenticationFailed("HTTP basic credentials are required")
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("the basic credentials are not valid base64") from None
    user_ok = same(settings["username"], user)
    password_ok = any([same(p, password) for p in settings["passwords"]])
    if not (user_ok and password_ok):
        raise AuthenticationFailed("the basic credentials do not match")


def _verify_api_key(settings: Mapping[str, Any], request: InboundRequest) -> None:
    where = settings.get("header")
    given = request.header(where) if where else request.query.get(settings["query_param"])
    if not given:
        raise AuthenticationFailed(f"missing API key ({where or settings['query_param']})")
    if not any([same(key, given) for key in settings["api_keys"]]):
        raise AuthenticationFailed("the API key does not match")


def _verify_url_token(settings: Mapping[str, Any], request: InboundRequest) -> None:
    given = request.path_params.get("token") or ""
    if not given:
        raise AuthenticationFailed(
            "this source needs its secret token in the URL: /webhooks/<source>/<token>"
        )
    if not any([same(token, given) for token in settings["tokens"]]):
        raise AuthenticationFailed("the URL token does not match")


def verify_request(settings: Mapping[str, Any], request: InboundRequest) -> None:
    """Raise AuthenticationFailed unless the request passes the configured preset."""
    method = settings["method"]
    if method == "none":
        return
    secrets = {"hmac": "secrets", "standard_webhooks": "secrets", "basic": "passwords", "api_key": "api_keys",
               "url_token": "tokens"}[method]  # fmt: skip
    if not settings.get(secrets):
        raise AuthenticationFailed(f"no verify.{secrets} is configured for this source")
    if method == "standard_webhooks":
        verify_standard_webhook(request, list(settings["secrets"]))
        return
    {
        "hmac": _verify_hmac,
        "basic": _verify_basic,
        "api_key": _verify_api_key,
        "url_token": _verify_url_token,
    }[method](settings, request)
