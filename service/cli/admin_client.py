"""The CLI's client of the admin API: base URL and token, and one call that exits on an error answer."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import requests

from service.cli.common import SANDBOX_ADMIN_TOKEN, load_config_or_exit


def admin_endpoint(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    config = load_config_or_exit(args)
    url = args.url or f"http://{config['server']['bind']}"
    token = args.token or os.environ.get("LEADRELAY_ADMIN_TOKEN") or config["server"].get("admin_token")
    if not token and config["sandbox"] != "off":
        token = SANDBOX_ADMIN_TOKEN
    if not token:
        print("leadrelay: set --token or LEADRELAY_ADMIN_TOKEN", file=sys.stderr)
        raise SystemExit(2)
    return url.rstrip("/"), {"Authorization": f"Bearer {token}"}


def call_admin(method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
    try:
        response = requests.request(method, url, headers=headers, timeout=10, **kwargs)
    except requests.RequestException as exc:
        print(f"leadrelay: cannot reach {url.split('?')[0]}: {type(exc).__name__}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    if response.status_code >= 400:
        print(json.dumps(body, indent=2), file=sys.stderr)
        raise SystemExit(1)
    return body


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="leadrelay base URL (default: http://<server.bind>)")
    parser.add_argument("--token", help="admin token (default: $LEADRELAY_ADMIN_TOKEN or server.admin_token)")
