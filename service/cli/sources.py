"""`try-source`: the dry run of a saved payload through a configured sender; nothing is queued."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.cli.common import load_config_or_exit
from service.pipeline.dry_run import sample_request, try_source
from service.sources import SOURCE_KINDS


def cmd_try_source(args: argparse.Namespace) -> int:
    """Map a saved payload through a configured source and print the result; nothing is queued."""

    config = load_config_or_exit(args)
    settings = config.sources.get(args.name)
    if settings is None:
        print(
            f"leadrelay: no source named {args.name!r} (configured: {', '.join(config.sources)})",
            file=sys.stderr,
        )
        return 2
    headers: dict[str, str] = {}
    if args.headers:
        text = Path(args.headers).read_text()
        try:
            headers = {str(k): str(v) for k, v in json.loads(text).items()}
        except (ValueError, AttributeError):  # "Name: value" lines, as copied from a request log
            headers = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            headers = {k.strip(): v.strip() for k, v in headers.items()}
    adapter = SOURCE_KINDS[settings["type"]](args.name, settings)
    inbound = sample_request(
        args.name, Path(args.payload).read_bytes(), headers, args.content_type, args.url_token
    )
    result = try_source(adapter, inbound, config.route, check_signature=bool(headers or args.url_token))
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0 if result["ok"] else 1


def register(sub: Any) -> None:
    try_src = sub.add_parser("try-source", help="dry run: what a payload becomes through a source")
    try_src.add_argument("name", help="the source's name in the config")
    try_src.add_argument("--payload", required=True, help="the request body, as the sender posts it")
    try_src.add_argument("--headers", help="the request headers: a JSON object or 'Name: value' lines")
    try_src.add_argument("--content-type", help="default: the headers' Content-Type, else guessed")
    try_src.add_argument("--url-token", help="the secret token of the webhook URL (url_token sources)")
    try_src.set_defaults(func=cmd_try_source)
