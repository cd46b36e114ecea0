"""`check-config` and `migrate`: validating the configuration and applying the database schema."""

from __future__ import annotations

import argparse
from typing import Any

from service.cli.common import load_config_or_exit
from service.logs import configure_logging
from service.pipeline.field_coverage import unsent_fields
from service.state import database_url, migrate, open_engine
from service.state.migrations import pending_versions


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args)
    print(f"configuration OK: {config.path}")
    print(f"  sources: {', '.join(config.sources) or 'none'}")
    print(f"  providers: {', '.join(config.providers) or 'none'}")
    for unsent in unsent_fields(config.sources, config.providers, config["routes"]):
        print(f"warning: {unsent}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args)
    configure_logging(config["logging"]["level"], config["logging"]["json"])
    engine = open_engine(database_url(config), config["database"])
    try:
        if args.check:
            pending = pending_versions(engine)
            print(f"pending migrations: {', '.join(map(str, pending)) or 'none'}")
            return 1 if pending else 0
        applied = migrate(engine)
        print(f"migrations applied: {', '.join(map(str, applied)) or 'none (up to date)'}")
    finally:
        engine.close()
    return 0


def register(sub: Any) -> None:
    sub.add_parser("check-config", help="validate the configuration").set_defaults(func=cmd_check_config)
    migrate_parser = sub.add_parser("migrate", help="apply the database schema migrations")
    migrate_parser.add_argument(
        "--check", action="store_true", help="only list pending migrations (exit 1 if any)"
    )
    migrate_parser.set_defaults(func=cmd_migrate)
