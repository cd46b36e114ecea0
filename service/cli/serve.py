"""`serve`, `dispatch`, `kafka-dispatch`, `consume-sources`: the long-running processes, and the sandbox `serve` starts when no provider credentials are set."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Flask

import service.web
from consumers.dispatcher import KafkaDispatcher
from consumers.sources import SourceConsumers
from consumers.wiring import build_distributed_runtime, readiness_checks
from handlers import HANDLER_KINDS
from handlers.sandbox import SIMULATORS
from handlers.simulation import ServedApp
from service.cli.common import SANDBOX_ADMIN_TOKEN, SANDBOX_SIGNING_SECRET, load_config_or_exit, set_env
from service.config import CONFIG_ENV, Config, load_config
from service.logs import configure_logging
from service.metrics import add_readiness_check, serve_metrics
from service.pipeline.embedded import EmbeddedDispatcher
from service.runtime import build_runtime
from service.state import open_state_store
from service.state.retention import RetentionPruner
from service.web.app import create_app

log = logging.getLogger("leadrelay.cli")

GRACEFUL_SECONDS = 30.0


# ---- sandbox ----------------------------------------------------------------------------


def needs_sandbox(config: Config) -> bool:
    mode = config["sandbox"]
    if mode == "off":
        return False
    if mode == "on":
        return True

    return any(
        HANDLER_KINDS[p["type"]](name, p).configuration_problem()
        for name, p in config.enabled_providers().items()
    )


def start_sandbox(config: Config) -> list[Any]:
    """Start a simulator per provider kind and point the config (via env) at them."""

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
            set_env(f"LEADRELAY__PROVIDERS__{name.upper()}__{key.upper()}", value)
        factory.seed(server.url)
        log.warning("SANDBOX MODE: provider %r is a local simulator at %s", name, server.url)
    set_env("LEADRELAY__SANDBOX_ACTIVE", "true")
    generic = [n for n, s in config.sources.items() if s["type"] == "generic" and not s.get("secrets")]
    for name in generic:
        set_env(f"LEADRELAY__SOURCES__{name.upper()}__SECRETS", SANDBOX_SIGNING_SECRET)
    if not config["server"].get("admin_token"):
        set_env("LEADRELAY__SERVER__ADMIN_TOKEN", SANDBOX_ADMIN_TOKEN)
    return served


# ---- serve ------------------------------------------------------------------------------


def gunicorn_command(config: Config) -> list[str]:
    server = config["server"]
    conf = Path(service.web.__file__).with_name("gunicorn_conf.py")
    return [
        sys.executable, "-m", "gunicorn",
        "-c", str(conf),
        "--bind", server["bind"],
        "--workers", str(server["workers"]),
        "--threads", str(server["threads"]),
        "service.cli.serve:create_web_app()",
    ]  # fmt: skip


def create_web_app() -> Flask:
    """The gunicorn target of both modes (the image's CMD): the embedded runtime, or the
    distributed one (PostgreSQL record, Kafka queue) wired in `consumers.wiring`."""
    config = load_config()
    configure_logging(config["logging"]["level"], config["logging"]["json"])
    runtime = build_distributed_runtime(config) if config["mode"] == "distributed" else build_runtime(config)
    return create_app(config, runtime)


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args)
    configure_logging(config["logging"]["level"], config["logging"]["json"])
    if args.config:
        set_env(CONFIG_ENV, str(Path(args.config).resolve()))
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
    config = load_config_or_exit(args)
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


def _distributed_config(args: argparse.Namespace, what: str) -> Config:
    config = load_config_or_exit(args)
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


def register(sub: Any) -> None:
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
