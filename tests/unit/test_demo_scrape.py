"""The demo's reading of worker metrics and the producer's pacing on it: backlog, throughput, holding back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from museflow.config import Settings
from museflow.demo.pacing import PacedProducer
from museflow.demo.scenario import DemoOptions
from museflow.demo.scrape import MetricsHistory
from museflow.demo.view import DemoStatus, PhasePlan


class FakeWorker:
    """Serves ``museflow_events_out_total`` and dead letters as a worker's ``/metrics`` would."""

    def __init__(self) -> None:
        self.out = 0
        self.dead = 0
        self.shadow = 0
        self.up = True

    def alive(self) -> bool:
        return self.up

    def metrics(self) -> str:
        return (
            "# TYPE museflow_events_out_total counter\n"
            f'museflow_events_out_total{{tenant="acme-bank",intent="card-not-present"}} {self.out}.0\n'
            "# TYPE museflow_dead_letters_total counter\n"
            f'museflow_dead_letters_total{{reason="undecodable",stage="router"}} {self.dead}.0\n'
            "# TYPE museflow_events_scored_total counter\n"
            'museflow_events_scored_total{tenant="acme-bank",intent="card-not-present",model="fraud-cnp",'
            f'role="shadow"}} {self.shadow}.0\n'
        )


def test_backlog_counts_what_was_sent_at_the_scrape_minus_what_the_worker_finished() -> None:
    worker, history = FakeWorker(), MetricsHistory()
    assert history.backlog(sent=100) is None  # no scrape yet: nothing to act on
    worker.out, worker.dead = 700, 50
    history.scrape(worker, sent=1000)
    assert history.backlog(sent=5000) == 250  # the count at the scrape, not the count now
    assert history.backlog(sent=5000, fresh_s=-1.0) is None  # a stale scrape is not acted on


def test_a_stopped_worker_is_not_scraped_and_shadow_samples_come_from_the_latest_scrape() -> None:
    worker, history = FakeWorker(), MetricsHistory()
    worker.shadow = 42
    history.scrape(worker, sent=0)
    worker.up, worker.shadow = False, 99
    history.scrape(worker, sent=0)
    assert len(history.snapshots) == 1
    assert history.shadow_samples(["acme-bank", "globex-pay"]) == {"acme-bank": 42, "globex-pay": 0}


def test_throughput_needs_three_scrapes_and_counts_dead_letters_as_done() -> None:
    worker, history = FakeWorker(), MetricsHistory()
    for done in (0, 100, 200):
        worker.out, worker.dead = done, done // 10
        history.scrape(worker, sent=done)
        if done < 200:
            assert history.throughput() == 0.0
    assert history.throughput() > 0


def test_the_producer_is_held_while_the_worker_is_behind_and_the_time_held_is_counted(tmp_path: Path) -> None:
    worker, history = FakeWorker(), MetricsHistory()
    history.scrape(worker, sent=10_000)  # 10,000 sent, none finished: far more than a second of traffic
    status = DemoStatus(PhasePlan.for_duration(60))
    options = DemoOptions(60, 1000, ("acme-bank",), 0, tmp_path, keep_running=False)
    producer = PacedProducer(Settings(), options, [], status, history)
    threading.Timer(0.3, producer.stop.set).start()
    producer.pace(10_000)
    assert status.paced and status.paced_s == pytest.approx(0.3, abs=0.25)

    caught_up = PacedProducer(Settings(), options, [], DemoStatus(PhasePlan.for_duration(60)), MetricsHistory())
    caught_up.pace(10_000)  # no scrape: never held
    assert not caught_up.status.paced and caught_up.status.paced_s == 0
