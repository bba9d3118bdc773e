"""Checked against the real thing: a real Prometheus scrapes a real ``museflow worker`` on the real broker.

Every query of both generated dashboards and every inner expression of every alert rule must
return data from Prometheus once traffic has flowed; then the worker is stopped, N events are
produced, and the lag (CLI, in-process collector, and a lag-role worker's /metrics) equals N.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from museflow.agents.hot import hot_group
from museflow.cli.main import _SUBCOMMANDS
from museflow.config import Settings
from museflow.kafka.lag import LagCollector, read_lag
from museflow.observe import alerts, dashboards

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
WORKER_AVAILABLE = "worker" in _SUBCOMMANDS and importlib.util.find_spec("museflow.agents.worker") is not None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary missing: apt-get install prometheus"),
    pytest.mark.skipif(not WORKER_AVAILABLE, reason="`museflow worker` is not available in this tree yet"),
]

TENANTS = ("acme-bank", "globex-pay", "initech-fin")
N_LAG = 173


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local test URLs
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def museflow(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    out = subprocess.run([sys.executable, "-c", "from museflow.cli.main import main; main()", *args], env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, f"museflow {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def wait_for(url: str, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
        if http_get(url)[0] == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not ready at {url} within {timeout}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced the way Grafana would (all tenants, 1m)."""
    return expr.replace("$__rate_interval", "1m").replace("$tenant", ".*")


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MUSEFLOW_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MUSEFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "MUSEFLOW_APP_ID": settings.app_id,
        "MUSEFLOW_DATA_DIR": settings.data_dir,
        "MUSEFLOW_MODEL_DIR": settings.model_dir,
        "MUSEFLOW_BROKER_SESSION_TIMEOUT_SECONDS": "6",
        "MUSEFLOW_NEW_GROUP_START": "earliest",
        "MUSEFLOW_REFIT_INTERVAL_SECONDS": "3",
        "MUSEFLOW_REFIT_MIN_SAMPLES": "300",
        "MUSEFLOW_REFIT_MIN_TAIL_SAMPLES": "3",
    }


@pytest.fixture
def deployed(env: dict[str, str], settings: Settings) -> dict[str, str]:
    """Demo models trained and deployed, routes for three tenants (a shadow on card-not-present)."""
    museflow(env, "models", "train-demo", "--out", settings.model_dir, "--events", "20000")
    museflow(env, "topics", "create")
    for spec in sorted(p for p in Path(settings.model_dir).glob("*.yaml") if p.name != "routes.yaml"):
        museflow(env, "models", "deploy", str(spec))
    for tenant in TENANTS:
        museflow(env, "routes", "set", "--tenant", tenant, "--intent", "card-not-present", "--champion",
                 "fraud-cnp@1", "--shadow", "fraud-cnp@2:0.5", "--watch", "0.9", "--watch", "0.99")
        museflow(env, "routes", "set", "--tenant", tenant, "--intent", "account-takeover", "--champion", "ato@1",
                 "--watch", "0.95")
    return env


MAIN_ROLES = "router,scorer,label-join,lag"


@pytest.fixture
def worker(deployed: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """The pipeline worker (router, scorer, label-join, lag) and a refit worker with its own group.

    Refit runs apart because, embedded, the maps it publishes never reach the map gauges (the
    refitter's store is the state's store, so the follower sees them as replays); see the report.
    """
    port, refit_port = free_port(), free_port()
    log, refit_log = tmp_path / "worker.log", tmp_path / "refit-worker.log"
    cli = [sys.executable, "-c", "from museflow.cli.main import main; main()", "worker", "--roles"]
    proc = start([*cli, MAIN_ROLES], {**deployed, "MUSEFLOW_METRICS_PORT": str(port)}, log)
    refit = start([*cli, "refit"], {**deployed, "MUSEFLOW_METRICS_PORT": str(refit_port),
                                    "MUSEFLOW_APP_ID": deployed["MUSEFLOW_APP_ID"] + "-refit"}, refit_log)
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", "museflow worker", proc, log)
        wait_for(f"http://127.0.0.1:{refit_port}/readyz", "museflow refit worker", refit, refit_log)
        yield proc, port, refit_port
    finally:
        stop(proc)
        stop(refit)


@pytest.fixture
def prometheus(worker: tuple[subprocess.Popen[bytes], int, int], tmp_path: Path) -> Iterator[str]:
    _, target_port, refit_port = worker
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/alerts.yml")],
        "scrape_configs": [{"job_name": "museflow",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}",
                                                             f"127.0.0.1:{refit_port}"]}]}],
    }))
    log = tmp_path / "prometheus.log"
    assert PROMETHEUS is not None
    proc = start([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"], os.environ.copy(),
                 log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/-/ready", "prometheus", proc, log, timeout=60)
        yield url
    finally:
        stop(proc)


def query(prometheus_url: str, expr: str) -> list[dict[str, object]]:
    status, body = http_get(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert status == 200, f"{expr}: HTTP {status} {body[:500]}"
    answer = json.loads(body)
    assert answer["status"] == "success", f"{expr}: {answer}"
    return list(answer["data"]["result"])


def all_queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for stem, board in dashboards.dashboards().items():
        for title, expr in dashboards.queries(board):
            found[f"{stem}: {title}: {expr}"] = concrete(expr)
    for rule in alerts.rules():
        for check in rule.checks:
            found[f"alert {rule.name}: {check}"] = check
    return found


def test_every_dashboard_query_and_alert_expression_returns_data_and_lag_equals_n(
        deployed: dict[str, str], worker: tuple[subprocess.Popen[bytes], int, int], prometheus: str,
        settings: Settings, tmp_path: Path) -> None:
    museflow(deployed, "produce", "--duration", "25", "--rate", "300", "--labels", "--label-delay", "1",
             "--label-exit", "flush", "--bad-fraction", "0.02", "-q", timeout=120)

    pending = all_queries()
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for name, expr in list(pending.items()):
            if query(prometheus, expr):
                del pending[name]
        if pending:
            time.sleep(2)
    assert not pending, "queries without data from Prometheus:\n" + "\n".join(sorted(pending))

    loaded = json.loads(http_get(f"{prometheus}/api/v1/rules")[1])
    names = {r["name"] for g in loaded["data"]["groups"] for r in g["rules"]}
    assert names == {r.name for r in alerts.rules()}, "Prometheus did not load every generated rule"

    # Lag: the worker commits and stops, N more events arrive, the broker's view says N. The events
    # topic is consumed by the router's batch loop in its own group (museflow.agents.hot.hot_group).
    group = hot_group(settings, "router")
    proc = worker[0]
    events = settings.topics.events
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(r.lag for r in read_lag(settings, [group]) if r.topic == events) == 0:
            break
        time.sleep(1)
    stop(proc)
    museflow(deployed, "produce", "-n", str(N_LAG), "-q", "--seed", "7")

    reading = json.loads(museflow(deployed, "lag", "--json", "--group", group))
    totals = {(t["group"], t["topic"]): t["lag"] for t in reading["totals"]}
    assert totals[(group, events)] == N_LAG

    registry = CollectorRegistry()
    LagCollector(settings, [group], registry=registry).refresh()
    assert registry.get_sample_value("museflow_consumer_lag_sum",
                                     {"group": group, "topic": events}) == N_LAG

    port = free_port()
    log = tmp_path / "lag-worker.log"
    # The lag role alone (no Faust app): it discovers every <app id>-* group of the deployment.
    lag_worker = start([sys.executable, "-c", "from museflow.cli.main import main; main()", "worker",
                        "--roles", "lag"], {**deployed, "MUSEFLOW_METRICS_PORT": str(port)}, log)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", "lag worker", lag_worker, log)
        exported = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and exported != N_LAG:
            body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    if (sample.name == "museflow_consumer_lag_sum" and sample.labels.get("topic") == events
                            and sample.labels.get("group") == group):
                        exported = sample.value
            time.sleep(1)
        assert exported == N_LAG, f"lag role exported {exported}, expected {N_LAG}:\n{log.read_text()[-3000:]}"
    finally:
        stop(lag_worker)
