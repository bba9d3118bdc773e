"""The worker's HTTP endpoint: metrics with process metrics, liveness, readiness."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from museflow.observe.http_server import start_http_server
from museflow.observe.metrics import PipelineMetrics


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http URL of the test server
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_serves_the_registry_and_process_metrics_on_a_free_port() -> None:
    metrics = PipelineMetrics()
    metrics.events_in.labels("acme", "cnp").inc(3)
    server = start_http_server(metrics.registry, 0, lambda: True)
    try:
        assert server.port > 0
        status, body = get(f"{server.url}/metrics")
        assert status == 200
        assert 'museflow_events_in_total{intent="cnp",tenant="acme"} 3.0' in body
        assert "process_cpu_seconds_total" in body
        assert "# TYPE museflow_rebalances_total counter" in body
    finally:
        server.stop()


def test_process_metrics_are_not_duplicated_when_the_registry_has_them() -> None:
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    with start_http_server(registry) as server:
        status, body = get(f"{server.url}/metrics")
    assert status == 200
    assert body.count("# TYPE process_cpu_seconds_total counter") == 1


def test_readyz_follows_the_readiness_callable_and_healthz_is_always_ok() -> None:
    state = {"ready": False}
    with start_http_server(CollectorRegistry(), 0, lambda: state["ready"]) as server:
        assert get(f"{server.url}/healthz")[0] == 200
        assert get(f"{server.url}/readyz")[0] == 503
        state["ready"] = True
        assert get(f"{server.url}/readyz") == (200, "ready\n")
        assert get(f"{server.url}/nope")[0] == 404


def test_a_raising_readiness_check_means_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("model store unreachable")

    with start_http_server(CollectorRegistry(), 0, broken) as server:
        assert get(f"{server.url}/readyz")[0] == 503
        assert get(f"{server.url}/healthz")[0] == 200


def test_stop_releases_the_port() -> None:
    registry = CollectorRegistry()
    Counter("museflow_x_total", "x", registry=registry)
    server = start_http_server(registry)
    port = server.port
    server.stop()
    server.stop()
    again = start_http_server(registry, port)
    try:
        assert again.port == port
    finally:
        again.stop()


def test_openmetrics_is_served_when_asked_for() -> None:
    with start_http_server(PipelineMetrics().registry) as server:
        request = urllib.request.Request(f"{server.url}/metrics",  # noqa: S310 - the test server
                                         headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the test server
            body = response.read().decode()
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
