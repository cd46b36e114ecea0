"""`leadrelay` command line.

leadrelay serve                 web (gunicorn) + dispatcher; sandbox simulators when no credentials
leadrelay dispatch              the embedded dispatcher alone
leadrelay kafka-dispatch        distributed mode: the dispatcher consumer (command + retry topics)
leadrelay consume-sources       distributed mode: source-topic consumers -> command topic
leadrelay check-config          validate the configuration and exit
leadrelay migrate               apply the database schema migrations (automatic in embedded mode)
leadrelay events list|show|replay   the event log, through the admin API (replay one, or by filter)
leadrelay demo                  send a signed sample event and follow it to the provider
leadrelay simulator leadsquared run a provider simulator on a port
leadrelay providers metrics <name>  what an async provider reports about its queue
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from flask import Flask

from consumers.dispatcher import KafkaDispatcher
from consumers.sources import SourceConsumers
from consumers.wiring import build_distributed_runtime, readiness_checks
from service.app import create_app
from service.config import CONFIG_ENV, Config, ConfigError, load_config
from service.logs import configure_logging
from service.metrics import add_readiness_check, serve_metrics
from service.pipeline.field_coverage import unsent_fields
from service.runtime import build_runtime

log = logging.getLogger("leadrelay.cli")

SANDBOX_SIGNING_SECRET = "whsec_" + base64.b64encode(b"leadrelay-sandbox-signing-secret").decode()
SANDBOX_ADMIN_TOKEN = "sandbox-admin-token"
GRACEFUL_SECONDS = 30.0


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"leadrelay: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _set_env(name: str, value: str) -> None:
    os.environ[name] = value


# ---- sandbox ----------------------------------------------------------------------------


def needs_sandbox(config: Config) -> bool:
    mode = config["sandbox"]
    if mode == "off":
        return False
    if mode == "on":
        return True
    from handlers import HANDLER_KINDS

    return any(
        HANDLER_KINDS[p["type"]](name, p).configuration_problem()
        for name, p in config.enabled_providers().items()
    )


def start_sandbox(config: Config) -> list[Any]:
    """Start a simulator per provider kind and point the config (via env) at them."""
    from handlers.simulators import SIMULATORS
    from handlers.simulators.common import ServedApp

    served: list[Any] = []
    for name, settings in config.enabled_providers().items():
        factory = SIMULATORS.get(settings["type"])
        if factory is None:
            continue
        sim = factory.create()
        server = ServedApp(sim).start()
        served.append(server)
        urls = dict.fromkeys(factory.url_settings, server.url)
        for key, value in {**urls, **factory.credentials}.items():
            _set_env(f"LEADRELAY__PROVIDERS__{name.upper()}__{key.upper()}", value)
        factory.seed(server.url)
        log.warning("SANDBOX MODE: provider %r is a local simulator at %s", name, server.url)
    _set_env("LEADRELAY__SANDBOX_ACTIVE", "true")
    generic = [n for n, s in config.sources.items() if s["type"] == "generic" and not s.get("secrets")]
    for name in generic:
        _set_env(f"LEADRELAY__SOURCES__{name.upper()}__SECRETS", SANDBOX_SIGNING_SECRET)
    if not config["server"].get("admin_token"):
        _set_env("LEADRELAY__SERVER__ADMIN_TOKEN", SANDBOX_ADMIN_TOKEN)
    return served


# ---- serve ------------------------------------------------------------------------------


def gunicorn_command(config: Config) -> list[str]:
    server = config["server"]
    conf = Path(__file__).with_name("gunicorn_conf.py")
    return [
        sys.executable, "-m", "gunicorn",
        "-c", str(conf),
        "--bind", server["bind"],
        "--workers", str(server["workers"]),
        "--threads", str(server["threads"]),
        "service.cli:create_web_app()",
    ]  # fmt: skip


def create_web_app() -> Flask:
    """The gunicorn target of both modes (the image's CMD): the embedded runtime, or the
    distributed one (PostgreSQL record, Kafka queue) wired in `consumers.wiring`."""
    config = load_config()
    configure_logging(config["logging"]["level"], config["logging"]["json"])
    runtime = build_distributed_runtime(config) if config["mode"] == "distributed" else build_runtime(config)
    return create_app(config, runtime)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    configure_logging(config["logging"]["level"], config["logging"]["json"])
    if args.config:
        _set_env(CONFIG_ENV, str(Path(args.config).resolve()))
    sandbox = needs_sandbox(config)
    if sandbox:
        start_sandbox(config)
        config = load_config(args.config)
    metrics_dir = tempfile.mkdtemp(prefix="leadrelay-metrics-")
    web_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    web = subprocess.Popen(gunicorn_command(config), env=web_env)
    # Distributed mode: the web process here plus one dispatcher consumer (scale them apart
    # in Kubernetes; `consume-sources` runs on its own when kafka.sources is configured).
    dispatch = "kafka-dispatch" if config["mode"] == "distributed" else "dispatch"
    dispatcher = subprocess.Popen([sys.executable, "-m", "service.cli", dispatch], env=dict(os.environ))
    children = {"web": web, "dispatcher": dispatcher}
    log.info("leadrelay serving", extra={"bind": config["server"]["bind"], "sandbox": sandbox})
    if sandbox:
        log.warning(
            "SANDBOX MODE: try `.venv/bin/leadrelay demo`, then `.venv/bin/leadrelay events list`"
            " (in sandbox mode both know the admin token)"
        )

    stopping = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exit_code = 0
    while stopping["signal"] is None:
        for name, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with %s; stopping", name, child.returncode)
                stopping["signal"] = signal.SIGTERM
                exit_code = 1
                break
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACEFUL_SECONDS
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    log.info("leadrelay stopped")
    return exit_code


def cmd_dispatch(args: argparse.Namespace) -> int:
    from service.dispatcher import EmbeddedDispatcher
    from service.state import open_state_store
    from service.state.retention import RetentionPruner

    config = _config(args)
    configure_logging(config["logging"]["level"], config["logging"]["json"])
    if config["mode"] != "embedded":
        print(
            "leadrelay: `dispatch` runs the embedded dispatcher; use `leadrelay kafka-dispatch`",
            file=sys.stderr,
        )
        return 2
    queue_path = Path(config["storage"]["path"])
    queue_path.parent.mkdir(parents=True, exist_ok=True)
    # One embedded dispatcher per queue: it owns every in-flight delivery in it.
    lock_file = open(str(queue_path) + ".dispatcher.lock", "w")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"leadrelay: another dispatcher is running on {queue_path}", file=sys.stderr)
        return 3
    store = open_state_store(config)
    if args.metrics_port is not None:
        serve_metrics(args.metrics_port)
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None and config["server"]["metrics_port"]:
        try:
            serve_metrics(config["server"]["metrics_port"])
        except OSError as exc:
            log.warning("metrics port unavailable: %s", exc)
    dispatcher = EmbeddedDispatcher(config, store)
    pruner = RetentionPruner(store, config["retention"])
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop())
    signal.signal(signal.SIGINT, lambda *_: dispatcher.stop())
    pruner.start()
    try:
        dispatcher.run()
    finally:
        pruner.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.state import database_url, migrate, open_engine
    from service.state.migrations import pending_versions

    config = _config(args)
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


def _distributed_config(args: argparse.Namespace, what: str) -> Config:
    config = _config(args)
    configure_logging(config["logging"]["level"], config["logging"]["json"])
    if config["mode"] != "distributed":
        print(
            f"leadrelay: `{what}` needs mode: distributed (the embedded mode uses `dispatch`)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return config


def _serve_own_metrics(config: Config, port: int | None, checks: dict[str, Any]) -> None:
    """The worker's own port: /metrics, /healthz (its loop turns), /readyz (`checks`)."""
    for name, check in checks.items():
        add_readiness_check(name, check)
    try:
        if port is not None:
            serve_metrics(port)
        elif config["server"]["metrics_port"]:
            serve_metrics(config["server"]["metrics_port"])
    except OSError as exc:
        log.warning("metrics port unavailable: %s", exc)


def _stop_on_signals(stop: Any) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: finishing the in-flight batch and leaving the group", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_kafka_dispatch(args: argparse.Namespace) -> int:
    config = _distributed_config(args, "kafka-dispatch")
    dispatcher = KafkaDispatcher(config)
    _serve_own_metrics(
        config, args.metrics_port, readiness_checks(config, dispatcher.ledger, dispatcher.redis)
    )
    _stop_on_signals(dispatcher.stop)
    dispatcher.run()
    return 0


def cmd_consume_sources(args: argparse.Namespace) -> int:
    config = _distributed_config(args, "consume-sources")
    try:
        runtime = build_distributed_runtime(config)
        consumers = SourceConsumers(runtime)
    except ValueError as exc:
        print(f"leadrelay: {exc}", file=sys.stderr)
        return 2
    _serve_own_metrics(config, args.metrics_port, runtime.extras["readiness_checks"])
    _stop_on_signals(consumers.stop)
    consumers.run()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"configuration OK: {config.path}")
    print(f"  sources: {', '.join(config.sources) or 'none'}")
    print(f"  providers: {', '.join(config.providers) or 'none'}")
    for unsent in unsent_fields(config.sources, config.providers, config["routes"]):
        print(f"warning: {unsent}")
    return 0


def cmd_try_source(args: argparse.Namespace) -> int:
    """Map a saved payload through a configured source and print the result; nothing is queued."""
    from service.pipeline.dry_run import sample_request, try_source
    from service.sources import SOURCE_KINDS

    config = _config(args)
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


# ---- events (admin API client) ----------------------------------------------------------


def _admin(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    config = _config(args)
    url = args.url or f"http://{config['server']['bind']}"
    token = args.token or os.environ.get("LEADRELAY_ADMIN_TOKEN") or config["server"].get("admin_token")
    if not token and config["sandbox"] != "off":
        token = SANDBOX_ADMIN_TOKEN
    if not token:
        print("leadrelay: set --token or LEADRELAY_ADMIN_TOKEN", file=sys.stderr)
        raise SystemExit(2)
    return url.rstrip("/"), {"Authorization": f"Bearer {token}"}


def _call(method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
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
    base, headers = _admin(args)
    if args.action == "list":
        params = {**_event_filter_params(args), **({"limit": str(args.limit)} if args.limit else {})}
        body = _call("GET", f"{base}/v1/events", headers, params=params)
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
        body = _call(
            "POST", f"{base}/v1/events/replay", headers, json={**params, "dry_run": bool(args.dry_run)}
        )
        verb = "would reset" if body["dry_run"] else "reset"
        print(f"{verb} {body['deliveries']} dead-lettered deliveries of {body['events']} events")
        return 0
    if not args.command_id:
        print("leadrelay: a command id is needed", file=sys.stderr)
        return 2
    if args.action == "show":
        print(json.dumps(_call("GET", f"{base}/v1/events/{args.command_id}", headers), indent=2))
        return 0
    params = {"provider": args.provider} if args.provider else {}
    print(
        json.dumps(
            _call("POST", f"{base}/v1/events/{args.command_id}/replay", headers, params=params), indent=2
        )
    )
    return 0


# ---- demo -------------------------------------------------------------------------------


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def cmd_demo(args: argparse.Namespace) -> int:
    config = _config(args)
    base, headers = _admin(args)
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
    answer = _call("POST", f"{base}/webhooks/generic", signed, data=body)
    print(f"webhook answered: {json.dumps(answer)}")
    command_id = answer["command_id"]
    for _ in range(60):
        event_log = _call("GET", f"{base}/v1/events/{command_id}", headers)
        if event_log["status"] in ("delivered", "dead_lettered"):
            break
        time.sleep(0.5)
    print(json.dumps(event_log, indent=2))
    return 0 if event_log["status"] == "delivered" else 1


# ---- providers --------------------------------------------------------------------------


def cmd_providers(args: argparse.Namespace) -> int:
    if args.action in ("status", "pause", "resume"):
        return _provider_control(args)
    if not args.name:
        print("leadrelay: a provider name is needed", file=sys.stderr)
        return 2
    from handlers import HANDLER_KINDS
    from handlers.base import PermanentError, TransientError
    from service.redact import redact

    config = _config(args)
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
    base, headers = _admin(args)
    if args.action == "status":
        body = _call("GET", f"{base}/v1/providers", headers)
        for name, state in body["providers"].items():
            if args.name and name != args.name:
                continue
            shown = "paused" if state["paused"] else state["breaker"]
            extra = f"\tnext probe {state['next_probe_at']}" if state["next_probe_at"] else ""
            print(f"{name}\t{shown}{extra}\t{state['reason'] or ''}")
        return 0
    if not args.name:
        print("leadrelay: a provider name is needed", file=sys.stderr)
        return 2
    print(json.dumps(_call("POST", f"{base}/v1/providers/{args.name}/{args.action}", headers), indent=2))
    return 0


# ---- simulators -------------------------------------------------------------------------


def cmd_simulator(args: argparse.Namespace) -> int:
    from handlers.simulators import SIMULATORS
    from handlers.simulators.common import ServedApp

    factory = SIMULATORS[args.kind]
    server = ServedApp(factory.create(), port=args.port)
    factory.seed(server.url)
    print(f"{args.kind} simulator on {server.url} credentials={json.dumps(factory.credentials)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.server.serve_forever()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadrelay", description="Webhooks in, lead updates out.")
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or config/leadrelay.yaml)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="web + dispatcher (sandbox simulators when no credentials)").set_defaults(
        func=cmd_serve
    )
    dispatch = sub.add_parser("dispatch", help="the embedded dispatcher alone")
    dispatch.add_argument("--metrics-port", type=int, default=None)
    dispatch.set_defaults(func=cmd_dispatch)
    kafka_dispatch = sub.add_parser("kafka-dispatch", help="distributed mode: the dispatcher consumer")
    kafka_dispatch.add_argument("--metrics-port", type=int, default=None)
    kafka_dispatch.set_defaults(func=cmd_kafka_dispatch)
    sources = sub.add_parser("consume-sources", help="distributed mode: source-topic consumers")
    sources.add_argument("--metrics-port", type=int, default=None)
    sources.set_defaults(func=cmd_consume_sources)
    sub.add_parser("check-config", help="validate the configuration").set_defaults(func=cmd_check_config)
    try_src = sub.add_parser("try-source", help="dry run: what a payload becomes through a source")
    try_src.add_argument("name", help="the source's name in the config")
    try_src.add_argument("--payload", required=True, help="the request body, as the sender posts it")
    try_src.add_argument("--headers", help="the request headers: a JSON object or 'Name: value' lines")
    try_src.add_argument("--content-type", help="default: the headers' Content-Type, else guessed")
    try_src.add_argument("--url-token", help="the secret token of the webhook URL (url_token sources)")
    try_src.set_defaults(func=cmd_try_source)
    migrate = sub.add_parser("migrate", help="apply the database schema migrations")
    migrate.add_argument("--check", action="store_true", help="only list pending migrations (exit 1 if any)")
    migrate.set_defaults(func=cmd_migrate)
    events = sub.add_parser("events", help="the event log: list, show, replay (one, or by filter)")
    events.add_argument("action", choices=["list", "show", "replay"])
    events.add_argument("command_id", nargs="?")
    events.add_argument(
        "--status", choices=["pending", "in_flight", "polling", "delivered", "dead_lettered", "duplicate"]
    )
    events.add_argument("--provider")
    events.add_argument("--source")
    events.add_argument("--event-type")
    events.add_argument("--lead", help="the lead's email, phone or id")
    events.add_argument("--since", help="received at or after (epoch seconds or ISO 8601, UTC)")
    events.add_argument("--until", help="received before (epoch seconds or ISO 8601, UTC)")
    events.add_argument("--dry-run", action="store_true", help="bulk replay: only count what it would reset")
    events.add_argument("--limit", type=int)
    events.add_argument("--url", help="leadrelay base URL (default: http://<server.bind>)")
    events.add_argument("--token", help="admin token (default: $LEADRELAY_ADMIN_TOKEN or server.admin_token)")
    events.set_defaults(func=cmd_events)
    demo = sub.add_parser("demo", help="send a signed sample event and follow it")
    demo.add_argument("--email", default="jane@example.com")
    demo.add_argument("--city", default="London")
    demo.add_argument("--url")
    demo.add_argument("--token")
    demo.set_defaults(func=cmd_demo)
    providers = sub.add_parser("providers", help="breaker state, pause and resume; a provider's own metrics")
    providers.add_argument("action", choices=["status", "pause", "resume", "metrics"])
    providers.add_argument("name", nargs="?", help="the provider's name in the config")
    providers.add_argument("--url", help="leadrelay base URL (default: http://<server.bind>)")
    providers.add_argument(
        "--token", help="admin token (default: $LEADRELAY_ADMIN_TOKEN or server.admin_token)"
    )
    providers.set_defaults(func=cmd_providers)
    sim = sub.add_parser("simulator", help="run a provider simulator")
    sim.add_argument("kind")
    sim.add_argument("--port", type=int, default=0)
    sim.set_defaults(func=cmd_simulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
