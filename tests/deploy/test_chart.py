"""The Helm chart, checked by Helm's own engine (lint, schema, render) and every rendered
object by the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail).

CRDs (KEDA ScaledObject, Prometheus Operator ServiceMonitor) are not in the core schemas;
their shape is checked here by hand against what those operators read.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from kubernetes_validate import utils as kv

from service.cli import build_parser
from service.config import load_config
from tests.deploy.conftest import CHART, SECRETS, notes, objects, render
from tests.support import ADMIN_TOKEN, LSQ_ACCESS_KEY, LSQ_SECRET_KEY, SIGNING_SECRET, deep_merge

KUBE_VERSION = kv.latest_version()  # the newest Kubernetes this kubernetes-validate ships
OLDEST_KUBE_VERSION = "1.27.0"  # Chart.yaml kubeVersion: >=1.27.0-0
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
WORKLOAD_KINDS = {"Deployment"}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} not rendered once: {[d['metadata']['name'] for d in docs]}"
    return found[0]


def variants(production_values: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    return {
        "default": None,
        "production": production_values,
        "embedded": {"mode": "embedded", "existingSecret": "leadrelay-secrets"},
    }


# ---- Helm's engine ----------------------------------------------------------------------


def test_helm_lint_is_clean_with_default_and_production_values(production_values: dict[str, Any]) -> None:
    for values in (None, production_values, {"mode": "embedded"}):
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        assert report["errors"] == [], report
        # Only the info-level "icon is recommended" (there is no project icon) is allowed.
        problems = [m for m in report["messages"] if m["severity"] >= 2 or "icon" not in m["error"]]
        assert problems == [], report


def test_every_rendered_object_validates_strictly_against_kubernetes(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    seen: set[str] = set()
    for label, values in variants(production_values).items():
        for doc in objects(chart, values):
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                continue
            for version in (KUBE_VERSION, OLDEST_KUBE_VERSION):
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as exc:
                    path = ".".join(str(p) for p in exc.path)
                    pytest.fail(
                        f"{label} on {version}: {doc['kind']}/{doc['metadata']['name']} {path}: {exc.message}"
                    )
            seen.add(doc["kind"])
    expected = {"ConfigMap", "Deployment", "Service", "ServiceAccount", "Ingress", "HorizontalPodAutoscaler",
                "PodDisruptionBudget", "NetworkPolicy", "PersistentVolumeClaim"}  # fmt: skip
    assert expected <= seen


def test_the_validator_itself_rejects_an_unknown_field(chart: helm.Chart) -> None:
    """Guard: strict validation is on, so the test above can fail."""
    web = copy.deepcopy(named(objects(chart), "Deployment", "lr-leadrelay-web"))
    web["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(web, KUBE_VERSION, strict=True)


def test_default_values_render_the_distributed_shape(chart: helm.Chart) -> None:
    docs = objects(chart)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    names = {name for _, name in kinds}
    assert {"lr-leadrelay-web", "lr-leadrelay-dispatcher"} <= names
    assert "lr-leadrelay-consumers" not in names  # off until source topics are configured
    assert not by_kind(docs, "Ingress") and not by_kind(docs, "HorizontalPodAutoscaler")
    assert not by_kind(docs, "Secret")


def test_production_values_turn_everything_on(chart: helm.Chart, production_values: dict[str, Any]) -> None:
    docs = objects(chart, production_values)
    for kind, name in [
        ("Deployment", "lr-leadrelay-web"),
        ("Deployment", "lr-leadrelay-dispatcher"),
        ("Deployment", "lr-leadrelay-consumers"),
        ("HorizontalPodAutoscaler", "lr-leadrelay-web"),
        ("ScaledObject", "lr-leadrelay-dispatcher"),
        ("ScaledObject", "lr-leadrelay-consumers"),
        ("Ingress", "lr-leadrelay"),
        ("ServiceMonitor", "lr-leadrelay"),
        ("PrometheusRule", "lr-leadrelay"),
        ("NetworkPolicy", "lr-leadrelay"),
        ("PodDisruptionBudget", "lr-leadrelay-consumers"),
    ]:
        named(docs, kind, name)
    hpa = named(docs, "HorizontalPodAutoscaler", "lr-leadrelay-web")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "lr-leadrelay-web",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # Autoscaled Deployments leave `replicas` to the HPA / KEDA so a `helm upgrade` never fights them.
    for name in ("lr-leadrelay-web", "lr-leadrelay-dispatcher", "lr-leadrelay-consumers"):
        assert "replicas" not in named(docs, "Deployment", name)["spec"], name
    ingress = named(docs, "Ingress", "lr-leadrelay")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/webhooks"]  # the admin API and /metrics are not published


# ---- CRDs: shape checked by hand ---------------------------------------------------------


def test_keda_scaled_objects_have_the_shape_keda_reads(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    docs = objects(chart, production_values)
    deployments = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    scaled = by_kind(docs, "ScaledObject")
    assert len(scaled) == 2
    allowed = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
               "triggers", "advanced", "fallback", "idleReplicaCount"}  # fmt: skip
    for so in scaled:
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        spec = so["spec"]
        assert set(spec) <= allowed, set(spec) - allowed
        assert spec["scaleTargetRef"]["name"] in deployments
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert isinstance(spec["minReplicaCount"], int) and isinstance(spec["maxReplicaCount"], int)
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["triggers"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            metadata = trigger["metadata"]
            # KEDA's trigger metadata is map[string]string: an int here fails admission.
            assert all(isinstance(v, str) for v in metadata.values()), metadata
            assert metadata["bootstrapServers"] == production_values["kafka"]["bootstrapServers"]
            assert metadata["consumerGroup"] and int(metadata["lagThreshold"]) > 0
            assert trigger["authenticationRef"] == {"name": "kafka-tls"}

    # Topics and groups come from the same config the workers read (config.kafka).
    def pairs(docs: list[dict[str, Any]], name: str) -> list[tuple[str, str]]:
        triggers = named(docs, "ScaledObject", name)["spec"]["triggers"]
        return [(t["metadata"]["topic"], t["metadata"]["consumerGroup"]) for t in triggers]

    assert pairs(docs, "lr-leadrelay-dispatcher") == [("leadrelay.commands", "leadrelay-dispatcher")]
    assert pairs(docs, "lr-leadrelay-consumers") == [
        ("crm.form-fills", "leadrelay-source-crm.form-fills"),
        ("crm.deal-changes", "leadrelay-deal-changes"),
    ]
    custom = copy.deepcopy(production_values)
    custom["config"]["kafka"].update(topics={"commands": "lr.cmds"}, groups={"dispatcher": "lr-disp"})
    assert pairs(objects(chart, custom), "lr-leadrelay-dispatcher") == [("lr.cmds", "lr-disp")]


def test_consumers_need_topic_bindings(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmError, match="config.kafka.sources"):
        render(chart, {"consumers": {"enabled": True}})
    bound = {
        "consumers": {"enabled": True},
        "config": {"kafka": {"sources": [{"topic": "t", "format": "generic"}]}},
    }
    assert named(objects(chart, bound), "Deployment", "lr-leadrelay-consumers")


def test_service_monitor_selects_services_and_ports_that_exist(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    docs = objects(chart, production_values)
    monitor = named(docs, "ServiceMonitor", "lr-leadrelay")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in by_kind(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in selected} == {"lr-leadrelay", "lr-leadrelay-worker-metrics"}
    port_names = {p["name"] for s in selected for p in s["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint["interval"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["leads"]}


# ---- wiring between objects -------------------------------------------------------------


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]) for d in by_kind(docs, "Deployment")]


def test_services_pdbs_and_scalers_select_real_pods(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    for values in (None, production_values, {"mode": "embedded"}):
        docs = objects(chart, values)
        pods = [t["metadata"]["labels"] for _, t in pod_templates(docs)]
        for obj in by_kind(docs, "Service") + by_kind(docs, "PodDisruptionBudget"):
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(selector.items() <= labels.items() for labels in pods), obj["metadata"]["name"]
        for name, template in pod_templates(docs):
            container_ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            for container in template["spec"]["containers"]:
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert container[probe]["httpGet"]["port"] in container_ports, (name, probe)
        for svc in by_kind(docs, "Service"):
            for port in svc["spec"]["ports"]:
                targets = [
                    t for _, t in pod_templates(docs)
                    if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()
                ]  # fmt: skip
                assert all(
                    port["targetPort"]
                    in {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
                    for t in targets
                ), svc["metadata"]["name"]


def test_pods_are_locked_down(chart: helm.Chart, production_values: dict[str, Any]) -> None:
    for values in (None, production_values, {"mode": "embedded"}):
        for name, template in pod_templates(objects(chart, values)):
            spec = template["spec"]
            # Pod Security Standard "restricted": non-root, RuntimeDefault seccomp, no escalation, drop ALL.
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert spec["securityContext"]["runAsUser"] > 0
            assert spec["automountServiceAccountToken"] is False
            assert spec["terminationGracePeriodSeconds"] >= 30, name
            mounts_needed = {"/tmp", "/etc/leadrelay", "/var/lib/leadrelay"}
            if values is production_values:  # extraVolumeMounts reach every container
                mounts_needed.add("/etc/kafka-ca")
            for container in spec["containers"]:
                sc = container["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                assert "add" not in sc["capabilities"]
                assert mounts_needed <= {m["mountPath"] for m in container["volumeMounts"]}, name
                assert container["resources"]["requests"]["memory"]


def test_web_pods_get_a_writable_multiprocess_metrics_dir(chart: helm.Chart) -> None:
    for values in (None, {"mode": "embedded"}):
        for name, template in pod_templates(objects(chart, values)):
            for container in template["spec"]["containers"]:
                env = {e["name"]: e.get("value") for e in container["env"]}
                if container["name"] != "web":
                    # The dispatcher serves its own port; with the variable set it would not.
                    assert "PROMETHEUS_MULTIPROC_DIR" not in env, name
                    continue
                directory = env["PROMETHEUS_MULTIPROC_DIR"]
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                mount = next(path for path in mounts if directory.startswith(path + "/"))
                volume = next(v for v in template["spec"]["volumes"] if v["name"] == mounts[mount])
                assert "emptyDir" in volume


def test_grace_periods_cover_the_in_flight_work(chart: helm.Chart, production_values: dict[str, Any]) -> None:
    docs = objects(chart, production_values)
    web = named(docs, "Deployment", "lr-leadrelay-web")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in web["containers"][0]["env"]}
    pre_stop = int(web["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    assert web["terminationGracePeriodSeconds"] > int(env["GUNICORN_GRACEFUL_TIMEOUT"]) + pre_stop
    dispatcher = named(docs, "Deployment", "lr-leadrelay-dispatcher")["spec"]["template"]["spec"]
    assert (
        dispatcher["terminationGracePeriodSeconds"]
        == production_values["dispatcher"]["terminationGracePeriodSeconds"]
    )
    with pytest.raises(helm.HelmError, match="web.terminationGracePeriodSeconds"):
        render(chart, {"web": {"terminationGracePeriodSeconds": 20, "gracefulTimeoutSeconds": 25}})
    with pytest.raises(helm.HelmError, match="embedded.terminationGracePeriodSeconds"):
        render(chart, {"mode": "embedded", "embedded": {"terminationGracePeriodSeconds": 30}})


def pod_environ(container: dict[str, Any], from_secret: dict[str, str]) -> dict[str, str]:
    """The environment a container would see: its plain values, a placeholder for each
    secretKeyRef, and `from_secret` standing in for the keys of `existingSecret`."""
    env = dict(from_secret)
    for item in container["env"]:
        env[item["name"]] = item["value"] if "value" in item else f"placeholder-{item['name'].lower()}"
    if not env.get("LEADRELAY__REDIS__URL", "redis").startswith("redis"):
        env["LEADRELAY__REDIS__URL"] = "redis://redis-from-secret:6379/0"
    if env.get("LEADRELAY__DATABASE__URL", "postgresql").startswith("placeholder"):
        env["LEADRELAY__DATABASE__URL"] = "postgresql://leadrelay@pg-from-secret:5432/leadrelay"
    return env


def test_the_config_map_is_a_valid_leadrelay_config(
    chart: helm.Chart, production_values: dict[str, Any], tmp_path: Path
) -> None:
    # What operators put in `existingSecret` (docs/deploy.md), including Redis' URL.
    from_secret = {
        **SECRETS,
        "LEADRELAY__REDIS__URL": "redis://redis-from-secret:6379/0",
        "LEADRELAY__DATABASE__URL": "postgresql://leadrelay@pg-from-secret:5432/leadrelay",
    }
    for label, values in variants(production_values).items():
        docs = objects(chart, values)
        path = tmp_path / f"{label}.yaml"
        path.write_text(named(docs, "ConfigMap", "lr-leadrelay")["data"]["leadrelay.yaml"])
        for name, template in pod_templates(docs):
            for container in template["spec"]["containers"]:
                # The app's own loader, as the pod runs it: the mounted file plus the pod's env.
                config = load_config(path, environ=pod_environ(container, from_secret))
                assert config["sandbox"] == "off", label  # never simulators in a cluster
                assert config["mode"] == ("embedded" if label == "embedded" else "distributed")
                assert config["storage"]["path"].startswith("/var/lib/leadrelay/"), name
                assert config["server"]["metrics_port"] == 9100
    prod = yaml.safe_load(
        named(objects(chart, production_values), "ConfigMap", "lr-leadrelay")["data"]["leadrelay.yaml"]
    )
    assert prod["kafka"]["bootstrap_servers"] == production_values["kafka"]["bootstrapServers"]
    assert "redis" not in prod.get("dedup", {}).get("backend", "")  # dedup lives in PostgreSQL
    assert prod["providers"]["leadsquared"]["field_map"] == {"city": "mx_City"}


def test_config_changes_roll_the_pods(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        web = named(objects(chart, values), "Deployment", "lr-leadrelay-web")
        return web["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(None) != checksum({"config": {"logging": {"level": "DEBUG"}}})


def test_containers_run_commands_the_image_has(chart: helm.Chart, production_values: dict[str, Any]) -> None:
    from tests.deploy.conftest import dockerfile_cmd

    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    seen: set[str] = set()
    for values in (None, production_values, {"mode": "embedded"}):
        for _, template in pod_templates(objects(chart, values)):
            for container in template["spec"]["containers"]:
                argv = container["command"] + container.get("args", [])
                if argv[0] == "gunicorn":
                    assert argv == dockerfile_cmd()
                else:
                    assert argv[0] == "leadrelay"
                    seen.add(argv[1])
    assert seen == {"dispatch", "kafka-dispatch", "consume-sources"}
    # Every sub-command the chart runs exists, except the Kafka ones while the distributed
    # mode (issue 5) is not merged; once it is, they are checked here too.
    assert seen - subcommands <= {"kafka-dispatch", "consume-sources"}, seen - subcommands


# ---- values.schema.json -----------------------------------------------------------------


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"mode": "cluster"}, "/mode"),
    ({"web": {"replicas": 0}}, "/web/replicas"),
    ({"web": {"workers": "4"}}, "/web/workers"),
    ({"image": {"tag": 1.2}}, "/image/tag"),
    ({"replicaCount": 3}, "replicaCount"),
    ({"dispatcher": {"replica": 3}}, "replica"),
    ({"existingSecret": "Leadrelay_Secrets"}, "/existingSecret"),
    ({"securityContext": {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": False}}, "readOnlyRootFilesystem"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    ({"ingress": {"enabled": True}}, "/ingress/hosts"),
    ({"dispatcher": {"keda": {"enabled": True}}}, "/kafka/bootstrapServers"),
    ({"mode": "embedded", "web": {"autoscaling": {"enabled": True}}}, "/web/autoscaling/enabled"),
    ({"metrics": {"port": 80}}, "/metrics/port"),
    ({"web": {"resources": {"requests": {"cpu": "lots"}}}}, "/web/resources/requests/cpu"),
    ({"config": {"logging": {"level": "LOUD"}}}, "/config/logging/level"),
    ({"config": {"sever": {}}}, "invalid propertyName 'sever'"),
    # Secrets have no place in values: every secret-looking key must stay empty.
    ({"config": {"providers": {"leadsquared": {"type": "leadsquared", "access_key": LSQ_ACCESS_KEY}}}},
     "/config/providers/leadsquared/access_key"),
    ({"config": {"providers": {"leadsquared": {"type": "leadsquared", "secret_key": LSQ_SECRET_KEY}}}},
     "/config/providers/leadsquared/secret_key"),
    ({"config": {"sources": {"generic": {"type": "generic", "secrets": [SIGNING_SECRET]}}}},
     "/config/sources/generic/secrets"),
    ({"config": {"server": {"admin_token": ADMIN_TOKEN}}}, "/config/server/admin_token"),
    ({"config": {"kafka": {"sasl_plain_password": "hunter22"}}}, "/config/kafka/sasl_plain_password"),
    ({"config": {"providers": {"x": {"type": "leadsquared", "base_url": "https://u:pw@lsq.example"}}}},
     "/config/providers/x/base_url"),
    ({"redis": {"url": "redis://:hunter22@redis:6379/0"}}, "/redis/url"),
    ({"extraEnv": [{"name": "LEADRELAY__SERVER__ADMIN_TOKEN", "value": ADMIN_TOKEN}]}, "/extraEnv/0/name"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert where in str(caught.value)
    # And Helm refuses to render them, as `helm install` would.
    with pytest.raises(helm.HelmError):
        chart.render(values, name="lr", namespace="leads")


def test_schema_accepts_the_shipped_values(chart: helm.Chart, production_values: dict[str, Any]) -> None:
    chart.validate_schema(None)
    chart.validate_schema(production_values)
    chart.validate_schema({"mode": "embedded"})


# ---- secrets ------------------------------------------------------------------------------


def test_no_rendered_object_carries_a_secret(chart: helm.Chart, production_values: dict[str, Any]) -> None:
    secret_values = [LSQ_ACCESS_KEY, LSQ_SECRET_KEY, SIGNING_SECRET, ADMIN_TOKEN, "hunter22"]
    for label, values in variants(production_values).items():
        docs = objects(chart, values)
        assert not by_kind(docs, "Secret"), label
        text = json.dumps(docs) + notes(chart, values)
        for secret in secret_values:
            assert secret not in text, (label, secret)
        for name, template in pod_templates(docs):
            for container in template["spec"]["containers"]:
                for env in container["env"]:
                    # Secret-looking variables only ever come from a secretKeyRef.
                    if re.search(r"SECRET|TOKEN|PASSWORD|_KEY$", env["name"]):
                        assert "secretKeyRef" in env.get("valueFrom", {}), (name, env)
    prod = objects(chart, production_values)
    web = named(prod, "Deployment", "lr-leadrelay-web")["spec"]["template"]["spec"]["containers"][0]
    assert web["envFrom"] == [{"secretRef": {"name": "leadrelay-secrets"}}]
    assert {
        "name": "LEADRELAY__REDIS__URL",
        "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "url"}},
    } in web["env"]
    # NOTES.txt tells operators exactly which keys the Secret needs (the ones the tests use).
    for name in SECRETS:
        assert name in notes(chart)


def test_notes_warn_when_no_secret_is_named(chart: helm.Chart) -> None:
    assert "no `existingSecret` is set" in notes(chart)
    assert "no `existingSecret` is set" not in notes(chart, {"existingSecret": "leadrelay-secrets"})


def test_names_and_labels_fit_kubernetes_limits_for_the_longest_release_name(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    release = "r" * 53  # Helm's maximum release name
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    for values in (production_values, {"mode": "embedded"}):
        out = chart.render(values, name=release, namespace="leads")
        docs = [
            d
            for path, text in out.items()
            if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text)
            if d
        ]
        names = [d["metadata"]["name"] for d in docs]
        assert len(set(zip([d["kind"] for d in docs], names, strict=True))) == len(docs), "names collide"
        for doc in docs:
            assert dns_label.match(doc["metadata"]["name"]), doc["metadata"]["name"]
            for value in doc["metadata"].get("labels", {}).values():
                assert len(value) <= 63, value


def test_the_values_examples_in_the_docs_install(chart: helm.Chart) -> None:
    """docs/deploy.md's values snippets (the minimal file, source bindings, Strimzi TLS)
    pass the schema and render objects that validate."""
    from tests.deploy.conftest import ROOT

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    snippets = [doc for b in blocks for doc in yaml.safe_load_all(b)]
    values_snippets = [s for s in snippets if isinstance(s, dict) and "apiVersion" not in s]
    assert len(values_snippets) >= 3
    merged: dict[str, Any] = {}
    for snippet in values_snippets:
        chart.validate_schema(snippet)
        merged = deep_merge(merged, snippet)
    chart.validate_schema(merged)
    for doc in objects(chart, merged):
        if (doc["apiVersion"], doc["kind"]) not in CRD_KINDS:
            kv.validate(doc, KUBE_VERSION, strict=True)


def test_the_packaged_chart_renders_and_leaves_ci_files_out(tmp_path: Path) -> None:
    archive = helm.package(CHART, destination=tmp_path)
    with helm.Chart.load(archive) as packaged:
        assert packaged.metadata["kubeVersion"] == f">={OLDEST_KUBE_VERSION}-0"
        assert not [f for f in packaged.files if f["name"].startswith("ci/")]
        assert named(objects(packaged), "Deployment", "lr-leadrelay-web")


def test_hpa_needs_a_cpu_request(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmError, match="requests.cpu"):
        # null deletes a default in Helm values: here the CPU request.
        render(chart, {"web": {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}}})


def test_network_policy_opens_only_what_leadrelay_uses(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    docs = objects(chart, production_values)
    policy = named(docs, "NetworkPolicy", "lr-leadrelay")["spec"]
    pods = [t["metadata"]["labels"] for _, t in pod_templates(docs)]
    assert all(policy["podSelector"]["matchLabels"].items() <= labels.items() for labels in pods)
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    web_rule, metrics_rule = policy["ingress"]
    assert web_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert web_rule["from"] == production_values["networkPolicy"]["webFrom"]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics_rule["from"] == production_values["networkPolicy"]["metricsFrom"]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (9093, "TCP"), (6379, "TCP")}
    # The Kafka port the values name is one the policy lets out.
    assert int(production_values["kafka"]["bootstrapServers"].rsplit(":", 1)[1]) in {
        p for p, _ in egress_ports
    }
    # Defaults: scraping from any namespace of the cluster, never from outside it.
    default = named(objects(chart), "NetworkPolicy", "lr-leadrelay")["spec"]
    assert default["ingress"][1]["from"] == [{"namespaceSelector": {}}]


def test_schema_knows_every_config_section_of_the_app(chart: helm.Chart) -> None:
    """`config` in values is checked against the app's own top-level sections: a section
    added to service/config/sections.py must be added to values.schema.json too (and the reverse)."""
    from service.config.sections import ConfigSchema

    allowed = set(chart.schema["properties"]["config"]["propertyNames"]["enum"])
    assert allowed == set(ConfigSchema().fields) - {"sandbox_active"}  # set by `leadrelay serve` only


def test_alert_rules_use_metrics_the_app_exports(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    from prometheus_client import REGISTRY

    import service.metrics  # noqa: F401 - registers the app's metrics

    rules = named(objects(chart, production_values), "PrometheusRule", "lr-leadrelay")["spec"]["groups"][0][
        "rules"
    ]
    exported = set(REGISTRY._names_to_collectors)
    alerts = {rule["alert"]: rule["expr"] for rule in rules}
    assert set(alerts) == {
        "LeadrelayCircuitOpen",
        "LeadrelayDeadLetters",
        "LeadrelayBacklogOld",
        "LeadrelayConsumerLag",
    }
    for expr in alerts.values():
        names = set(re.findall(r"leadrelay_[a-z_]+", expr))
        assert names and names <= exported, (expr, names - exported)
    assert "leadrelay_breaker_state" in alerts["LeadrelayCircuitOpen"]


def test_database_url_comes_from_a_secret_and_a_hook_job_migrates(
    chart: helm.Chart, production_values: dict[str, Any]
) -> None:
    values = {**production_values, "database": {"secretName": "lr-pg", "secretKey": "uri"}}
    docs = objects(chart, values)
    for name, template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            found = [e for e in container["env"] if e["name"] == "LEADRELAY__DATABASE__URL"]
            assert found == [
                {
                    "name": "LEADRELAY__DATABASE__URL",
                    "valueFrom": {"secretKeyRef": {"name": "lr-pg", "key": "uri"}},
                }
            ], name
    job = named(docs, "Job", "lr-leadrelay-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == ["leadrelay", "migrate"]
    assert {
        "name": "LEADRELAY__DATABASE__URL",
        "valueFrom": {"secretKeyRef": {"name": "lr-pg", "key": "uri"}},
    } in (container["env"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "postgresql://" not in json.dumps(docs)  # the URL is never rendered
    policy = named(objects(chart, None), "NetworkPolicy", "lr-leadrelay")  # the default ports
    assert {"port": 5432, "protocol": "TCP"} in policy["spec"]["egress"][1]["ports"]
    assert by_kind(objects(chart, {"mode": "embedded"}), "Job") == []
