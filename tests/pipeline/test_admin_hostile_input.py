"""The admin API, dry runs and the console answer hostile bodies with a 4xx, never a 5xx; a
chunked body (no Content-Length) is read like any other, so a bulk replay's filter is never lost."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.support import ADMIN_TOKEN, post_generic

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
ROUTES = [
    "/v1/events/replay",
    "/v1/sources/generic/try",
    "/v1/providers/leadsquared/pause",
    "/console/login",
]
DEEP = b"[" * 50_000 + b"]" * 50_000


def raw_post(url: str, path: str, body: bytes, chunk_size: str) -> int:
    """A POST with hand-written chunked framing (`chunk_size` may be malformed); the status code."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            f"{chunk_size}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        answer = b""
        while b"\r\n" not in answer:
            piece = conn.recv(4096)
            if not piece:
                break
            answer += piece
    return int(answer.split(b" ", 2)[1])


def test_deep_or_broken_json_is_never_a_5xx_and_a_4xx_where_a_body_is_read(service: Any) -> None:
    reads_json = {"/v1/events/replay", "/v1/sources/generic/try", "/console/login"}
    for path in ROUTES:
        for body in (DEEP, b"\xff\xfe", b'{"a":', b'"x"', b'{"dry_run": {"a": 1}}'):
            answer = requests.post(service.url + path, data=body, headers=AUTH, timeout=10)
            assert answer.status_code < 500, (path, body[:10], answer.status_code, answer.text[:200])
            if path in reads_json:  # (pause takes no body: it ignores one)
                assert answer.status_code >= 400, (path, body[:10], answer.status_code, answer.text[:200])


def test_malformed_chunked_framing_is_a_400_on_every_admin_route(service: Any) -> None:
    for path in ROUTES:
        assert raw_post(service.url, path, b"{}", "zz") == 400, path


def test_a_chunked_bulk_replay_keeps_its_filter(service: Any) -> None:
    for n in (1, 2):  # unknown leads: dead-lettered at the look-up
        post_generic(
            service.url, {"lead": {"email": f"ghost{n}@example.com"}, "changes": {"city": "X"}}, f"h{n}"
        )
    service.drain()
    body = json.dumps({"lead": "ghost1@example.com", "dry_run": True}).encode()
    assert raw_post(service.url, "/v1/events/replay", body, format(len(body), "x")) == 200
    dry = requests.post(service.url + "/v1/events/replay", data=body, headers=AUTH, timeout=10).json()
    assert dry["events"] == 1  # the filter applied: one of the two dead letters
