"""`simulator` and `demo`: a provider simulator on a port, and a signed sample event followed to the provider."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from handlers.sandbox import SIMULATORS
from handlers.simulation import ServedApp
from service.cli.admin_client import add_admin_options, admin_endpoint, call_admin
from service.cli.common import SANDBOX_SIGNING_SECRET, load_config_or_exit
from service.domain.statuses import DeliveryStatus


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def cmd_demo(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args)
    base, headers = admin_endpoint(args)
    secret = (config.sources.get("generic", {}).get("secrets") or [SANDBOX_SIGNING_SECRET])[0]
    event = {
        "event_type": "form.submitted",
        "lead": {"email": args.email},
        "changes": {"first_name": "Jane", "city": args.city, "status": "qualified"},
        "metadata": {"utm_source": "demo"},
    }
    body = json.dumps(event).encode()
    msg_id = "msg_demo_" + secrets.token_hex(6)
    ts = int(time.time())
    signed = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard_webhook(secret, msg_id, ts, body),
        "Content-Type": "application/json",
    }
    answer = call_admin("POST", f"{base}/webhooks/generic", signed, data=body)
    print(f"webhook answered: {json.dumps(answer)}")
    command_id = answer["command_id"]
    for _ in range(60):
        event_log = call_admin("GET", f"{base}/v1/events/{command_id}", headers)
        if event_log["status"] in (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD_LETTERED):
            break
        time.sleep(0.5)
    print(json.dumps(event_log, indent=2))
    return 0 if event_log["status"] == DeliveryStatus.DELIVERED else 1


def cmd_simulator(args: argparse.Namespace) -> int:
    factory = SIMULATORS[args.kind]
    server = ServedApp(factory.create(), port=args.port)
    factory.seed(server.url)
    print(f"{args.kind} simulator on {server.url} credentials={json.dumps(factory.credentials)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.server.serve_forever()
    return 0


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="send a signed sample event and follow it")
    demo.add_argument("--email", default="jane@example.com")
    demo.add_argument("--city", default="London")
    add_admin_options(demo)
    demo.set_defaults(func=cmd_demo)
    sim = sub.add_parser("simulator", help="run a provider simulator")
    sim.add_argument("kind")
    sim.add_argument("--port", type=int, default=0)
    sim.set_defaults(func=cmd_simulator)
