"""`museflow kafka start|status|stop` from the shell, as the README documents them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

MUSEFLOW = [sys.executable, "-m", "museflow.cli.main"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MUSEFLOW, *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})}, check=False)


@pytest.mark.slow
def test_start_status_stop_and_cleanup_after_a_crash(tmp_path: Path) -> None:
    home = tmp_path / "broker"
    started = run("kafka", "start", "--name", "clitest", "--home", str(home))
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    assert bootstrap.startswith("127.0.0.1:")
    try:
        status = run("kafka", "status", "--name", "clitest", "--home", str(home), "--json")
        info = json.loads(status.stdout)
        assert status.returncode == 0 and info["state"] == "running" and info["bootstrap"] == bootstrap
        again = run("kafka", "start", "--name", "clitest", "--home", str(home))
        assert again.returncode == 1 and "already running" in again.stderr

        os.killpg(info["pid"], signal.SIGKILL)  # a crash
        time.sleep(1)
        crashed = run("kafka", "status", "--name", "clitest", "--home", str(home))
        assert crashed.returncode == 1 and "crashed" in crashed.stdout
        cleaned = run("kafka", "stop", "--name", "clitest", "--home", str(home))
        assert cleaned.returncode == 0 and "already exited; cleaned up" in cleaned.stdout
        assert run("kafka", "status", "--name", "clitest", "--home", str(home)).stdout.strip().endswith("stopped")
    finally:
        run("kafka", "stop", "--name", "clitest", "--home", str(home))


def test_a_busy_port_and_a_missing_java_are_clear_errors(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        busy = run("kafka", "start", "--name", "busy", "--home", str(tmp_path / "b"), "--port", str(port))
    assert busy.returncode == 1 and f"port {port} on 127.0.0.1 is busy" in busy.stderr
    no_java = run("kafka", "start", "--name", "nojava", "--home", str(tmp_path / "j"),
                  env={"PATH": str(Path(sys.executable).parent)})
    assert no_java.returncode == 1 and "install a JRE >= 17" in no_java.stderr
