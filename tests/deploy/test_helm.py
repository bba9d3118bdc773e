"""The Helm chart in deploy/helm/museflow, checked with the real helm and Kubernetes schemas.

Every ``ci/*-values.yaml`` scenario is linted (``helm lint --strict``) and rendered
(``helm template``); each rendered object is validated against the Kubernetes JSON schemas of
the oldest and newest Kubernetes versions the chart targets (strict: unknown fields fail), and
the ServiceMonitor / KEDA objects against their CRDs' schemas. Then the wiring users rely on is
checked: selectors, probes, env vars that museflow really reads, secrets only by reference,
KEDA triggers on the right consumer group and topics, hooks, the chart test and NOTES.txt.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from museflow.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "museflow"
SCHEMAS = Path(__file__).parent / "schemas"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ("1.29.0", "1.37.0")  # oldest still validated by kubernetes-validate we support, newest
SETTINGS_ENV = {f"MUSEFLOW_{f.name.upper()}" for f in fields(Settings)}
SECRET_ENV = {"MUSEFLOW_SASL_PASSWORD", "MUSEFLOW_SCHEMA_REGISTRY_PASSWORD"}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda.sh-v1alpha1.json",
}


def _find_helm() -> str | None:
    cached = Path.home() / ".cache" / "museflow" / "bin" / "helm"
    return shutil.which("helm") or (str(cached) if os.access(cached, os.X_OK) else None)


HELM = _find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None,
    reason="helm not found on PATH or in ~/.cache/museflow/bin (.ci/run installs it with `go install`)",
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(values: Path | None = None, *extra: str, chart: Path = CHART) -> list[dict[str, Any]]:
    args = ["template", "rel", str(chart), "--namespace", "scoring", "--kube-version", KUBE_VERSIONS[-1]]
    if values is not None:
        args += ["-f", str(values)]
    out = helm(*args, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def scenario_values(path: Path) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    override = yaml.safe_load(path.read_text()) or {}

    def merge(base: Any, top: Any) -> Any:
        if isinstance(base, dict) and isinstance(top, dict):
            out = dict(base)
            for k, v in top.items():
                out[k] = merge(base.get(k), v)
            return out
        return top

    return merge(defaults, override)


def test_scenarios_cover_the_issue() -> None:
    names = {p.name for p in SCENARIOS}
    assert {"default-values.yaml", "sasl-tls-values.yaml", "keda-servicemonitor-values.yaml",
            "scorer-groups-values.yaml"} <= names


# ---------------------------------------------------------------- values.schema.json / values.yaml


def _values_schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def test_values_schema_is_strict_at_every_object_level() -> None:
    schema = _values_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    loose: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                ap = node.get("additionalProperties")
                open_map = (isinstance(ap, dict) and ap.get("type") == "string") or (
                    isinstance(ap, dict) and "type" in ap)
                passthrough = where.startswith("properties.affinity.properties.") or where == "properties.global"
                if ap is not False and not open_map and not passthrough:
                    loose.append(where or "<root>")
            for key, value in node.items():
                if key not in ("allOf", "if", "then", "else", "not"):  # constraints, not object shapes
                    walk(value, f"{where}.{key}" if where else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(schema, "")
    assert not loose, f"objects without additionalProperties: false: {loose}"


def test_values_yaml_and_scenarios_satisfy_the_schema() -> None:
    validator = jsonschema.Draft7Validator(_values_schema())
    for path in [CHART / "values.yaml", *SCENARIOS]:
        values = scenario_values(path) if path in SCENARIOS else yaml.safe_load(path.read_text())
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(values)]
        assert not errors, f"{path.name}: {errors}"


def test_schema_and_values_yaml_name_the_same_keys() -> None:
    schema, values = _values_schema(), yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for k, v in node.items():
            out.add(prefix + k)
            if isinstance(v, dict) and v.get("properties") and v.get("additionalProperties") is False:
                out |= keys(v["properties"], f"{prefix}{k}.")
        return out

    def value_keys(node: dict[str, Any], schema_node: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for k, v in node.items():
            out.add(prefix + k)
            sub = schema_node.get("properties", {}).get(k, {})
            if isinstance(v, dict) and sub.get("properties"):
                out |= value_keys(v, sub, f"{prefix}{k}.")
        return out

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(schema["$defs"][node["$ref"].split("/")[-1]])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    resolved = resolve({k: v for k, v in schema.items() if k != "$defs"})
    in_schema = keys(resolved["properties"]) - {"global"}
    in_values = value_keys(values, resolved)
    assert in_values <= in_schema
    # every top-level setting of the schema has a documented default in values.yaml
    assert {k for k in in_schema if "." not in k} == {k for k in in_values if "." not in k}


def test_every_value_is_documented() -> None:
    """helm-docs semantics: a key with a `# --` comment documents its whole subtree; a key
    without one must be a plain section whose children are each documented."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_re = re.compile(r"^(\s*)(- )?([A-Za-z][\w.-]*):(\s|$)")
    undocumented: list[str] = []
    covered_below: int | None = None  # indentation of the nearest documented ancestor
    for i, line in enumerate(lines):
        m = key_re.match(line)
        if not m:
            continue
        indent = len(m.group(1)) + (2 if m.group(2) else 0)
        if covered_below is not None and indent > covered_below:
            continue
        covered_below = None
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        documented = j >= 0 and lines[j].strip().startswith("# --")
        rest = line[m.end():].strip()
        is_section = rest == "" and not documented
        if documented:
            covered_below = indent
        elif not is_section:
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert not undocumented, "values without a `# --` comment:\n" + "\n".join(undocumented)


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"kafak": {"bootstrapServers": "x:9092"}}, "unknown top-level key"),
        ({"router": {"replicas": 3}}, "unknown nested key"),
        ({"kafka": {"sasl": {"password": "hunter2"}}}, "inline SASL password"),
        ({"schemaRegistry": {"password": "hunter2"}}, "inline Schema Registry password"),
        ({"extraEnv": [{"name": "MUSEFLOW_SASL_PASSWORD", "value": "hunter2"}]}, "secret through extraEnv"),
        ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"username": "u"}}}, "SASL without existingSecret"),
        ({"schemaRegistry": {"url": "http://sr:8081", "username": "u"}}, "registry auth without existingSecret"),
        ({"models": {"existingClaim": "a", "existingConfigMap": "b"}}, "two model sources"),
        ({"scorerGroups": [{"name": "Bad_Name"}]}, "invalid group name"),
    ],
)
def test_schema_rejects(override: dict[str, Any], why: str, tmp_path: Path) -> None:
    validator = jsonschema.Draft7Validator(_values_schema())
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(override))
    assert list(validator.iter_errors(scenario_values(values_file))), f"schema accepted: {why}"
    if HELM is not None:  # and helm itself refuses to render it
        proc = helm("template", "rel", str(CHART), "-f", str(values_file), "--kube-version", KUBE_VERSIONS[-1],
                    check=False)
        assert proc.returncode != 0, f"helm rendered values with {why}"
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- helm lint / template / schemas


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_helm_lint(values: Path) -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(values), "--kube-version", KUBE_VERSIONS[-1])
    assert "0 chart(s) failed" in out.stdout


def _strict_crd_schema(node: Any) -> Any:
    """A CRD's structural schema with unknown fields refused, as `kubectl --validate=strict` does."""
    if isinstance(node, dict):
        node = {k: _strict_crd_schema(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict_crd_schema(v) for v in node]
    return node


def validate_object(doc: dict[str, Any], kube_version: str) -> None:
    import kubernetes_validate

    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        schema = _strict_crd_schema(json.loads((SCHEMAS / "crds" / crd).read_text()))
        schema["properties"]["metadata"] = {"$ref": "#/$defs/meta"}
        schema["$defs"] = {"meta": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
            "namespace": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
            "additionalProperties": False}}
        jsonschema.Draft7Validator(schema).validate(doc)
        return
    kubernetes_validate.validate(doc, kube_version, strict=True)


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_rendered_manifests_validate_against_kubernetes_schemas(values: Path) -> None:
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a dev dependency)")
    docs = render(values)
    assert docs
    for kube_version in KUBE_VERSIONS:
        failures = []
        for doc in docs:
            try:
                validate_object(doc, kube_version)
            except Exception as exc:
                failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {str(exc)[:400]}")
        assert not failures, f"Kubernetes {kube_version}:\n" + "\n".join(failures)


@needs_helm
def test_schema_validation_is_not_vacuous() -> None:
    """Negative controls: an unknown field fails both the Kubernetes and the CRD validation."""
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a dev dependency)")
    docs = render(CHART / "ci" / "keda-servicemonitor-values.yaml")
    deployment = copy.deepcopy(by_kind(docs, "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(Exception, match="livenesProbe"):
        validate_object(deployment, KUBE_VERSIONS[-1])
    for kind in ("ScaledObject", "ServiceMonitor"):
        obj = copy.deepcopy(by_kind(docs, kind)[0])
        obj["spec"]["minReplicas"] = 1
        with pytest.raises(jsonschema.ValidationError):
            validate_object(obj, KUBE_VERSIONS[-1])


# ---------------------------------------------------------------- wiring


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_one_deployment_per_role_with_probes_resources_and_hardening(values: Path) -> None:
    vals = scenario_values(values)
    docs = render(values)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    expected = {f"rel-museflow-scorer-{g['name']}": g for g in vals["scorerGroups"]}
    for key, role in (("router", "router"), ("refit", "refit"), ("labelJoin", "label-join"), ("lag", "lag")):
        if vals[key]["enabled"]:
            expected[f"rel-museflow-{role}"] = {"role": role}
    assert set(deployments) == set(expected)
    roles_seen = set()
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        args = container["args"]
        assert args[:2] == ["worker", "--roles"], args
        roles_seen.add(args[2])
        if args[2] == "scorer":
            group = expected[name]
            assert (args[4].split(",") if len(args) > 3 else []) == (group.get("models") or [])
            if vals["keda"]["enabled"]:
                assert "replicas" not in dep["spec"], "KEDA owns the scorer replica count"
            else:
                assert dep["spec"]["replicas"] == group.get("replicaCount", vals["scorerDefaults"]["replicaCount"])
        else:
            assert len(args) == 3
        port = vals["metrics"]["port"]
        assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["resources"]["requests"]["memory"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        env = {e["name"]: e for e in container["env"]}
        data_dir = env["MUSEFLOW_DATA_DIR"]["value"]
        assert "emptyDir" in volumes[mounts[data_dir]["name"]], "the data dir is an emptyDir"
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        model_mount = mounts[env["MUSEFLOW_MODEL_DIR"]["value"]]
        assert model_mount["readOnly"] is True
        assert {v["name"] for v in pod["volumes"]} == {m["name"] for m in container["volumeMounts"]}
    wanted = {"scorer"} | {r for k, r in (("router", "router"), ("refit", "refit"), ("labelJoin", "label-join"),
                                          ("lag", "lag")) if vals[k]["enabled"]}
    assert roles_seen == wanted


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_env_is_what_museflow_reads_and_secrets_are_only_referenced(values: Path) -> None:
    vals = scenario_values(values)
    docs = render(values)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    assert pods
    for pod in pods:
        for container in pod["containers"]:
            env = {e["name"]: e for e in container["env"]}
            unknown = set(env) - SETTINGS_ENV
            assert not unknown, f"env vars museflow.config.Settings does not read: {unknown}"
            assert env["MUSEFLOW_BOOTSTRAP_SERVERS"]["value"] == vals["kafka"]["bootstrapServers"]
            assert env["MUSEFLOW_APP_ID"]["value"] == (vals["appId"] or "rel-museflow")
            for name in SECRET_ENV & set(env):
                assert "value" not in env[name], f"{name} inlined"
            if vals["kafka"]["securityProtocol"].startswith("SASL"):
                ref = env["MUSEFLOW_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
                sasl = vals["kafka"]["sasl"]
                assert ref == {"name": sasl["existingSecret"], "key": sasl["passwordKey"]}
            else:
                assert "MUSEFLOW_SASL_PASSWORD" not in env
            if vals["schemaRegistry"]["username"]:
                ref = env["MUSEFLOW_SCHEMA_REGISTRY_PASSWORD"]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == vals["schemaRegistry"]["existingSecret"]
            if vals["kafka"]["tls"]["existingSecret"]:
                mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
                assert env["MUSEFLOW_SSL_CAFILE"]["value"].startswith(mounts["kafka-tls"] + "/")
            settings = Settings.from_env({k: v.get("value", "secret") for k, v in env.items()})
            assert settings.metrics_port == vals["metrics"]["port"]
    assert not by_kind(docs, "Secret"), "the chart never creates Secrets: they come from existingSecret"


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_services_pdbs_and_servicemonitor_select_the_workers(values: Path) -> None:
    vals = scenario_values(values)
    docs = render(values)
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    assert len(services) == len(deployments)
    for svc in services:
        matched = [d for d in deployments if selects(svc["spec"]["selector"], pod_labels(d))]
        assert [d["metadata"]["name"] for d in matched] == [svc["metadata"]["name"]]
        assert svc["spec"]["ports"] == [{"name": "metrics", "port": vals["metrics"]["port"],
                                         "targetPort": "metrics", "protocol": "TCP"}]
    pdbs = by_kind(docs, "PodDisruptionBudget")
    wanted = {f"rel-museflow-{role}" for key, role in (("router", "router"), ("refit", "refit"),
                                                      ("labelJoin", "label-join"), ("lag", "lag"))
              if vals[key]["enabled"] and vals[key]["podDisruptionBudget"]["enabled"]}
    default_pdb = vals["scorerDefaults"]["podDisruptionBudget"]["enabled"]
    wanted |= {f"rel-museflow-scorer-{g['name']}" for g in vals["scorerGroups"]
               if g.get("podDisruptionBudget", {}).get("enabled", default_pdb)}
    assert {p["metadata"]["name"] for p in pdbs} == wanted
    for pdb in pdbs:
        matched = [d for d in deployments if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(d))]
        assert len(matched) == 1, pdb["metadata"]["name"]
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    monitors = by_kind(docs, "ServiceMonitor")
    assert len(monitors) == int(vals["metrics"]["serviceMonitor"]["enabled"])
    for sm in monitors:
        selected = [s for s in services if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(selected) == len(services)
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"
        for k, v in vals["metrics"]["serviceMonitor"]["additionalLabels"].items():
            assert sm["metadata"]["labels"][k] == v


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_keda_scales_each_scorer_group_on_its_model_topics(values: Path) -> None:
    vals = scenario_values(values)
    docs = render(values)
    scaled = by_kind(docs, "ScaledObject")
    if not vals["keda"]["enabled"]:
        assert not scaled and not by_kind(docs, "TriggerAuthentication")
        return
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    auths = {a["metadata"]["name"]: a for a in by_kind(docs, "TriggerAuthentication")}
    assert len(scaled) == len(vals["scorerGroups"])
    prefix = vals["kafka"]["topicPrefix"]
    # metadata keys the KEDA kafka scaler reads (kedacore/keda v2.21.0 pkg/scalers/kafka_scaler.go)
    keda_kafka_keys = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                       "offsetResetPolicy", "sasl", "tls", "allowIdleConsumers", "excludePersistentLag"}
    for so, group in zip(scaled, vals["scorerGroups"], strict=True):
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        assert target["spec"]["template"]["spec"]["containers"][0]["args"][2] == "scorer"
        topics = [t["metadata"]["topic"] for t in so["spec"]["triggers"]]
        assert topics == [f"{prefix}museflow.model.{m}" for m in group["models"]]
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "kafka" and set(meta) <= keda_kafka_keys
            expected_group = f"{vals['appId'] or 'rel-museflow'}-scorer-{'+'.join(sorted(group['models']))}"
            assert meta["consumerGroup"] == expected_group  # agents.worker.group_id, --roles scorer --models
            assert meta["bootstrapServers"] == vals["kafka"]["bootstrapServers"]
            assert int(meta["lagThreshold"]) == vals["keda"]["lagThreshold"]
            if vals["kafka"]["securityProtocol"].startswith("SASL"):
                auth = auths[trigger["authenticationRef"]["name"]]["spec"]
                assert {r["parameter"] for r in auth["secretTargetRef"]} >= {"password"}
                (user,) = auth["env"]
                container_env = {e["name"] for e in target["spec"]["template"]["spec"]["containers"][0]["env"]}
                assert user["name"] in container_env and user["containerName"] == "museflow"
        assert so["spec"]["minReplicaCount"] == vals["keda"]["minReplicaCount"]
        assert so["spec"]["maxReplicaCount"] == vals["keda"]["maxReplicaCount"]


@needs_helm
def test_keda_refuses_a_scorer_group_without_models(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"keda": {"enabled": True}}))
    proc = helm("template", "rel", str(CHART), "-f", str(values), "--kube-version", KUBE_VERSIONS[-1], check=False)
    assert proc.returncode != 0
    assert "scorerGroups[default].models is empty" in proc.stderr


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_models_volume_topics_hook_and_chart_test(values: Path) -> None:
    vals = scenario_values(values)
    docs = render(values)
    configmaps = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}
    (job,) = by_kind(docs, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "create"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for owner in [*by_kind(docs, "Deployment"), job]:
        volumes = {v["name"]: v for v in owner["spec"]["template"]["spec"]["volumes"]}
        models = volumes["models"]
        if vals["models"]["existingClaim"]:
            assert models["persistentVolumeClaim"] == {"claimName": vals["models"]["existingClaim"], "readOnly": True}
        elif vals["models"]["existingConfigMap"]:
            assert models["configMap"]["name"] == vals["models"]["existingConfigMap"]
        else:
            cm = configmaps[models["configMap"]["name"]]
            assert set(cm.get("data", {})) == set(vals["models"]["files"])
            assert set(cm.get("binaryData", {})) == set(vals["models"]["binaryFiles"])
            if owner is job:  # its hook copy exists before the Job runs
                assert int(cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
                    annotations["helm.sh/hook-weight"])
    (test_pod,) = by_kind(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service_urls = {f"http://{s['metadata']['name']}:{vals['metrics']['port']}/metrics"
                    for s in by_kind(docs, "Service")}
    command = test_pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    compile(command[2], "chart-test", "exec")
    assert set(command[3:]) == service_urls


@needs_helm
@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.name)
def test_notes_name_resources_the_release_creates(values: Path, tmp_path: Path) -> None:
    """NOTES.txt rendered with the scenario's values (helm template skips NOTES, and
    `helm install --dry-run` needs a cluster, so it is rendered as a ConfigMap of a copy)."""
    chart = tmp_path / "museflow"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        '{{- define "test.notes" }}' + notes + "{{- end }}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\n"
        "data:\n  notes: {{ include \"test.notes\" . | toJson }}\n"
    )
    docs = render(values, chart=chart)
    text = next(d for d in docs if d["metadata"]["name"] == "rendered-notes")["data"]["notes"]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    kinds = {"deploy": "Deployment", "svc": "Service", "job": "Job"}
    refs = re.findall(r"\b(deploy|svc|job)/([a-z0-9-]+)", text)
    assert refs, text
    for short, name in refs:
        assert (kinds[short], name) in names, f"NOTES names {short}/{name}, which the chart does not create"
    for dep in by_kind(docs, "Deployment"):
        assert dep["metadata"]["name"] in text
    assert "helm test rel --namespace scoring" in text
    assert "-l app.kubernetes.io/instance=rel" in text
    assert vals_model_dir(values) in text


def vals_model_dir(values: Path) -> str:
    return str(scenario_values(values)["models"]["mountPath"])
