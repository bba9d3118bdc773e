"""Run ``museflow worker`` as a child process: for tests, the demo and the benchmarks.

Readiness is the worker's own ``/readyz`` (control topics applied, every role's agent started).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from museflow.config import Settings
from museflow.errors import MuseflowError

__all__ = ["WorkerProcess", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """One worker process with its own metrics port and log file."""

    def __init__(self, settings: Settings, *, roles: Sequence[str] = ("all",), models: Sequence[str] = (),
                 log_path: Path | None = None, metrics_port: int | None = None, loglevel: str = "warn",
                 start_from: str | None = None) -> None:
        self.metrics_port = metrics_port or free_port()
        self.settings = settings.replace(metrics_port=self.metrics_port, metrics_enabled=True)
        self.roles = tuple(roles)
        self.models = tuple(models)
        self.log_path = log_path or Path(self.settings.data_dir) / f"worker-{self.metrics_port}.log"
        self.loglevel = loglevel
        self.start_from = start_from
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.to_env()}
        cmd = [sys.executable, "-m", "museflow.cli.main", "worker", "--roles", ",".join(self.roles),
               "--loglevel", self.loglevel]
        if self.models:
            cmd += ["--models", ",".join(self.models)]
        if self.start_from:
            cmd += ["--from", self.start_from]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise MuseflowError(f"worker exited with {self.proc and self.proc.returncode}; log:\n{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError), \
                    urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return self
            time.sleep(0.2)
        raise MuseflowError(f"worker not ready within {timeout:.0f}s; log:\n{self.log_tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """``kill -9``: what a crash looks like to Kafka."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
