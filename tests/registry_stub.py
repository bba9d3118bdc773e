"""A small Confluent Schema Registry stand-in over HTTP(S), for tests that cannot run the real one.

It answers the part of the REST API confluent-kafka's ``SchemaRegistryClient`` uses with museflow:
``POST /subjects/{subject}/versions`` (register; the same schema text gets the same id under any
subject, as in the real registry) and ``GET /schemas/ids/{id}`` (look up; 404 with error code
40403 when unknown). Anything else is 404 (error code 404). Usage::

    registry = StubRegistry().start()          # or StubRegistry(ssl_context=ctx) for https
    settings = settings.replace(schema_registry_url=registry.url)
    registry.unavailable(20)                   # every request answers 503 for 20 s (None: until available())
    registry.available()
    registry.requests, registry.refused        # requests served, and how many of them got 503
    registry.stop()
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["StubRegistry"]


class StubRegistry:
    """An in-memory schema registry on 127.0.0.1 (a free port), with a switch that makes it answer 503."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.requests = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}
        self._down_until: float | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the stub registry is not started"
        host, port = self._server.server_address[:2]
        return f"{'https' if self.ssl_context is not None else 'http'}://{host!s}:{port}"

    def start(self) -> StubRegistry:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub._serve(self, "GET")

            def do_POST(self) -> None:
                stub._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="stub-registry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def unavailable(self, seconds: float | None = None) -> None:
        """Answer 503 to everything for ``seconds`` (None: until :meth:`available`)."""
        with self._lock:
            self._down_until = float("inf") if seconds is None else time.monotonic() + seconds

    def available(self) -> None:
        with self._lock:
            self._down_until = None

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` directly (as another producer would); returns its id."""
        with self._lock:
            schema_id = self._ids.get(schema)
            if schema_id is None:
                schema_id = self._ids[schema] = len(self._ids) + 1
                self._schemas[schema_id] = schema
            versions = self._subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def _down(self) -> bool:
        with self._lock:
            self.requests += 1
            down = self._down_until is not None and time.monotonic() < self._down_until
            if down:
                self.refused += 1
            return down

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = b""
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            body = handler.rfile.read(length)
        if self._down():
            self._answer(handler, 503, {"error_code": 50301, "message": "stub registry: unavailable"})
            return
        parts = [unquote(p) for p in urlsplit(handler.path).path.strip("/").split("/")]
        if method == "POST" and len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            try:
                schema = str(json.loads(body)["schema"])
            except (ValueError, KeyError, TypeError):
                self._answer(handler, 422, {"error_code": 42201, "message": "stub registry: invalid schema"})
                return
            self._answer(handler, 200, {"id": self.register(parts[1], schema)})
            return
        if method == "GET" and len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
            with self._lock:
                text = self._schemas.get(int(parts[2]))
            if text is None:
                self._answer(handler, 404, {"error_code": 40403, "message": "Schema not found"})
            else:
                self._answer(handler, 200, {"schema": text})
            return
        self._answer(handler, 404, {"error_code": 404, "message": f"stub registry: no {method} {handler.path}"})

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
