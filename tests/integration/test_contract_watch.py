"""The alert-rate contract on a real broker: promotion on evidence, the watch on served scores, auto rollback.

A map of fraud-cnp v2 for acme-bank is fitted on v2's own scores and then shifted so the tenant's
5% threshold alerts on ~7%: the kind of map that passes every check made before promotion and
is wrong on live traffic. Fitted on too few samples it is held (a ``hold`` verdict); on enough
it is promoted on a route with ``auto_rollback``; the refit role's watch finds the breach on the
served scores in the score log and rolls the route back to v1 on its own, and every step is a
verdict record.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from museflow.cli.main import cli
from museflow.config import Settings
from museflow.control.routing import ModelRef
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.supervise import WorkerProcess
from museflow.errors import RouteError
from museflow.kafka.clients import make_producer
from museflow.kafka.plane import promote, publish_map, publish_route, read_state
from museflow.kafka.schema_registry import serdes_from_settings
from museflow.transform.qmap import QuantileMap
from museflow.transform.refit import ExactSample, fit_map
from tests.integration.conftest import read_records, wait_for

pytestmark = pytest.mark.timeout(600)

CNP = "card-not-present"
V1, V2 = ModelRef("fraud-cnp", "1"), ModelRef("fraud-cnp", "2")


def acme_events(seed: int, n: int) -> list[dict[str, Any]]:
    events = []
    now = int(time.time() * 1000)
    for i, g in enumerate(TransactionGenerator(seed=seed).generate(n, start_ms=now - n)):
        event = dict(g.event)
        event.update(tenant="acme-bank", intent=CNP, event_time=now - n + i)
        events.append(event)
    return events


def shifted(qmap: QuantileMap, samples: int, version: int) -> QuantileMap:
    """``qmap`` raised so that on the uniform reference every threshold alerts 40% more (5% -> 7% above 0.95)."""
    record = qmap.to_record()
    record.update(knots_y=list(1.0 - (1.0 - np.asarray(qmap.knots_y)) / 1.4), sample_count=samples,
                  version=version, created_at_ms=int(time.time() * 1000), window_end_ms=int(time.time() * 1000))
    return QuantileMap.from_record(record)


def test_a_bad_map_is_held_on_few_samples_then_caught_by_the_watch_and_rolled_back(
        settings: Settings, deployed: dict[str, Path], tmp_path: Path) -> None:
    state = read_state(settings, load_models=["fraud-cnp"])
    ref = state.reference("uniform@1")
    v2_scores = state.registry.get("fraud-cnp", "2").score(acme_events(31, 20_000)).probability
    good = fit_map(ExactSample(v2_scores), ref, model="fraud-cnp", model_version="2", tenant="acme-bank",
                   intent=CNP, version=1)
    route = state.routes.get("acme-bank", CNP)
    assert route is not None and route.watch_thresholds == (0.95, 0.99) and route.champion == V1
    publish_route(settings, replace(route, version=route.version + 1, auto_rollback=True))

    publish_map(settings, shifted(good, samples=5_000, version=1))
    with pytest.raises(RouteError, match=r"alert-rate contract .* is not established: acme-bank > 0.95 \(5.00%\): "
                                         r"insufficient, 5,000 samples of 7,299 needed; acme-bank > 0.99 \(1.00%\): "
                                         r"insufficient, 5,000 samples of 38,031 needed"):
        promote(settings, f"acme-bank/{CNP}", V2, by="test")
    env = {**settings.to_env(), "COLUMNS": "200"}
    refused = CliRunner().invoke(cli, ["models", "promote", f"acme-bank/{CNP}", str(V2), "--explain"], env=env)
    assert refused.exit_code != 0 and "is not established" in str(refused.exception), refused.output  # main() prints it
    assert "estimate" in refused.output and "interval" in refused.output and "insufficient" in refused.output
    publish_map(settings, shifted(good, samples=50_000, version=2))
    promoted = promote(settings, f"acme-bank/{CNP}", V2, by="test")  # its fit alone says it holds
    assert promoted.champion == V2 and promoted.auto_rollback and "insufficient" not in (promoted.comment or "")

    # two hot workers share the traffic; the watch sees all of it on the score log (the refit role)
    workers = [WorkerProcess(settings, roles=("router", "scorer"), log_path=tmp_path / f"hot{i}.log").start()
               for i in range(2)]
    watcher = WorkerProcess(settings, roles=("refit",), log_path=tmp_path / "watch.log").start()
    procs = [*workers, watcher]
    try:
        for proc in procs:
            proc.wait_ready(90)
        serdes, producer = serdes_from_settings(settings), make_producer(settings)
        for event in acme_events(32, 30_000):
            producer.produce(settings.topics.events, key=event["event_id"].encode(), value=serdes.events.encode(event))
            producer.poll(0)
        assert producer.flush(60) == 0

        def rolled_back() -> bool:
            now = read_state(settings).routes.get("acme-bank", CNP)
            return now is not None and now.version > promoted.version

        wait_for(rolled_back, 180, "the watch to roll acme-bank's route back")
    finally:
        for proc in procs:
            proc.stop()

    history = read_state(settings).routes.history("acme-bank", CNP)
    restored = history[-1]
    assert restored.champion == V1 and restored.updated_by == "museflow-watch", restored
    assert restored.comment == f"rollback to v{promoted.version - 1}"
    verdicts = read_records(settings, settings.topics.verdicts, "ContractVerdict")
    kinds = [(v["kind"], v["route_version"]) for v in verdicts]
    print("\nverdicts:", kinds, "\nbreach:", [v["detail"] for v in verdicts if v["kind"] == "breach"])
    assert kinds[:3] == [("hold", promoted.version - 1), ("hold", promoted.version - 1),
                         ("promote", promoted.version)], kinds
    breach = next(v for v in verdicts if v["kind"] == "breach")
    assert breach["route_version"] == promoted.version and breach["by"] == "museflow-watch"
    assert breach["thresholds"] and all(t["verdict"] == "above" and t["estimate"] > 1.1 * t["target"]
                                        for t in breach["thresholds"]), breach
    assert ("rollback", restored.version) in kinds
    assert all(v["tolerance"] == 0.1 and v["confidence"] == 0.95 for v in verdicts)
