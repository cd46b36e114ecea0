"""Fixtures for the deployment tests: the chart rendered by Helm's own engine (PyPI
`helm-python-sdk`, the Go Helm SDK through a C ABI, no helm binary), and the web and
dispatcher started as real processes with the exact commands the image and chart use."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import requests
import yaml

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from tests.support import (
    ADMIN_TOKEN,
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    ROOT,
    SIGNING_SECRET,
    base_config,
    free_port,
    wait_http_ok,
)

CHART = ROOT / "helm" / "leadrelay"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
SECRETS = {
    "LEADRELAY__PROVIDERS__LEADSQUARED__ACCESS_KEY": LSQ_ACCESS_KEY,
    "LEADRELAY__PROVIDERS__LEADSQUARED__SECRET_KEY": LSQ_SECRET_KEY,
    "LEADRELAY__SOURCES__GENERIC__SECRETS": SIGNING_SECRET,
    "LEADRELAY__SERVER__ADMIN_TOKEN": ADMIN_TOKEN,
}


# ---- the chart --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rendered manifests by template path, each a list of objects (NOTES.txt left out)."""
    out = chart.render(values, name="lr", namespace="leads", is_install=True)
    return {
        path: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in out.items()
        if not path.endswith("NOTES.txt")
    }


def objects(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [doc for docs in render(chart, values).values() for doc in docs]


def notes(chart: helm.Chart, values: dict[str, Any] | None = None) -> str:
    return chart.render(values, name="lr", namespace="leads")["leadrelay/templates/NOTES.txt"]


# ---- the Dockerfile ---------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        word, _, rest = pending.partition(" ")
        lines.append((word.upper(), rest.strip()))
        pending = ""
    return lines


def dockerfile_cmd() -> list[str]:
    cmds = [args for word, args in dockerfile_instructions() if word == "CMD"]
    assert len(cmds) == 1, "one CMD in the Dockerfile"
    command = json.loads(cmds[0])  # exec form, so gunicorn is PID 1 and gets SIGTERM
    assert isinstance(command, list)
    return command


# ---- real processes ---------------------------------------------------------------------


class Proc:
    """A command as a real child process (its own session), output kept in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            start_new_session=True,
        )

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode

    def lines(self) -> list[str]:
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]


def image_argv(argv: list[str]) -> list[str]:
    """An image command (`gunicorn ...`, `leadrelay ...`) run from this venv, as PATH would
    resolve it inside the image."""
    executable = VENV_BIN / argv[0]
    assert executable.exists(), f"{argv[0]} is not installed by the package: {shlex.join(argv)}"
    return [str(executable), *argv[1:]]


@dataclass
class Stack:
    """LSQ simulator + gunicorn web + `leadrelay dispatch`, configured the way the chart
    does it: a config file without secrets, the secrets as LEADRELAY__ env vars."""

    tmp: Path
    sim: ServedApp
    web_url: str
    metrics_url: str
    web: Proc
    dispatcher: Proc
    prometheus_dir: Path
    home: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def all_lines(self) -> list[str]:
        return self.web.lines() + self.dispatcher.lines()


def embedded_pod(values: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The chart in embedded mode: its leadrelay.yaml and its containers by name."""
    with helm.Chart.load(CHART) as loaded:
        docs = [d for docs in render(loaded, {"mode": "embedded", **values}).values() for d in docs]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (pod,) = [d for d in docs if d["kind"] == "Deployment"]
    containers = {c["name"]: c for c in pod["spec"]["template"]["spec"]["containers"]}
    return config_map["data"]["leadrelay.yaml"], containers


def start_stack(
    tmp: Path, rate_limit: dict[str, float] | None = None, unreachable_provider: str | None = None
) -> Stack:
    """The chart's embedded-mode pod, run here: its ConfigMap as the config file (volume
    paths moved under `tmp`), each container's command and plain env from the rendered
    Deployment, and the secrets as env vars the way `existingSecret` brings them."""
    sim = ServedApp(create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY)).start()
    raw = base_config(tmp, sim.url)  # the test suite's fast-retry settings, LSQ simulator URL
    config = {key: raw[key] for key in ("dedup", "dispatcher", "logging", "sources", "providers", "routes")}
    # Secrets never go through values (the schema would refuse them): strip them here.
    config["sources"]["generic"].pop("secrets")
    for key in ("access_key", "secret_key"):
        config["providers"]["leadsquared"].pop(key)
    if rate_limit:
        config["providers"]["leadsquared"]["rate_limit"] = rate_limit
    secrets = dict(SECRETS)
    if unreachable_provider:
        # A second LeadSquared account on a closed port, for `deal.*` events: connection
        # errors carry the full URL, accessKey and secretKey included, into the reasons.
        config["providers"][unreachable_provider] = {
            **config["providers"]["leadsquared"],
            "base_url": "http://127.0.0.1:9",
        }
        config["routes"].insert(
            0, {"source": "generic", "event_types": ["deal.*"], "providers": [unreachable_provider]}
        )
        for key in ("ACCESS_KEY", "SECRET_KEY"):
            secrets[f"LEADRELAY__PROVIDERS__{unreachable_provider.upper()}__{key}"] = SECRETS[
                f"LEADRELAY__PROVIDERS__LEADSQUARED__{key}"
            ]
    metrics_port = free_port()
    config_text, containers = embedded_pod({"metrics": {"port": metrics_port}, "config": config})
    assert [*containers["web"]["command"]] == dockerfile_cmd(), "the chart runs the image's CMD for the web"

    data, prometheus_dir, home = tmp / "data", tmp / "prometheus", tmp / "home"
    home.mkdir()
    plant_stale_metrics(prometheus_dir)
    config_path = tmp / "leadrelay.yaml"  # stands in for the ConfigMap mount
    config_path.write_text(config_text.replace("/var/lib/leadrelay", str(data)))  # the PVC mount
    web_port = free_port()
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LEADRELAY", "GUNICORN", "PROMETHEUS"))},
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # An empty HOME: the pods have none writable (read-only root filesystem).
        "HOME": str(home),
        **secrets,
    }
    local = {  # container paths and ports -> this machine's
        "LEADRELAY_CONFIG": str(config_path),
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus_dir),
        "GUNICORN_BIND": f"127.0.0.1:{web_port}",
    }

    def start(name: str) -> Proc:
        container = containers[name]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env = {**base_env, **env, **{k: v for k, v in local.items() if k in env}}
        return Proc(image_argv([*container["command"], *container.get("args", [])]), env, tmp / f"{name}.log")

    web, dispatcher = start("web"), start("dispatcher")
    stack = Stack(
        tmp=tmp,
        sim=sim,
        web_url=f"http://127.0.0.1:{web_port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}",
        web=web,
        dispatcher=dispatcher,
        prometheus_dir=prometheus_dir,
        home=home,
    )
    try:
        wait_http_ok(stack.web_url + "/healthz", timeout=30)
        wait_http_ok(stack.metrics_url + "/healthz", timeout=30)
    except AssertionError:
        stop_stack(stack)
        raise AssertionError(
            "stack did not start:\n" + "\n".join(web.lines()[-20:] + dispatcher.lines()[-20:])
        ) from None
    return stack


def plant_stale_metrics(directory: Path) -> None:
    """What a previous container of the same pod leaves in the emptyDir: a dead worker's
    counter file. gunicorn_conf's on_starting must wipe it, or /metrics counts it."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from service.metrics import WEBHOOKS_RECEIVED

    directory.mkdir(parents=True)
    stale = MmapedDict(str(directory / "counter_999999.db"))
    name = "leadrelay_webhooks_received"
    key = mmap_key(
        name,
        name + "_total",
        ["source", "outcome"],
        ["generic", "accepted"],
        WEBHOOKS_RECEIVED._documentation,
    )
    stale.write_value(key, 1000.0, 0.0)
    stale.close()


def stop_stack(stack: Stack) -> None:
    stack.web.stop()
    stack.dispatcher.stop()
    stack.sim.stop()


def scrape(url: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{label="v",...}': value}, labels sorted."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    text = requests.get(url, timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples
