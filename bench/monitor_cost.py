"""What the scorer's score monitor costs per event (none, alert rates and drift, the CBPE sums), and the contract watch.

Scores 5,000 routed events of the showcase routes (fraud-cnp@2 in shadow on acme-bank, a 10%
canary on globex-pay) with ``ScorerStep.run`` on 500-event batches, five passes, and prints
microseconds per message for each monitor setting. The alert-rate contract's watch is no longer
on the hot path: the refit role runs it on score-log batches, timed here per served score on the
showcase routes' batches. ``python bench/monitor_cost.py``
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from museflow.config import TopicNames
from museflow.contracts.serde import Serdes
from museflow.contracts.validation import validate_event
from museflow.control.contract import Contract
from museflow.control.routing import load_routes_yaml
from museflow.control.state import PipelineState
from museflow.demo.loadgen import TransactionGenerator
from museflow.demo.models import SHOWCASE_ROUTES, train_demo_models
from museflow.observe.contract_watch import ServedWatch
from museflow.observe.metrics import PipelineMetrics
from museflow.observe.monitoring import ScoreMonitor
from museflow.runtime.pipeline import InMessage, RouterStep, ScorerStep

BATCH, EVENTS, PASSES = 500, 5000, 5


class WithoutEstimates:
    """The monitor as it was before the label-free estimates: no corrected probabilities, no candidates."""

    def __init__(self, monitor: ScoreMonitor) -> None:
        self.monitor = monitor

    def observe(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("corrected", None)
        self.monitor.observe(*args, **kwargs)

    def observe_candidate(self, *args: Any, **kwargs: Any) -> None:
        return None


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="museflow-monitor-cost-"))
    state = PipelineState(model_dir=out, metrics=PipelineMetrics())
    for model in train_demo_models(out, seed=3, n_events=20_000):
        state.registry.load(model.spec_path)
    for route in load_routes_yaml(text=SHOWCASE_ROUTES):
        state.routes.apply(replace(route, version=1))
    serdes, topics = Serdes(), TopicNames("bench.")
    values = serdes.events.encode_many([g.event for g in TransactionGenerator(seed=1).generate(EVENTS)])
    router = RouterStep(state, topics, validate_event)
    batches = []
    for i in range(0, EVENTS, BATCH):
        chunk = values[i:i + BATCH]
        routed = router.run([InMessage(b"k", v, topics.events, 0, i + j) for j, v in enumerate(chunk)],
                            serdes.events.decode_many(chunk))
        forwarded = [InMessage(o.key, o.value, o.topic, 0, j, 0, dict(o.headers)) for j, o in enumerate(routed.out)]
        batches.append((forwarded, serdes.events.decode_many([m.value for m in forwarded])))
    print(f"{'monitor':<48} {'µs / message':>12}")
    for label, monitor in (("none", None),
                           ("alert rates and drift", WithoutEstimates(ScoreMonitor(PipelineMetrics()))),
                           ("+ CBPE sums, base rate, candidates' estimates", ScoreMonitor(PipelineMetrics()))):
        step = ScorerStep(state, topics, serdes, monitor=monitor)
        for messages, decoded in batches:  # warm-up
            step.run(messages, decoded)
        started, n = time.perf_counter(), 0
        for _ in range(PASSES):
            for messages, decoded in batches:
                step.run(messages, decoded)
                n += len(messages)
        print(f"{label:<48} {(time.perf_counter() - started) / n * 1e6:>12.2f}")

    logged = serdes.score_log.decode_many([o.value for messages, decoded in batches
                                           for o in step.run(messages, decoded).out if o.topic == topics.score_log])
    served = sum(len(r["scores"]) for r in logged if r["served"])
    watch = ServedWatch(PipelineMetrics(), Contract(), route_at=state.routes.at, current=state.routes.get,
                        reference=state.reference)
    started = time.perf_counter()
    for _ in range(PASSES):
        watch.observe_log(logged)
    per_score = (time.perf_counter() - started) / (served * PASSES) * 1e6
    print(f"{'contract watch on the score log (refit role)':<48} {per_score:>12.2f}  per served score")


if __name__ == "__main__":
    main()
