"""The demo's embedded stack: a local Kafka, the demo models, one worker with every role — started and stopped."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from museflow.config import Settings
from museflow.contracts.topics import core_topics
from museflow.demo.models import train_demo_models
from museflow.demo.scenario import REFIT_INTERVAL_S, REFIT_MAX_SHIFT, TRAIN_EVENTS
from museflow.demo.supervise import WorkerProcess
from museflow.errors import MuseflowError
from museflow.kafka.admin import ensure_topics
from museflow.kafka.broker import LocalKafka
from museflow.kafka.clients import make_consumer, topic_end_offsets

__all__ = ["DemoStack", "output_counts"]


class DemoStack:
    """Everything the demo starts, under one temporary directory; :meth:`stop` leaves nothing behind."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="museflow-demo-"))
        self.name = f"demo-{os.getpid()}"
        self.kafka: LocalKafka | None = None
        self.worker: WorkerProcess | None = None
        self.bootstrap = ""
        self.models: dict[str, Path] = {}

    def start_broker(self, console: Console, seed: int) -> None:
        """Start the local Kafka while the demo models train alongside; both must succeed."""
        trained: dict[str, dict[str, Path]] = {}
        failed: list[BaseException] = []

        def train() -> None:
            try:
                out = train_demo_models(self.home / "models", seed=seed, n_events=TRAIN_EVENTS)
                trained["models"] = {f"{m.name}@{m.version}": m.spec_path for m in out}
            except BaseException as exc:
                failed.append(exc)

        trainer = threading.Thread(target=train, name="demo-train", daemon=True)
        trainer.start()
        self.kafka = LocalKafka(self.name, home=self.home / "kafka")
        with console.status("starting a local Kafka (the first run fetches it into ~/.cache/museflow)") as st:
            inst = self.kafka.start(timeout=180, progress=lambda msg: st.update(msg))
            console.print(f"Kafka {inst.kafka_version} up at {inst.bootstrap} (instance {self.name})")
            st.update(f"training the demo models on {TRAIN_EVENTS:,} synthetic events")
            while trainer.is_alive():
                trainer.join(0.2)
        if failed:
            raise MuseflowError(f"training the demo models failed: {failed[0]}") from failed[0]
        self.bootstrap = inst.bootstrap
        self.models = trained["models"]
        console.print("trained fraud-cnp v1, fraud-cnp v2 (negatives down-sampled at 0.1) and ato v1")

    def settings(self, *, refit_window_s: float, min_samples: int, min_tail: int) -> Settings:
        """The settings of every client and of the worker: this broker, this directory, the demo's refit knobs."""
        return Settings(
            bootstrap_servers=self.bootstrap, data_dir=str(self.home / "data"), model_dir=str(self.home / "models"),
            refit_interval_seconds=REFIT_INTERVAL_S, refit_window_seconds=refit_window_s,
            refit_min_samples=min_samples, refit_max_alert_rate_shift=REFIT_MAX_SHIFT,
            refit_min_tail_samples=min_tail, broker_session_timeout_seconds=6.0)

    @staticmethod
    def create_topics(settings: Settings) -> None:
        ensure_topics(settings, core_topics(settings))

    def start_worker(self, settings: Settings) -> WorkerProcess:
        self.worker = WorkerProcess(settings, log_path=self.worker_log).start()
        self.worker.wait_ready(180)
        return self.worker

    @property
    def worker_log(self) -> Path:
        return self.home / "worker.log"

    def check_worker(self) -> None:
        """Raise with the worker's last log lines if it has exited."""
        if self.worker is not None and not self.worker.alive():
            returncode = self.worker.proc.returncode if self.worker.proc is not None else None
            raise MuseflowError(f"the worker exited with code {returncode}; last lines of "
                                f"{self.worker.log_path}:\n{self.worker.log_tail()}")

    def stop(self) -> None:
        """Stop the worker and the broker and delete the directory."""
        if self.worker is not None:
            self.worker.stop(timeout=30)
        if self.kafka is not None:
            self.kafka.destroy()
        shutil.rmtree(self.home, ignore_errors=True)

    def print_keep_running(self, console: Console, settings: Settings, tenant: str) -> None:
        """How to use the stack left running, and how to stop it."""
        assert self.worker is not None and self.worker.proc is not None
        console.rule("[bold]the stack is still running")
        console.print(f"export MUSEFLOW_BOOTSTRAP_SERVERS={settings.bootstrap_servers}")
        console.print(f"worker metrics: {self.worker.url}/metrics (also /readyz, /healthz)")
        console.print("then e.g.: museflow routes show; museflow maps list; museflow lag; museflow tail --tenant "
                      f"{tenant} --limit 5; museflow produce --rate 500 --duration 30 --labels")
        console.print(f"models: {self.home / 'models'}; worker log: {self.worker_log}")
        console.print("to stop it:")
        console.print(f"  kill {self.worker.proc.pid}   # the worker (SIGTERM, graceful)")
        console.print(f"  museflow kafka stop --name {self.name} --home {self.home / 'kafka'} --purge && rm -rf "
                      f"{self.home}")


def output_counts(settings: Settings, tenants: tuple[str, ...]) -> tuple[int, int]:
    """(events scored, dead letters): the sizes of the tenants' score topics and of the dead-letter topic."""
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-demo-count-{time.time_ns()}")
    try:
        def size(topic: str) -> int:
            return sum(hi - lo for lo, hi in topic_end_offsets(consumer, topic).values())

        scored = sum(size(settings.topics.scores(t)) for t in tenants)
        return scored, size(settings.topics.dlq)
    finally:
        consumer.close()
