"""`providers status|pause|resume|metrics`: breaker state, operator pause and the latest rate-limit budget through the admin API; an async provider's own queue metrics."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from handlers import HANDLER_KINDS
from handlers.base import PermanentError, TransientError
from service.cli.admin_client import add_admin_options, admin_endpoint, call_admin
from service.cli.common import load_config_or_exit
from service.domain.redact import redact


def cmd_providers(args: argparse.Namespace) -> int:
    if args.action in ("status", "pause", "resume"):
        return _provider_control(args)
    if not args.name:
        print("leadrelay: a provider name is needed", file=sys.stderr)
        return 2

    config = load_config_or_exit(args)
    settings = config.providers.get(args.name)
    if settings is None:
        print(
            f"leadrelay: no provider {args.name!r} (configured: {', '.join(config.providers) or 'none'})",
            file=sys.stderr,
        )
        return 2
    handler = HANDLER_KINDS[settings["type"]](args.name, settings)
    problem = handler.configuration_problem()
    if problem:
        print(f"leadrelay: {problem}", file=sys.stderr)
        return 2
    try:
        values = handler.provider_metrics()
    except (PermanentError, TransientError) as exc:
        print(f"leadrelay: {redact(exc.reason)}", file=sys.stderr)
        return 1
    if values is None:
        print(f"leadrelay: provider {args.name!r} ({settings['type']}) reports no metrics", file=sys.stderr)
        return 2
    print(json.dumps({"provider": args.name, "type": settings["type"], "metrics": values}, indent=2))
    return 0


def _provider_control(args: argparse.Namespace) -> int:
    """Breaker state and operator pause through the admin API (what every process sees)."""
    base, headers = admin_endpoint(args)
    if args.action == "status":
        body = call_admin("GET", f"{base}/v1/providers", headers)
        overview = call_admin("GET", f"{base}/v1/overview", headers)["providers"]
        for name, state in body["providers"].items():
            if args.name and name != args.name:
                continue
            shown = "paused" if state["paused"] else state["breaker"]
            extra = f"\tnext probe {state['next_probe_at']}" if state["next_probe_at"] else ""
            extra += _latest_budget((overview.get(name) or {}).get("rate_limit"))
            print(f"{name}\t{shown}{extra}\t{state['reason'] or ''}")
        return 0
    if not args.name:
        print("leadrelay: a provider name is needed", file=sys.stderr)
        return 2
    print(json.dumps(call_admin("POST", f"{base}/v1/providers/{args.name}/{args.action}", headers), indent=2))
    return 0


def _latest_budget(rate_limit: dict[str, Any] | None) -> str:
    """The last budget sample the dispatchers published, e.g. `\trate limit 12/25 per 5 s`."""
    if not rate_limit or not rate_limit["samples"]:
        return ""
    used = rate_limit["samples"][-1]["used"]
    return f"\trate limit {used}/{rate_limit['calls']} per {rate_limit['per_seconds']:g} s"


def register(sub: Any) -> None:
    providers = sub.add_parser("providers", help="breaker state, pause and resume; a provider's own metrics")
    providers.add_argument("action", choices=["status", "pause", "resume", "metrics"])
    providers.add_argument("name", nargs="?", help="the provider's name in the config")
    add_admin_options(providers)
    providers.set_defaults(func=cmd_providers)
