"""Soak: stream at a fraction of max throughput for a long time; report RSS, lag and conservation.

Not a test (not in CI). Starts its own broker unless ``--bootstrap`` is given, trains and deploys
the demo models with the demo routes, runs one all-roles worker, measures max throughput
(unless ``--max-rate``), then streams at ``--fraction`` of it for ``--minutes``, sampling the
worker's RSS and the consumer lag. At the end it checks conservation: events in = scored events
+ dead letters (duplicates, if any, are counted separately).

    python bench/soak.py --minutes 30            # the full soak
    python bench/soak.py --minutes 3             # a shortened run
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psutil

from museflow.config import Settings
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.models import SHOWCASE_ROUTES
from museflow.demo.producing import produce_events
from museflow.demo.supervise import WorkerProcess
from museflow.kafka.clients import make_consumer, topic_end_offsets
from museflow.kafka.lag import list_groups, read_lag

ROUTES = SHOWCASE_ROUTES
TENANTS = ("acme-bank", "globex-pay", "initech-fin")


def size(settings: Settings, topic: str) -> int:
    consumer = make_consumer(settings, group_id="soak-size-probe")
    try:
        return sum(hi - lo for lo, hi in topic_end_offsets(consumer, topic).values())
    finally:
        consumer.close()


def out_count(settings: Settings) -> tuple[int, int]:
    return sum(size(settings, settings.topics.scores(t)) for t in TENANTS), size(settings, settings.topics.dlq)


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def lag(settings: Settings) -> int:
    groups = [g for g in list_groups(settings) if g.startswith(settings.app_id)]
    return sum(r.lag for r in read_lag(settings, groups))


def deploy(settings: Settings, work: Path) -> None:
    from museflow.contracts.topics import core_topics
    from museflow.control.routing import load_routes_yaml
    from museflow.demo.models import train_demo_models
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.plane import deploy, publish_route

    ensure_topics(settings, core_topics(settings))
    for model in train_demo_models(work / "models", seed=7):
        deploy(settings, str(model.spec_path))
    for route in load_routes_yaml(text=ROUTES):
        publish_route(settings, replace(route, version=1))


def wait_out(settings: Settings, target: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        scored, dead = out_count(settings)
        if scored + dead >= target:
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"only {sum(out_count(settings))} of {target} events came out within {timeout:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="use this broker (default: start a local one)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of max throughput to stream at")
    parser.add_argument("--max-rate", type=float, default=0.0, help="max events/s (default: measure it)")
    parser.add_argument("--sample-seconds", type=float, default=15.0)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="museflow-soak-"))
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from museflow.kafka.broker import LocalKafka

        broker = LocalKafka(f"soak-{uuid.uuid4().hex[:6]}", home=work / "kafka", heap="1g")
        bootstrap = broker.start(timeout=180).bootstrap
    tag = uuid.uuid4().hex[:8]
    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=f"soak{tag}.", app_id=f"soak-{tag}",
                        data_dir=str(work / "data"), model_dir=str(work / "models"), metrics_enabled=False)
    worker = None
    try:
        deploy(settings, work)
        worker = WorkerProcess(settings, roles=("all",), log_path=work / "worker.log").start().wait_ready(180)
        sent_total, good_total = 0, 0
        max_rate = args.max_rate
        if not max_rate:
            n = 20_000
            burst = produce_events(settings, TransactionGenerator(seed=1), n)
            took = wait_out(settings, n, 600)
            max_rate = n / max(took, burst.elapsed_s)
            sent_total, good_total = n, burst.good
            print(f"max throughput (one all-roles worker, {n} events): {max_rate:.0f} events/s")
        rate = args.fraction * max_rate
        print(f"soak: {args.minutes:g} min at {rate:.0f} events/s ({args.fraction:.0%} of {max_rate:.0f})")
        stop = threading.Event()
        result: dict[str, object] = {}

        def stream() -> None:
            result["summary"] = produce_events(settings, TransactionGenerator(seed=2), None,
                                               duration_s=args.minutes * 60, rate=rate,
                                               bad_fraction=args.bad_fraction, seed=2, stop=stop)
        thread = threading.Thread(target=stream, daemon=True)
        started = time.monotonic()
        thread.start()
        print(f"{'t (s)':>7} {'rss (MiB)':>10} {'lag':>8} {'out':>10}")
        samples = []
        while thread.is_alive():
            thread.join(args.sample_seconds)
            assert worker.proc is not None
            sample = (time.monotonic() - started, rss_mb(worker.proc.pid), lag(settings), sum(out_count(settings)))
            samples.append(sample)
            print(f"{sample[0]:7.0f} {sample[1]:10.1f} {sample[2]:8d} {sample[3]:10d}", flush=True)
        summary = result["summary"]
        sent_total += summary.sent  # type: ignore[attr-defined]
        good_total += summary.good  # type: ignore[attr-defined]
        drained = wait_out(settings, sent_total, 600)
        time.sleep(3)
        scored, dead = out_count(settings)
        rss = [s[1] for s in samples]
        lags = [s[2] for s in samples]
        print(f"\nsent {sent_total} ({good_total} good), scored {scored}, dead letters {dead}; "
              f"drained {drained:.0f}s after the last event; producer ok: {summary.ok}")  # type: ignore[attr-defined]
        print(f"conservation (in = scored + dead letters): {'holds' if sent_total == scored + dead else 'BROKEN'}"
              f" (difference {scored + dead - sent_total:+d} = duplicates if positive)")
        print(f"RSS MiB: first {rss[0]:.0f}, max {max(rss):.0f}, last {rss[-1]:.0f}; "
              f"lag max {max(lags)}, last {lags[-1]}; worker alive: {worker.alive()}")
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.destroy()


if __name__ == "__main__":
    main()
