"""docker-compose.yml, the Dockerfile and the monitoring files, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (vendored from
compose-go, see schemas/README.md) after variable interpolation, as `docker compose config`
does; then every path, port, command, image tag and dependency it names is checked against the
repository, the museflow CLI and the settings museflow reads.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from museflow.cli.main import _SUBCOMMANDS
from museflow.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
SETTINGS_ENV = {f"MUSEFLOW_{f.name.upper()}" for f in fields(Settings)}
ROLES = {"router", "scorer", "refit", "label-join", "lag"}
# The museflow CLI contract the deployment relies on: command path -> options it may pass.
CLI_CONTRACT: dict[tuple[str, ...], set[str]] = {
    ("worker",): {"--roles", "--models"},
    ("topics", "create"): set(),
    ("models", "deploy"): set(),
    ("models", "train-demo"): {"--out"},
    ("routes", "set"): {"-f"},
    ("produce",): {"--rate", "--duration"},
}
# What each third-party container listens on (their images' documented ports).
LISTENS = {"prometheus": {9090}, "grafana": {3000}}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$\$")


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $$."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, op, default = m.group(1), m.group(2), m.group(3) or ""
            value = env.get(name)
            if (op == ":-" and not value) or (op == "-" and value is None):
                return default
            return value or ""
        return _VAR.sub(sub, node)
    return node


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())  # safe_load resolves the `<<` merge keys
    return dict(interpolate(raw, {}))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def museflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if s.get("build")}


def _duration(value: str) -> bool:
    return re.fullmatch(r"([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+", value) is not None


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    checker = jsonschema.FormatChecker()
    checker.checks("duration")(_duration)  # compose-go registers the same custom format
    validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_schema_validation_is_not_vacuous(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(compose))
    broken["services"]["kafka"]["helthcheck"] = broken["services"]["kafka"].pop("healthcheck")
    assert any("helthcheck" in e.message for e in validator.iter_errors(broken))


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image} has no tag"
        assert tag != "latest" and re.fullmatch(r"v?[0-9]+\.[0-9]+\.[0-9]+[-.\w]*", tag), f"{name}: {image} not pinned"
    assert re.fullmatch(r"apache/kafka:4\.1\.[0-9]+", services["kafka"]["image"])
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, svc in museflow_services(services).items():
        assert svc["image"] == f"museflow:{version}", f"{name}: tag the built image with the package version"


def test_dockerfile_base_user_entrypoint_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.[0-9]+-slim-bookworm", base.group(1)), "pinned slim base"
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["museflow"\]$', text, re.M)
    assert re.search(r'^CMD \["worker"\]$', text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    installs = [i.strip(" \\") for i in re.findall(r"pip install ([^\n&]+)", code)]
    assert installs == ["."], f"runtime deps only (`pip install .`, no extras): {installs}"
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a parent of it."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        pat_re = pat.replace("**/", "")
        if any(fnmatch(p, pat) or (pat.startswith("**/") and fnmatch(p.split("/")[-1], pat_re)) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_pip_install_needs_and_drops_the_rest() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = ["pyproject.toml", project["project"]["readme"], *wheel["packages"], *wheel.get("force-include", {})]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for need in needed:
        files = [f for f in tracked if f == need or f.startswith(need.rstrip("/") + "/")]
        assert files, f"{need} is not in the repository"
        kept = [f for f in files if not _dockerignored(f, patterns)]
        assert kept, f".dockerignore drops {need}, which `pip install .` needs"
    for junk in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "museflow/__pycache__/x.pyc"):
        assert _dockerignored(junk, patterns), f".dockerignore keeps {junk}"


def test_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if build := svc.get("build"):
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount source {source} does not exist"
    for required in ("deploy/prometheus/prometheus.yml", "deploy/grafana/dashboards",
                     "deploy/grafana/provisioning/datasources", "deploy/grafana/provisioning/dashboards"):
        assert (ROOT / required).exists(), required


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
            if not v.startswith((".", "/"))}
    assert used == set(compose["volumes"])


def _ports(svc: dict[str, Any]) -> list[tuple[int, int]]:
    """Published ports as (host, container); every one is bound to the host's loopback only."""
    out = []
    for spec in svc.get("ports", []):
        assert isinstance(spec, str) and re.fullmatch(r"127\.0\.0\.1:[0-9]+:[0-9]+(/tcp)?", spec), \
            f"{spec}: publish on 127.0.0.1 only (a bare HOST:CONTAINER listens on every interface)"
        host, container = (int(p) for p in spec.split("/")[0].split(":")[1:])
        assert 1 <= host <= 65535 and 1 <= container <= 65535
        out.append((host, container))
    return out


def test_ports_are_valid_unique_and_listened_on(services: dict[str, dict[str, Any]]) -> None:
    host_ports = [h for s in services.values() for h, _ in _ports(s)]
    assert len(host_ports) == len(set(host_ports)), "host port published twice"
    kafka_env = services["kafka"]["environment"]
    kafka_listens = {int(p) for p in re.findall(r":([0-9]+)", kafka_env["KAFKA_LISTENERS"])}
    advertised = dict(re.findall(r"([A-Z]+)://([^,]+)", kafka_env["KAFKA_ADVERTISED_LISTENERS"]))
    for host, container in _ports(services["kafka"]):
        assert container in kafka_listens
        assert advertised["EXTERNAL"] == f"localhost:{host}", "clients on the host are sent back to the published port"
    sr_env = services["schema-registry"]["environment"]
    for _, container in _ports(services["schema-registry"]):
        assert sr_env["SCHEMA_REGISTRY_LISTENERS"].endswith(f":{container}")
    for name, ports in LISTENS.items():
        assert {c for _, c in _ports(services[name])} <= ports
    bootstrap = {s["environment"]["MUSEFLOW_BOOTSTRAP_SERVERS"] for s in museflow_services(services).values()}
    assert bootstrap == {advertised["PLAINTEXT"]}
    assert advertised["PLAINTEXT"].split(":")[0] in services
    sr_url = {s["environment"]["MUSEFLOW_SCHEMA_REGISTRY_URL"] for s in museflow_services(services).values()}
    assert sr_url == {f"http://schema-registry:{_ports(services['schema-registry'])[0][1]}"}


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    env = services["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID is a base64 UUID"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from `museflow topics create`"


def test_museflow_env_is_what_settings_read(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in museflow_services(services).items():
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert set(env) <= SETTINGS_ENV, f"{name}: {set(env) - SETTINGS_ENV}"
        assert not {"MUSEFLOW_SASL_PASSWORD", "MUSEFLOW_SCHEMA_REGISTRY_PASSWORD"} & set(env)
        Settings.from_env(env)  # the values parse


def _commands(services: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Every museflow invocation: container commands and the lines of scripts they run."""
    out = []
    for name, svc in museflow_services(services).items():
        entrypoint = svc.get("entrypoint")
        if entrypoint is None:
            out.append((name, list(svc["command"])))
            continue
        script = next(a for a in entrypoint if a.endswith(".sh"))
        mount = next(v for v in svc["volumes"] if v.split(":")[1] == script)
        source = ROOT / mount.split(":")[0]
        text = source.read_text()
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("museflow "):
                out.append((f"{name}:{source.name}", shlex.split(line)[1:]))
    return out


def _split(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    for path in sorted(CLI_CONTRACT, key=len, reverse=True):
        if tuple(argv[: len(path)]) == path:
            return path, argv[len(path):]
    raise AssertionError(f"museflow {' '.join(argv)}: not a command of the CLI contract")


def test_every_command_is_in_the_cli_contract(services: dict[str, dict[str, Any]]) -> None:
    commands = _commands(services)
    seen_roles: set[str] = set()
    for where, argv in commands:
        path, rest = _split(argv)
        options = {a for a in rest if a.startswith("-")}
        assert options <= CLI_CONTRACT[path], f"{where}: unknown options {options - CLI_CONTRACT[path]}"
        if path == ("worker",):
            roles = set(rest[rest.index("--roles") + 1].split(","))
            assert roles <= ROLES, f"{where}: unknown roles {roles - ROLES}"
            assert len(roles) == 1, f"{where}: one role per container, as in production"
            seen_roles |= roles
        if path == ("produce",):
            assert float(rest[rest.index("--rate") + 1]) > 0 and float(rest[rest.index("--duration") + 1]) > 0
    assert seen_roles == ROLES, f"roles without a container: {ROLES - seen_roles}"
    assert {p for _, a in commands for p in [_split(a)[0]]} == set(CLI_CONTRACT)


def test_commands_that_exist_already_accept_their_arguments(services: dict[str, dict[str, Any]]) -> None:
    """Where the CLI already registers a command, `museflow <cmd> --help` must work and list the options."""
    checked = 0
    for where, argv in _commands(services):
        path, rest = _split(argv)
        if path[0] not in _SUBCOMMANDS:
            continue
        entry = "from museflow.cli.main import main; main()"  # the console script's body
        proc = subprocess.run([sys.executable, "-c", entry, *path, "--help"], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 0, f"{where}: museflow {' '.join(path)} --help failed:\n{proc.stderr}"
        for option in {a for a in rest if a.startswith("-")}:
            assert option in proc.stdout, f"{where}: museflow {' '.join(path)} has no option {option}"
        checked += 1
    if not checked:
        pytest.skip(f"none of the compose commands is registered in the CLI yet (registered: {sorted(_SUBCOMMANDS)})")


def test_dependency_order(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for dep, spec in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            target = services[dep]
            if condition == "service_healthy":
                has_check = "healthcheck" in target and not target["healthcheck"].get("disable")
                assert has_check, f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dep} is a one-shot: restart must be 'no'"
            else:
                raise AssertionError(f"{name}: depends_on {dep} with {condition}")
    order: list[str] = []
    pending = dict(services)
    while pending:
        ready = [n for n, s in pending.items() if set(s.get("depends_on", {})) <= set(order)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        order += sorted(ready)
        for n in ready:
            del pending[n]
    pos = {n: i for i, n in enumerate(order)}
    assert pos["kafka"] < pos["models"] < pos["topics"] < pos["publish"] < pos["router"] < pos["loadgen"]
    for worker in ("router", "scorer", "refit", "label-join", "lag"):
        deps = services[worker]["depends_on"]
        assert deps["topics"]["condition"] == "service_completed_successfully"
        assert deps["kafka"]["condition"] == "service_healthy"
    assert services["loadgen"]["profiles"] == ["load"]
    assert all("profiles" not in s for n, s in services.items() if n != "loadgen")


def test_workers_are_hardened_and_probe_readiness(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in museflow_services(services).items():
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        data_dir = svc["environment"]["MUSEFLOW_DATA_DIR"]
        assert any(t.split(":")[0] == data_dir for t in svc["tmpfs"]), f"{name}: writable data dir"
        model_dir = svc["environment"]["MUSEFLOW_MODEL_DIR"]
        assert any(v.split(":")[1] == model_dir for v in svc["volumes"]), f"{name}: model dir mounted"
        if not svc["healthcheck"].get("disable"):
            test = " ".join(svc["healthcheck"]["test"])
            assert f":{svc['environment']['MUSEFLOW_METRICS_PORT']}/readyz" in test


def test_prometheus_scrapes_every_worker_and_loads_the_alert_rules(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    mount = next(v for v in services["prometheus"]["volumes"] if v.startswith("./deploy/prometheus:"))
    in_container = mount.split(":")[1]
    assert f"--config.file={in_container}/prometheus.yml" in services["prometheus"]["command"]
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file: deploy/prometheus/alerts.yml
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "museflow"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    workers = {n for n, s in museflow_services(services).items() if "worker" in s.get("command", [])}
    assert {f"{n}:{services[n]['environment']['MUSEFLOW_METRICS_PORT']}" for n in workers} <= targets
    for target in targets:
        assert target.split(":")[0] in services, f"scrape target {target} is not a compose service"


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/run installs the Debian 'prometheus' package)")
    proc = subprocess.run([promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisioning(services: dict[str, dict[str, Any]]) -> None:
    volumes = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"] if v.startswith("."))
    assert volumes["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource_files = sorted((ROOT / "deploy/grafana/provisioning/datasources").glob("*.yml"))
    sources = [d for f in datasource_files for d in yaml.safe_load(f.read_text())["datasources"]]
    (prom,) = [d for d in sources if d["type"] == "prometheus"]
    assert prom["uid"] == "prometheus"
    assert prom["url"] == f"http://prometheus:{_ports(services['prometheus'])[0][1]}"
    providers = [p for f in sorted((ROOT / "deploy/grafana/provisioning/dashboards").glob("*.yml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert providers
    for provider in providers:
        assert provider["options"]["path"] == volumes["./deploy/grafana/dashboards"]
    for dashboard in (ROOT / "deploy/grafana/dashboards").glob("*.json"):  # generated elsewhere; may be none yet
        assert json.loads(dashboard.read_text()).get("uid"), f"{dashboard.name} has no stable uid"


def test_publish_script_is_posix_sh() -> None:
    script = ROOT / "deploy/compose/publish-demo.sh"
    assert os.access(script, os.X_OK)
    sh = shutil.which("sh")
    assert sh is not None
    proc = subprocess.run([sh, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
