"""The `leadrelay` command line: one module per command group, each registering its own subcommands.

leadrelay serve                 web (gunicorn) + dispatcher; sandbox simulators when no credentials
leadrelay dispatch              the embedded dispatcher alone
leadrelay kafka-dispatch        distributed mode: the dispatcher consumer (command + retry topics)
leadrelay consume-sources       distributed mode: source-topic consumers -> command topic
leadrelay check-config          validate the configuration and exit
leadrelay migrate               apply the database schema migrations (automatic in embedded mode)
leadrelay try-source <name>     dry run: what a saved payload becomes through a configured sender
leadrelay events list|show|replay   the event log, through the admin API (replay one, or by filter)
leadrelay demo                  send a signed sample event and follow it to the provider
leadrelay simulator leadsquared run a provider simulator on a port
leadrelay providers status|pause|resume|metrics   breaker state, operator pause, rate-limit budget; an async provider's metrics
"""

from __future__ import annotations

import argparse

from service.cli import events, maintenance, providers, serve, simulators, sources
from service.config import CONFIG_ENV

COMMAND_GROUPS = (serve, maintenance, sources, events, simulators, providers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadrelay", description="Webhooks in, lead updates out.")
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or config/leadrelay.yaml)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
