"""The Dockerfile, read as data (docker cannot build here). What it names must exist:
test_runtime.py starts its CMD and the chart's commands as real processes; this module
checks the shape: multi-stage, slim base, non-root, nothing but the venv and the config in
the final stage, and agreement with the chart on user, port and paths."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import helm_python as helm
import yaml

from service.cli import build_parser
from tests.deploy.conftest import ROOT, dockerfile_cmd, dockerfile_instructions, image_argv, objects

BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|build-essential|make|git|curl|wget|apt-get|pytest|ruff)\b")


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for word, args in dockerfile_instructions():
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, args))
    return out


def test_multi_stage_on_a_slim_python_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)?", image), image


def test_final_stage_is_non_root_and_carries_no_build_tools_or_tests() -> None:
    final = stages()[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root")
    for word, args in final:
        if word == "RUN":
            assert not BUILD_TOOLS.search(args), args
        if word == "COPY":
            assert "tests" not in args and "bench" not in args, args
    copies = [args for word, args in final if word == "COPY"]
    assert any(args.startswith("--from=build /opt/leadrelay") for args in copies)
    # Only the venv and the default config: no source tree in the runtime image.
    assert all(args.startswith("--from=build") or args.startswith("config/") for args in copies), copies


def test_dockerignore_keeps_tests_and_secrets_out_of_the_context() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        included = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if (
                fnmatch.fnmatch(path, pattern)
                or fnmatch.fnmatch(path, pattern + "/*")
                or path.startswith(pattern + "/")
            ):
                included = negate
        return included

    for path in ("tests/support.py", "tests/deploy/conftest.py", "bench/ingest.py", ".venv/bin/python", ".env",
                 "var/leadrelay.db", "helm/leadrelay/values.yaml", ".git/config"):  # fmt: skip
        assert not sent(path), path
    for path in ("pyproject.toml", "service/web/app.py", "handlers/leadsquared/handler.py", "consumers/__init__.py",
                 "config/leadrelay.yaml"):  # fmt: skip
        assert sent(path), path


def test_the_build_stage_copies_every_package_the_project_ships() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    build = stages()[0]
    copied = {args.split()[0] for word, args in build if word == "COPY"}
    assert packages <= copied, packages - copied
    runs = [args for word, args in build if word == "RUN"]
    assert any(re.search(r"pip install (--no-deps )?\.(\s|$)", args) for args in runs), runs
    # The dependency layer installs exactly what pyproject.toml declares.
    assert any("['project']['dependencies']" in args and "pip install -r" in args for args in runs), runs


def test_cmd_and_chart_commands_are_installed_entry_points() -> None:
    command = dockerfile_cmd()
    assert command[:3] == ["gunicorn", "-c", "python:service.web.gunicorn_conf"]
    assert command[3] == "service.cli.serve:create_web_app()"
    image_argv(command)  # gunicorn is a console script of the environment
    image_argv(["leadrelay"])
    assert "dispatch" in build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def test_image_and_chart_agree_on_user_port_and_paths() -> None:
    instructions = dockerfile_instructions()
    final_user = [args for word, args in instructions if word == "USER"][-1]
    uid_arg = [args for word, args in instructions if word == "ARG" and args.startswith("UID=")][-1]
    uid = int(uid_arg.split("=")[1])
    assert final_user == "${UID}:${UID}"
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert "LEADRELAY_CONFIG=/etc/leadrelay/leadrelay.yaml" in env
    assert "GUNICORN_BIND=0.0.0.0:8080" in env
    assert "PROMETHEUS_MULTIPROC_DIR" not in env  # it would silence the dispatcher's own port
    exposed = {int(p) for word, args in instructions if word == "EXPOSE" for p in args.split()}
    values = yaml.safe_load((ROOT / "helm" / "leadrelay" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert exposed == {8080, values["metrics"]["port"]}
    with helm.Chart.load(ROOT / "helm" / "leadrelay") as chart:
        for doc in objects(chart, {"mode": "embedded"}):
            if doc["kind"] != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                env_vars = {e["name"]: e.get("value") for e in container["env"]}
                assert env_vars["LEADRELAY_CONFIG"] == "/etc/leadrelay/leadrelay.yaml"
                if container["name"] == "web":
                    assert env_vars["GUNICORN_BIND"] == "0.0.0.0:8080"
                    assert container["ports"][0]["containerPort"] == 8080


def test_deploy_docs_name_every_metric_and_the_secret_keys() -> None:
    from prometheus_client import REGISTRY

    import service.metrics  # noqa: F401 - registers the metrics

    docs = (ROOT / "docs" / "deploy.md").read_text()
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("leadrelay_")}
    undocumented = {n for n in names if n not in docs and n + "_total" not in docs}
    assert not undocumented, undocumented
    from tests.deploy.conftest import SECRETS

    assert all(key in docs for key in SECRETS)


def test_the_dependency_layer_command_lists_the_project_dependencies() -> None:
    """Runs the Dockerfile's own requirements one-liner (up to its redirect) with this Python."""
    import subprocess
    import sys

    run = next(args for word, args in stages()[0] if word == "RUN" and "tomllib" in args)
    one_liner = run.split(">", 1)[0].strip()
    assert one_liner.startswith("python -c ")
    out = subprocess.run(
        ["sh", "-c", sys.executable + one_liner.removeprefix("python")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert out == project["project"]["dependencies"]
