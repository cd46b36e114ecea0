"""`events list|show|replay`: the event log through the admin API (replay one, or every dead letter a filter matches)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from service.cli.admin_client import add_admin_options, admin_endpoint, call_admin
from service.domain.statuses import DeliveryStatus


def _event_filter_params(args: argparse.Namespace) -> dict[str, str]:
    wanted = {
        "status": args.status,
        "provider": args.provider,
        "source": args.source,
        "event_type": args.event_type,
        "lead": args.lead,
        "since": args.since,
        "until": args.until,
    }
    return {name: value for name, value in wanted.items() if value}


def cmd_events(args: argparse.Namespace) -> int:
    base, headers = admin_endpoint(args)
    if args.action == "list":
        params = {**_event_filter_params(args), **({"limit": str(args.limit)} if args.limit else {})}
        body = call_admin("GET", f"{base}/v1/events", headers, params=params)
        for event in body["events"]:
            print(
                f"{event['command_id']}\t{event['provider']}\t{event['status']}\t"
                f"attempts={event['attempts']}\t{event['last_error'] or ''}"
            )
        return 0
    if args.action == "replay" and not args.command_id:
        # Bulk: every dead letter the filter matches (--dry-run only counts them).
        params = _event_filter_params(args)
        if not params:
            print(
                "leadrelay: a command id, or a filter (--status, --provider, --source, --event-type,"
                " --lead, --since, --until) for a bulk replay",
                file=sys.stderr,
            )
            return 2
        body = call_admin(
            "POST", f"{base}/v1/events/replay", headers, json={**params, "dry_run": bool(args.dry_run)}
        )
        verb = "would reset" if body["dry_run"] else "reset"
        print(f"{verb} {body['deliveries']} dead-lettered deliveries of {body['events']} events")
        return 0
    if not args.command_id:
        print("leadrelay: a command id is needed", file=sys.stderr)
        return 2
    if args.action == "show":
        print(json.dumps(call_admin("GET", f"{base}/v1/events/{args.command_id}", headers), indent=2))
        return 0
    params = {"provider": args.provider} if args.provider else {}
    print(
        json.dumps(
            call_admin("POST", f"{base}/v1/events/{args.command_id}/replay", headers, params=params), indent=2
        )
    )
    return 0


def register(sub: Any) -> None:
    events = sub.add_parser("events", help="the event log: list, show, replay (one, or by filter)")
    events.add_argument("action", choices=["list", "show", "replay"])
    events.add_argument("command_id", nargs="?")
    events.add_argument("--status", choices=[status.value for status in DeliveryStatus])
    events.add_argument("--provider")
    events.add_argument("--source")
    events.add_argument("--event-type")
    events.add_argument("--lead", help="the lead's email, phone or id")
    events.add_argument("--since", help="received at or after (epoch seconds or ISO 8601, UTC)")
    events.add_argument("--until", help="received before (epoch seconds or ISO 8601, UTC)")
    events.add_argument("--dry-run", action="store_true", help="bulk replay: only count what it would reset")
    events.add_argument("--limit", type=int)
    add_admin_options(events)
    events.set_defaults(func=cmd_events)
