"""A worker's HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for Kubernetes.

Standard library ``ThreadingHTTPServer`` in a daemon thread, so a slow scrape never blocks the
event loop. ``/metrics`` serves the given registry plus the process collector (CPU, memory, open
files), unless the registry already carries process metrics. ``/healthz`` answers 200 while the
process serves at all; ``/readyz`` answers 200 only once ``ready()`` returns true (503 before,
and 503 if it raises).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector

__all__ = ["MetricsServer", "start_http_server"]

log = logging.getLogger(__name__)


class _WithProcess:
    """The worker's registry followed by process metrics (skipped when the registry has its own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._process = ProcessCollector(registry=None)

    def collect(self) -> Iterator[Metric]:
        names: set[str] = set()
        for metric in self._registry.collect():
            names.add(metric.name)
            yield metric
        for metric in self._process.collect():
            if metric.name not in names:
                yield metric


def _always_ready() -> bool:
    return True


class MetricsServer:
    """A running endpoint: ``port`` (the one bound, useful with port 0), ``url`` and :meth:`stop`."""

    def __init__(self, registry: CollectorRegistry, port: int = 0, ready: Callable[[], bool] = _always_ready,
                 host: str = "0.0.0.0") -> None:  # noqa: S104 - Prometheus scrapes from other hosts/pods
        exposed = CollectorRegistry(auto_describe=False)
        exposed.register(_WithProcess(registry))
        handler = _handler_class(exposed, ready)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"museflow-http-{self.port}",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - mapping, not binding
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_class(registry: CollectorRegistry, ready: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "museflow"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(registry), content_type)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                try:
                    is_ready = bool(ready())
                except Exception:  # a failing readiness probe means "not ready", never a crash
                    log.exception("readiness check raised")
                    is_ready = False
                self._send(200, b"ready\n") if is_ready else self._send(503, b"not ready\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def start_http_server(registry: CollectorRegistry, port: int = 0, ready: Callable[[], bool] = _always_ready,
                      host: str = "0.0.0.0") -> MetricsServer:  # noqa: S104 - see MetricsServer
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` (0 picks a free one) in a daemon thread."""
    return MetricsServer(registry, port, ready, host)
