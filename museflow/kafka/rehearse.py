"""``rehearse``: replay a window of retained traffic through champion and candidate, fit and publish
the candidate's maps (source ``rehearsal``; blended with the pooled scores for a tenant the refit
agent's guards would hold, as that agent would serve it), and write the rehearsal report.

Used by ``museflow rehearse``, the demo, the benchmark and the tests. Publishing is idempotent:
a map identical to one already published for the same window is not written again, so two
rehearsals of one window leave the same maps and byte-identical reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from museflow.config import Settings
from museflow.control.rehearsal import Rehearsal, RehearsalReport, build_report, write_report
from museflow.control.routing import ModelRef, Route
from museflow.errors import RouteError
from museflow.kafka.plane import publish_map, read_state, refitter_for_settings
from museflow.kafka.replay import ReplayProgress, replay_window
from museflow.transform.qmap import QuantileMap

__all__ = ["RehearsalResult", "rehearse", "rehearsed_routes"]


@dataclass(frozen=True)
class RehearsalResult:
    report: RehearsalReport
    maps: dict[tuple[str, str], QuantileMap]
    published: list[str]
    events: int
    report_path: Path | None
    replay_seconds: float
    """Reading, decoding and scoring the window (what the replay rate is measured on)."""
    seconds: float
    """The whole rehearsal: loading the models, the replay, fitting, publishing, the report."""


def rehearsed_routes(routes: Sequence[Route], candidate: ModelRef, keys: Sequence[str] = ()) -> list[Route]:
    """The routes named (``TENANT/INTENT``), else every route whose champion is another version of the model."""
    if keys:
        by_key = {r.key: r for r in routes}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise RouteError(f"no route {missing}; routes in force: {sorted(by_key)}")
        return [by_key[k] for k in keys]
    return [r for r in routes if r.champion.name == candidate.name and r.champion != candidate]


def rehearse(settings: Settings, candidate: ModelRef, window: tuple[int, int], *, routes: Sequence[str] = (),
             out_dir: Path | None = None, publish: bool = True,
             progress: Callable[[ReplayProgress], None] | None = None) -> RehearsalResult:
    """Rehearse ``candidate`` on the events of ``window`` (epoch ms, [start, end))."""
    from museflow.kafka.clients import read_topic
    from museflow.kafka.schema_registry import serdes_from_settings

    started = time.monotonic()
    chosen = rehearsed_routes(list(read_state(settings).routes), candidate, routes)
    state = read_state(settings, load_models={candidate.name, *(r.champion.name for r in chosen)})
    chosen = rehearsed_routes(list(state.routes), candidate, routes)
    rehearsal = Rehearsal(state, candidate, chosen, policy_for=refitter_for_settings(settings, state).policy_for)
    serdes = serdes_from_settings(settings)
    replay_started = time.monotonic()
    for events, stamps in replay_window(settings, serdes, window[0], window[1], progress=progress):
        rehearsal.observe(events, stamps)
    replay_seconds = time.monotonic() - replay_started
    versions = {}
    held: dict[tuple[str, str], QuantileMap] = {}
    for route in chosen:
        own = [m for m in state.maps if (m.model, m.model_version, m.tenant) == (candidate.name, candidate.version,
                                                                                  route.tenant)]
        versions[(route.tenant, route.intent)] = max((m.version for m in own), default=0) + 1
        same = [m for m in own if m.source == "rehearsal" and (m.window_start_ms, m.window_end_ms) == window
                and f"{m.reference_name}@{m.reference_version}" == route.reference]
        if same:
            held[(route.tenant, route.intent)] = max(same, key=lambda m: m.version)
    fitted = rehearsal.fit_maps(window, versions)
    published: list[str] = []
    maps: dict[tuple[str, str], QuantileMap] = {}
    for key, qmap in fitted.items():
        if not isinstance(qmap, QuantileMap):
            continue
        previous = held.get(key)
        if previous is not None and _same_fit(previous, qmap):
            maps[key] = previous
            continue
        maps[key] = qmap
        if publish:
            publish_map(settings, qmap, state=state)
            published.append(f"{key[0]}/{key[1]} v{qmap.version}")
    labels = {}
    for label in serdes.labels.decode_many([r.value for r in read_topic(settings, settings.topics.labels)
                                            if r.value is not None and r.timestamp_ms >= window[0]]):
        if not isinstance(label, Exception):
            labels[str(label["event_id"])] = bool(label["is_fraud"])
    report = build_report(rehearsal, {k: maps.get(k, v) for k, v in fitted.items()}, window, labels)
    path = write_report(report, out_dir) if out_dir is not None else None
    return RehearsalResult(report, maps, published, rehearsal.seen, path, replay_seconds, time.monotonic() - started)


def _same_fit(a: QuantileMap, b: QuantileMap) -> bool:
    ra, rb = a.to_record(), b.to_record()
    return all(ra[k] == rb[k] for k in ra if k != "version")
