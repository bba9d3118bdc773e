"""Fitting quantile maps from windowed sketches, and the guards that decide whether to publish them.

The refit agent feeds corrected scores into a :class:`Refitter` (one sketch per tenant and one
pooled per intent), calls :meth:`Refitter.refit` periodically, and publishes the maps whose
:class:`RefitDecision` says so; held candidates are reported with a reason, never applied.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.control.contract import Contract, Credibility, ScoreSample, blend_map, credibility, judge
from museflow.errors import MapError
from museflow.transform.qmap import MapStore, QuantileMap
from museflow.transform.reference import ReferenceDistribution, collapse_ties, probability_grid
from museflow.transform.sketch import DEFAULT_K, WindowedSketch

__all__ = [
    "DEFAULT_LEVELS",
    "CountedSample",
    "ExactSample",
    "RefitDecision",
    "RefitOutcome",
    "RefitPolicy",
    "Refitter",
    "ScoreGroup",
    "SketchKey",
    "alert_rate_on",
    "fit_map",
    "refitter_for_routes",
    "with_evidence",
]

DEFAULT_LEVELS = probability_grid()
"""Knot levels: u step 0.02 up to 0.9, then 10 per decade in 1-u down to 1e-4, plus 0 and 1 (77)."""

DEFAULT_CONTRACT_RATES = (0.05, 0.01)
"""Alert rates judged on a route without watch thresholds (as promotion does)."""

SHORT = frozenset({"too-few-samples", "too-few-tail-samples", "unfittable"})
"""Refit reasons for which a tenant is served a blended map instead."""

STOPGAP_SOURCES = frozenset({"blended", "rehearsal"})
"""Map sources that stand in until a tenant's own live traffic suffices (the first such refit replaces them)."""

SketchKey = tuple[str, str, str, str | None]
"""``(model, model_version, intent, tenant)``; tenant None for the pooled sketch of an intent."""

ScoreGroup = tuple[str, str, str, str]
"""``(model, model_version, tenant, intent)``: the score-log records one tenant's sketch takes."""


class ExactSample:
    """Every score, sorted: exact quantiles for :func:`fit_map`, the same whatever the arrival order.

    The rehearsal fits from it, so two rehearsals of one window give byte-identical maps; the
    refit agent's sketches trade that for bounded memory.
    """

    def __init__(self, scores: npt.ArrayLike, window_start_ms: int = 0) -> None:
        values = np.asarray(scores, dtype=np.float64).ravel()
        self._sorted = np.sort(values[np.isfinite(values)])
        self._window_start = window_start_ms / 1000 if window_start_ms else math.nan

    @property
    def count(self) -> int:
        return int(self._sorted.size)

    @property
    def min(self) -> float:
        return float(self._sorted[0])

    @property
    def max(self) -> float:
        return float(self._sorted[-1])

    @property
    def window_start(self) -> float:
        return self._window_start

    def quantile(self, q: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.quantile(self._sorted, np.asarray(q, dtype=np.float64), method="inverted_cdf")

    def count_above(self, x: float) -> float:
        return float(self._sorted.size - np.searchsorted(self._sorted, x, side="right"))

    def cdf(self, xs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``P(X <= x)`` for each ``x`` (any shape); nan when empty."""
        points = np.asarray(xs, dtype=np.float64)
        if self._sorted.size == 0:
            return np.full(points.shape, np.nan)
        return np.searchsorted(self._sorted, points, side="right") / self._sorted.size


CountedSample = WindowedSketch | ExactSample
"""Scores the refit guards can count: the refit agent's sketches and the rehearsal's exact samples."""


def fit_map(
    sketch: CountedSample,
    reference: ReferenceDistribution,
    *,
    model: str,
    model_version: str,
    tenant: str | None,
    intent: str,
    version: int,
    knots: npt.ArrayLike | None = None,
    tail_threshold: float | None = None,
    now_ms: int = 0,
) -> QuantileMap:
    """Fit ``Q_ref(F_mt(p))`` at the levels ``knots`` (default :data:`DEFAULT_LEVELS`).

    ``tail_sample_count`` is the number of sketched scores the map sends above ``tail_threshold``
    (default: the reference's 1% alert-rate threshold).
    """
    where = f"fit_map {model}/{model_version} tenant={tenant or '<pooled>'} intent={intent}"
    if sketch.count < 2:
        raise MapError(f"{where}: the sketch holds {sketch.count} scores; observe traffic before fitting")
    levels = DEFAULT_LEVELS if knots is None else np.asarray(knots, dtype=np.float64)
    if levels[0] != 0.0 or levels[-1] != 1.0 or np.any(np.diff(levels) <= 0):
        raise MapError(f"{where}: knots must rise strictly from 0 to 1")
    xs = sketch.quantile(levels)
    xs[0], xs[-1] = sketch.min, sketch.max
    if not xs[-1] > xs[0]:
        raise MapError(f"{where}: every sketched score equals {xs[0]!r}; a constant model cannot be mapped")
    us, xs = collapse_ties(levels, np.maximum.accumulate(xs))
    ys = reference.quantile(us)
    tau = float(reference.threshold_for(0.01)) if tail_threshold is None else tail_threshold
    tail = 0 if tau >= ys[-1] else round(sketch.count_above(float(np.interp(tau, ys, xs))))
    window_start = sketch.window_start
    source = "rehearsal" if isinstance(sketch, ExactSample) else "shadow"
    return QuantileMap(
        model=model, model_version=model_version, tenant=tenant, intent=intent, version=version,
        reference_name=reference.name, reference_version=reference.version, knots_x=xs, knots_y=ys,
        sample_count=sketch.count, tail_sample_count=tail,
        window_start_ms=0 if math.isnan(window_start) else int(window_start * 1000),
        window_end_ms=now_ms, created_at_ms=now_ms, source=source,
    )


@dataclass(frozen=True)
class RefitDecision:
    """Whether to publish a candidate map; ``reason`` is a short code, ``message`` says why in words."""

    publish: bool
    reason: str
    message: str
    details: Mapping[str, float] = field(default_factory=dict)


def alert_rate_on(qmap: QuantileMap, sketch: CountedSample, threshold: float) -> float:
    """Share of the sketched scores that ``qmap`` sends strictly above ``threshold``."""
    n = sketch.count
    if n == 0:
        return float("nan")
    if threshold >= qmap.knots_y[-1]:
        return 0.0
    return sketch.count_above(float(qmap.inverse([threshold])[0])) / n


@dataclass(frozen=True)
class RefitPolicy:
    """Guards before publishing a map: enough samples, enough in the tail, bounded alert-rate shift."""

    min_samples: int = 10_000
    min_tail_samples: int = 50
    watch_thresholds: Sequence[float] = ()
    max_alert_rate_shift: float = 0.25
    """Largest relative change ``|rate_candidate / rate_current - 1|`` at a watched threshold."""
    contract: Contract = field(default_factory=Contract)
    """A live map on more samples than the candidate is kept unless the candidate's traffic shows it off contract
    (a rehearsal's or blended map is replaced by the first live refit that passes the guards: live traffic
    confirms or corrects it)."""

    def __post_init__(self) -> None:
        if self.min_samples < 2 or self.min_tail_samples < 0 or not self.max_alert_rate_shift > 0:
            raise ValueError(
                f"RefitPolicy(min_samples={self.min_samples}, min_tail_samples={self.min_tail_samples}, "
                f"max_alert_rate_shift={self.max_alert_rate_shift}) needs min_samples >= 2, "
                "min_tail_samples >= 0 and a positive shift bound"
            )
        object.__setattr__(self, "watch_thresholds", tuple(sorted(float(t) for t in self.watch_thresholds)))

    def tail_samples(self, candidate: QuantileMap, sketch: CountedSample) -> float:
        """Scores the candidate sends above the highest watched threshold (or its own tail count)."""
        if not self.watch_thresholds:
            return float(candidate.tail_sample_count)
        return alert_rate_on(candidate, sketch, self.watch_thresholds[-1]) * sketch.count

    def off_contract(self, candidate: QuantileMap, current: QuantileMap, sketch: CountedSample) -> str | None:
        """The first watched threshold where ``current`` alerts off the candidate's rate (the target on this
        traffic) by more than the tolerance plus this sample's error, or None."""
        n = sketch.count
        for tau in self.watch_thresholds:
            target = alert_rate_on(candidate, sketch, tau)
            if not 0 < target < 1:
                continue
            served = alert_rate_on(current, sketch, tau)
            slack = self.contract.tolerance * target + self.contract.z * math.sqrt(target * (1 - target) / n)
            if abs(served - target) > slack:
                return f"at {tau:g} map v{current.version} alerts on {served:.3%} of this traffic, target {target:.3%}"
        return None

    def decide(self, candidate: QuantileMap, current: QuantileMap | None,
               sketch: CountedSample, *, allow_shift: bool = False) -> RefitDecision:
        """Publish or hold ``candidate`` against ``current`` on the traffic in ``sketch``.

        ``allow_shift`` (an operator's forced refit) skips only the alert-rate-shift guard.
        """
        where = (f"map {candidate.model}/{candidate.model_version} tenant={candidate.tenant or '<pooled>'} "
                 f"intent={candidate.intent} v{candidate.version}")
        n = sketch.count
        details: dict[str, float] = {"samples": float(n)}
        if n < self.min_samples:
            return RefitDecision(False, "too-few-samples",
                                 f"{where} held: {n} samples in the window, policy needs {self.min_samples}; "
                                 "wait for more traffic (the scorer falls back to the pooled map)", details)
        tail = self.tail_samples(candidate, sketch)
        details["tail_samples"] = tail
        if tail < self.min_tail_samples:
            above = f"above {self.watch_thresholds[-1]}" if self.watch_thresholds else "in the tail"
            return RefitDecision(False, "too-few-tail-samples",
                                 f"{where} held: ~{tail:.0f} samples {above}, policy needs "
                                 f"{self.min_tail_samples}; wait for more traffic", details)
        if current is None or current.is_identity:
            return RefitDecision(True, "first-map", f"{where} published: first fitted map", details)
        worst = 0.0
        worst_tau = float("nan")
        for tau in self.watch_thresholds:
            new = alert_rate_on(candidate, sketch, tau)
            old = alert_rate_on(current, sketch, tau)
            shift = abs(new - old) / max(old, 1.0 / n)
            details[f"alert_rate_candidate@{tau:g}"] = new
            details[f"alert_rate_current@{tau:g}"] = old
            if shift > worst:
                worst, worst_tau = shift, tau
        details["max_relative_shift"] = worst
        off = self.off_contract(candidate, current, sketch)
        if current.source == "shadow" and current.sample_count > n and off is None and not allow_shift:
            return RefitDecision(
                False, "no-new-evidence",
                f"{where} held: map v{current.version} was fitted on {current.sample_count} samples, more than the "
                f"{n} here, and still holds its alert rates on this traffic ({self.contract.describe()})", details)
        if current.source in STOPGAP_SOURCES:
            # A blended or rehearsed map stands in until the tenant's own live traffic suffices; the shift guard
            # would compare that traffic with the stand-in's error and could hold the stand-in for good.
            return RefitDecision(True, "replaces-stopgap",
                                 f"{where} published: replaces {current.source} map v{current.version} with one fitted "
                                 f"on this tenant's own traffic (largest alert-rate shift {worst:.1%})", details)
        if worst > self.max_alert_rate_shift and not allow_shift:
            return RefitDecision(
                False, "alert-rate-shift",
                f"{where} held: alert rate at threshold {worst_tau:g} would move by {worst:.1%} versus map "
                f"v{current.version} (bound {self.max_alert_rate_shift:.0%}); review the traffic, then "
                "force the refit if the shift is wanted", details)
        return RefitDecision(True, "published", f"{where} published (largest alert-rate shift {worst:.1%})",
                             details)


@dataclass(frozen=True)
class RefitOutcome:
    """One key's refit result: the candidate map and the decision taken on it."""

    key: SketchKey
    candidate: QuantileMap | None
    decision: RefitDecision

    @property
    def published(self) -> bool:
        return self.decision.publish


ReferenceResolver = Callable[[str | None, str], ReferenceDistribution]


class Refitter:
    """Windowed sketches per (model version, tenant) and pooled per (model version, intent), refitted on demand.

    ``references(tenant, intent)`` names the reference to map onto (tenant None: the pooled map's).
    ``store`` holds the published maps (read back from the control topic); a map this refitter
    published is remembered until then, so the next candidate is compared with it.
    """

    def __init__(
        self,
        references: ReferenceResolver | ReferenceDistribution,
        policy: RefitPolicy | None = None,
        *,
        pooled_policy: RefitPolicy | None = None,
        store: MapStore | None = None,
        k: int = DEFAULT_K,
        window_seconds: float = 3600.0,
        buckets: int = 12,
        knots: npt.ArrayLike | None = None,
        policy_for: Callable[[str | None, str], RefitPolicy] | None = None,
    ) -> None:
        self._policy_for = policy_for
        if isinstance(references, ReferenceDistribution):
            fixed = references

            def _resolve(tenant: str | None, intent: str) -> ReferenceDistribution:
                return fixed

            self._references: ReferenceResolver = _resolve
        else:
            self._references = references
        self.policy = policy or RefitPolicy()
        self.pooled_policy = pooled_policy or self.policy
        self._owns_store = store is None
        self.store = store if store is not None else MapStore()
        self._published: dict[tuple[str, str, str, str | None], QuantileMap] = {}
        self._k, self._window, self._buckets = k, window_seconds, buckets
        self._knots = DEFAULT_LEVELS if knots is None else np.asarray(knots, dtype=np.float64)
        self._sketches: dict[SketchKey, WindowedSketch] = {}
        self._dirty: set[SketchKey] = set()

    def _sketch(self, key: SketchKey) -> WindowedSketch:
        sketch = self._sketches.get(key)
        if sketch is None:
            sketch = self._sketches[key] = WindowedSketch(self._k, self._window, self._buckets)
        return sketch

    def observe(self, model: str, model_version: str, tenant: str, intent: str,
                corrected_scores: npt.ArrayLike, now: float) -> None:
        """Feed a batch of corrected scores (seconds ``now``) to the tenant's and the pooled sketch."""
        batch = np.asarray(corrected_scores, dtype=np.float32).ravel()
        for key in ((model, model_version, intent, tenant), (model, model_version, intent, None)):
            self._sketch(key).update(batch, now)
            self._dirty.add(key)

    def observe_log(self, records: Iterable[Mapping[str, Any]], now: float) -> dict[ScoreGroup, int]:
        """Feed score-log records, as batches (``corrected_scores``) or the rows they expand into
        (``corrected_score``), grouped by :data:`ScoreGroup`; returns the scores taken per group."""
        groups: dict[ScoreGroup, list[float]] = defaultdict(list)
        for record in records:
            key = (record["model"], record["model_version"], record["tenant"], record["intent"])
            if "corrected_scores" in record:
                groups[key].extend(record["corrected_scores"])
            else:
                groups[key].append(record["corrected_score"])
        for (model, model_version, tenant, intent), scores in groups.items():
            self.observe(model, model_version, tenant, intent, scores, now)
        return {key: len(scores) for key, scores in groups.items()}

    def refit(self, now: float, force: bool = False) -> list[RefitOutcome]:
        """Fit a candidate for every key with new scores (every key when ``force``) and decide on it.

        ``force`` also overrides the alert-rate-shift guard (an operator's approval); sample guards hold.
        """
        keys = sorted(self._sketches if force else self._dirty, key=lambda k: (k[0], k[1], k[2], k[3] or ""))
        outcomes: list[RefitOutcome] = []
        now_ms = int(now * 1000)
        for key in keys:
            model, model_version, intent, tenant = key
            sketch = self._sketches[key]
            sketch.advance(now)
            policy = self.policy_for(tenant, intent)
            held = max(filter(None, (self.store.get_pooled(model, model_version, intent) if tenant is None
                                     else self.store.get(model, model_version, tenant), self._published.get(key))),
                       key=lambda m: m.version, default=None)
            version = 1 if held is None else held.version + 1
            reference = self._references(tenant, intent)
            # A map onto another reference is no baseline: the route was re-targeted on purpose.
            current = held if held is not None and (held.reference_name, held.reference_version) == (
                reference.name, reference.version) else None
            tail_tau = policy.watch_thresholds[-1] if policy.watch_thresholds else None
            try:
                candidate = fit_map(sketch, reference, model=model,
                                    model_version=model_version, tenant=tenant, intent=intent,
                                    version=version, knots=self._knots, tail_threshold=tail_tau,
                                    now_ms=now_ms)
            except MapError as exc:
                outcomes.append(RefitOutcome(key, None, RefitDecision(False, "unfittable", str(exc),
                                                                      {"samples": float(sketch.count)})))
                continue
            decision = policy.decide(candidate, current, sketch, allow_shift=force)
            if decision.publish:
                # A worker's store is what the control topic says: the map joins it when read
                # back from there, and is remembered here meanwhile. An own store is the record.
                self._published[key] = candidate
                if self._owns_store:
                    self.store.put(candidate)
            outcomes.append(RefitOutcome(key, candidate, decision))
        self._dirty.clear()
        return [self._blended(o, now_ms, force) if o.decision.reason in SHORT else o for o in outcomes]

    def _blended(self, short: RefitOutcome, now_ms: int, force: bool) -> RefitOutcome:
        """For a tenant short of samples: its scores blended with the pooled ones, on its own reference.

        The map records, per watch threshold, the effective samples the contract's judgement gives
        it, so promotion judges it like any other. A held blended map is refitted at most every
        quarter window; a tenant's own map is never replaced by a blended one.
        """
        model, model_version, intent, tenant = short.key
        pooled = self._sketches.get((model, model_version, intent, None))
        if tenant is None or pooled is None or pooled.count < self.pooled_policy.min_samples or \
                not pooled.max > pooled.min:
            return short
        reference = self._references(tenant, intent)
        held = self.store.get(model, model_version, tenant, f"{reference.name}@{reference.version}")
        mine = self._published.get(short.key)
        if mine is not None and (mine.reference_name, mine.reference_version) == (reference.name, reference.version):
            held = mine if held is None or mine.version > held.version else held
        where = f"map {model}/{model_version} tenant={tenant} intent={intent}"
        if held is not None and held.source != "blended":
            return RefitOutcome(short.key, None, RefitDecision(
                False, "own-map-held", f"{where}: {short.decision.message}; its own map v{held.version} stays",
                dict(short.decision.details)))
        if held is not None and not force and now_ms - held.created_at_ms < self._window * 250:
            return RefitOutcome(short.key, None, RefitDecision(
                False, "blended-recent", f"{where}: blended map v{held.version} is recent; refitted every quarter "
                f"window", dict(short.decision.details)))
        cred = self._credibility(model, model_version, intent, pooled)
        sketch = self._sketches[short.key]
        version = max(held.version if held is not None else 0, self._version_after(short.key)) + 1
        try:
            candidate = blend_map(sketch if sketch.count else None, cred, reference, model=model,
                                  model_version=model_version, tenant=tenant, intent=intent, version=version,
                                  now_ms=now_ms)
        except MapError:
            return short
        policy = self.policy_for(tenant, intent)
        candidate = with_evidence(candidate, sketch if sketch.count else None, cred, reference, policy.contract,
                                  policy.watch_thresholds)
        self._published[short.key] = candidate
        if self._owns_store:
            self.store.put(candidate)
        shown = ", ".join(f"{t:g}: {n:,.0f}" for t, n in candidate.evidence) or "no watch thresholds"
        return RefitOutcome(short.key, candidate, RefitDecision(
            True, "blended", f"{where} v{version} published blended with the pooled scores ({sketch.count} own, "
            f"{pooled.count} pooled; effective samples {shown}): {short.decision.message}",
            {**short.decision.details, "pooled_samples": float(pooled.count)}))

    def policy_for(self, tenant: str | None, intent: str) -> RefitPolicy:
        """The guards and contract a tenant's map (tenant None: the intent's pooled map) is refitted under."""
        if self._policy_for is not None:
            return self._policy_for(tenant, intent)
        return self.pooled_policy if tenant is None else self.policy

    def _credibility(self, model: str, model_version: str, intent: str, pooled: WindowedSketch) -> Credibility:
        tenants = {k[3]: s for k, s in self._sketches.items()
                   if k[:3] == (model, model_version, intent) and k[3] is not None and s.count > 0}
        return credibility(tenants, pooled)

    def _version_after(self, key: SketchKey) -> int:
        mine = self._published.get(key)
        return mine.version if mine is not None else 0


def with_evidence(qmap: QuantileMap, sample: ScoreSample | None, cred: Credibility, reference: ReferenceDistribution,
                  contract: Contract, thresholds: Sequence[float] = ()) -> QuantileMap:
    """``qmap`` recording, per watch threshold, the effective samples the contract's judgement gives it on the
    tenant's ``sample`` borrowing from ``cred``, so promotion judges a blended map like any other.

    ``thresholds``: the route's watch thresholds, else the reference's at :data:`DEFAULT_CONTRACT_RATES`
    (what promotion judges).
    """
    evidence = []
    for tau in thresholds or tuple(float(t) for t in reference.threshold_for(DEFAULT_CONTRACT_RATES)):
        target = float(reference.alert_rate(tau))
        if 0.0 < target < 1.0:
            evidence.append((tau, judge(qmap, tau, target, sample, contract, cred).effective_samples))
    record = qmap.to_record()
    record["evidence"] = [{"threshold": t, "effective_samples": min(n, 1e15)} for t, n in evidence]
    return QuantileMap.from_record(record)


def refitter_for_routes(routes: Iterable[Any], reference: Callable[[str], ReferenceDistribution], *,
                        min_samples: int, min_tail_samples: int, max_alert_rate_shift: float,
                        window_seconds: float, store: MapStore | None = None,
                        contract: Contract | None = None) -> Refitter:
    """A Refitter whose references and watched thresholds come from the routes in force.

    A tenant's maps target its route's reference; the pooled map of an intent targets the
    reference most of that intent's routes use; the guards use the tenant's own watch thresholds.
    ``routes`` is re-read at every refit (pass a live RouteTable).
    """

    def resolve(tenant: str | None, intent: str) -> ReferenceDistribution:
        names = [r.reference for r in routes if r.intent == intent and (tenant is None or r.tenant == tenant)]
        return reference(max(set(names), key=names.count) if names else "uniform@1")

    def policy_for(tenant: str | None, intent: str) -> RefitPolicy:
        """The tail guard counts samples above the highest threshold *this* tenant watches."""
        mine = [r for r in routes if r.intent == intent and (tenant is None or r.tenant == tenant)]
        thresholds = sorted({float(t) for r in mine for t in r.watch_thresholds})
        if tenant is None and thresholds:
            thresholds = thresholds[:1]  # pooled maps serve small tenants: guard on the lowest common threshold
        return RefitPolicy(min_samples=min_samples, min_tail_samples=min_tail_samples,
                           watch_thresholds=thresholds, max_alert_rate_shift=max_alert_rate_shift,
                           contract=contract or Contract())

    return Refitter(resolve, policy_for(None, ""), store=store, window_seconds=window_seconds,
                    policy_for=policy_for)
