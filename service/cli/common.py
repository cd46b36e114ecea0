"""What every command shares: loading the configuration or exiting, and the sandbox's well-known secrets."""

from __future__ import annotations

import argparse
import base64
import os
import sys

from service.config import Config, ConfigError, load_config

SANDBOX_SIGNING_SECRET = "whsec_" + base64.b64encode(b"leadrelay-sandbox-signing-secret").decode()
SANDBOX_ADMIN_TOKEN = "sandbox-admin-token"


def load_config_or_exit(args: argparse.Namespace) -> Config:
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"leadrelay: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def set_env(name: str, value: str) -> None:
    os.environ[name] = value
