"""Swap rehearsal: retained traffic scored by champion and candidate, maps fitted, alert rates predicted.

:class:`Rehearsal` takes decoded events in batches (from :mod:`museflow.kafka.replay`), keeps
those of the rehearsed routes that pass the router's validation, and scores them the way the
scorer does (:meth:`museflow.model.scoring.LoadedModel.score`: features, transforms, posterior
correction; the champion's served map onto the route's reference). :meth:`Rehearsal.fit_maps`
fits the candidate's map per tenant from *exact* quantiles of its corrected scores, and
:func:`build_report` predicts what each tenant's alert rate at each watch threshold will be once
the candidate serves with that map.

A tenant whose own map the refit agent's guards would hold for want of samples (the same
:meth:`~museflow.transform.refit.RefitPolicy.decide`) gets what that agent would serve it: its
scores blended with the pool of every rehearsed route of the intent, on its own reference
(:func:`~museflow.control.contract.blend_map`), carrying the effective samples promotion judges
(:func:`~museflow.transform.refit.with_evidence`); as there, only with two or more tenants and
enough pooled scores. Its source stays ``rehearsal``: the tenant's first own live refit that passes
the guards replaces it. A tenant with enough samples keeps its own exact fit.

Everything is a function of the set of replayed events: scores are sorted by event id before
anything order-sensitive, quantiles are exact (pooled ones too, tenants taken in route order), and
no wall-clock time enters a map or a report, so two rehearsals of one window publish the same maps
and write byte-identical reports.

Verdicts: a route fails when its predicted alert rate's interval misses the target by more than
the tolerance; when the two models' mean corrected probabilities (each an estimate of the
tenant's fraud rate: the posterior correction makes them calibrated) differ by more than a
factor 1.5; when the candidate's rank agreement with the champion (Spearman) is below 0.3 or,
with three or more routes, more than 0.08 below the routes' median; or, on labelled events, when
it catches significantly fewer frauds than the champion at the same alert rate (exact one-sided
McNemar, p < 0.01). The candidate is one model for every tenant, so a route that stands out is
traffic it reads differently: a feature missing or in other units for one tenant. In the seeded
tests a tenant whose producer sends ``velocity_24h`` in other units (x100) has a probability
ratio of 3.4-3.6 against 1.04-1.13 for the healthy ones.

Prediction interval: the live alert rate of a map fitted at the empirical quantile of ``n``
scores with ``k`` above the threshold is the true exceedance probability of that quantile;
the 95% Wilson interval of ``k/n`` bounds it. A blended map's rows say so and give its effective
samples; their ``k/n`` is still on the tenant's own events (whether its traffic agrees with the
blend, not how precise the blend is). The raw-score rate (the candidate's corrected probability
above the threshold, no map) shows what the swap would do unmapped.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.contracts.validation import validate_event
from museflow.control.contract import Contract, Credibility, blend_map, credibility
from museflow.control.routing import ModelRef, Route
from museflow.control.state import PipelineState, rejection_key
from museflow.errors import MapError, RouteError, ValidationError
from museflow.model.scoring import LoadedModel
from museflow.observe.estimate import check_calibration
from museflow.observe.performance import confusion_at
from museflow.transform.qmap import QuantileMap
from museflow.transform.reference import ReferenceDistribution
from museflow.transform.refit import SHORT, ExactSample, RefitPolicy, fit_map, with_evidence

__all__ = ["PREDICTION_CHECK", "Rehearsal", "RehearsalReport", "build_report", "rehearsal_vs_shadow", "spearman",
           "wilson", "write_report"]

FloatArray = npt.NDArray[np.float64]
DEFAULT_RATES = (0.05, 0.01, 0.005, 0.001)
FLIP_SAMPLE = 10
MIN_RANK_AGREEMENT = 0.3
RANK_OUTLIER_MARGIN = 0.08
MAX_PROBABILITY_RATIO = 1.5
FEWER_FRAUDS_P = 0.01
TOLERANCE = 0.10
MIN_SAMPLES = 50  # scores above a threshold before a row's prediction is judged
PREDICTION_CHECK = Contract(tolerance=0.15, confidence=0.99)
"""When a rehearsal's predicted alert rate can be checked against a live one: the map's fitting error
(its samples) and the live rate's (the scores measured) together keep a correct prediction within
±15% at 99% confidence (:meth:`Contract.can_compare`)."""


@dataclass
class _Scores:
    ids: list[str] = field(default_factory=list)
    champion: list[float] = field(default_factory=list)
    champion_mapped: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)


class Rehearsal:
    """Champion and candidate scores of the replayed events of ``routes``.

    ``policy_for(tenant, intent)`` gives the refit agent's guards and contract for a tenant's map (tenant
    None: the intent's pooled map), e.g. :meth:`museflow.transform.refit.Refitter.policy_for`; by default
    :class:`RefitPolicy`'s own on the route's watch thresholds.
    """

    def __init__(self, state: PipelineState, candidate: ModelRef, routes: Sequence[Route], *,
                 policy_for: Callable[[str | None, str], RefitPolicy] | None = None) -> None:
        if not routes:
            raise RouteError(f"nothing to rehearse {candidate} on: no route given or in force")
        self.state = state
        self.candidate = candidate
        self.routes = {(r.tenant, r.intent): r for r in routes}
        self._policy_for = policy_for
        self._model = self._loaded(candidate)
        self._scores: dict[tuple[str, str], _Scores] = defaultdict(_Scores)
        self.seen = 0
        self.skipped = 0

    def _loaded(self, ref: ModelRef) -> LoadedModel:
        model = self.state.registry.find(ref.name, ref.version)
        if model is None:
            why = self.state.rejected.get(rejection_key("deployment", ref), "not deployed")
            raise RouteError(f"{ref} cannot be rehearsed: it is not loaded ({why}); museflow models deploy SPEC")
        return model

    def observe(self, events: Sequence[Mapping[str, Any] | Exception], timestamps: Sequence[int]) -> int:
        """Score the events of the rehearsed routes; returns how many were kept.

        An event the router would dead-letter is skipped; clock skew is judged against the
        record's Kafka timestamp (what the router's clock said then), not the replay's.
        """
        groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
        for event, ts in zip(events, timestamps, strict=True):
            self.seen += 1
            if isinstance(event, Exception) or (event.get("tenant"), event.get("intent")) not in self.routes:
                continue
            try:
                validate_event(event, now_ms=ts)
            except ValidationError:
                self.skipped += 1
                continue
            groups[(str(event["tenant"]), str(event["intent"]))].append(event)
        kept = 0
        for key, batch in groups.items():
            route = self.routes[key]
            champion = self._loaded(route.champion)
            served = champion.score(batch).probability
            qmap = self.state.maps.resolve(route.champion.name, route.champion.version, key[0], key[1],
                                           reference=route.reference)
            scored = self._model.score(batch).probability
            acc = self._scores[key]
            acc.ids.extend(str(e["event_id"]) for e in batch)
            acc.event_times.extend(_millis(e["event_time"]) for e in batch)
            acc.champion.extend(served.tolist())
            acc.champion_mapped.extend(qmap.apply(served).tolist())
            acc.candidate.extend(scored.tolist())
            kept += len(batch)
        return kept

    def columns(self, key: tuple[str, str]) -> dict[str, Any]:
        """The scores of one route, sorted by event id (the order they arrived in does not matter)."""
        acc = self._scores.get(key, _Scores())
        order = np.argsort(np.asarray(acc.ids, dtype=object), kind="stable") if acc.ids else np.empty(0, int)
        return {
            "ids": [acc.ids[i] for i in order],
            "champion": np.asarray(acc.champion, dtype=np.float64)[order],
            "champion_mapped": np.asarray(acc.champion_mapped, dtype=np.float64)[order],
            "candidate": np.asarray(acc.candidate, dtype=np.float64)[order],
            "event_times": np.asarray(acc.event_times, dtype=np.int64)[order],
        }

    def _policy(self, tenant: str | None, intent: str) -> RefitPolicy:
        """The refit guards and contract a tenant's map (tenant None: the intent's pooled map) is held to."""
        if self._policy_for is not None:
            return self._policy_for(tenant, intent)
        route = self.routes.get((tenant, intent)) if tenant is not None else None
        return RefitPolicy(watch_thresholds=route.watch_thresholds if route is not None else ())

    def fit_maps(self, window: tuple[int, int], next_version: Mapping[tuple[str, str], int]) -> dict[
            tuple[str, str], QuantileMap | MapError]:
        """The candidate's map per route onto the route's reference, fitted on the window's scores.

        A route whose own map the refit guards would hold for want of samples gets its scores blended with
        the intent's pooled ones instead, as the refit agent would serve it.
        """
        scores = {key: self.columns(key)["candidate"] for key in sorted(self.routes)}
        samples = {key: ExactSample(values, window[0]) for key, values in scores.items()}
        pools: dict[str, Credibility | None] = {}
        out: dict[tuple[str, str], QuantileMap | MapError] = {}
        for key, route in sorted(self.routes.items()):
            sample = samples[key]
            reference = self.state.reference(route.reference)
            tail = route.watch_thresholds[-1] if route.watch_thresholds else None
            own: QuantileMap | MapError
            try:
                own = fit_map(sample, reference, model=self.candidate.name,
                              model_version=self.candidate.version, tenant=key[0], intent=key[1],
                              version=next_version.get(key, 1), tail_threshold=tail, now_ms=window[1])
            except MapError as exc:
                own = exc
            held = isinstance(own, MapError) or self._policy(*key).decide(own, None, sample).reason in SHORT
            short = sample.count > 0 and held  # a route without traffic in the window is not blended
            if short and key[1] not in pools:
                pools[key[1]] = self._pool(key[1], scores, samples)
            cred = pools[key[1]] if short else None
            blended = None if cred is None else self._blended(key, sample, cred, window, next_version.get(key, 1))
            out[key] = own if blended is None else blended
        return out

    def _pool(self, intent: str, scores: Mapping[tuple[str, str], FloatArray],
              samples: Mapping[tuple[str, str], ExactSample]) -> Credibility | None:
        """How the intent's tenants differ around the pool of every rehearsed route's scores; None, as for the
        refit agent, with one tenant or fewer pooled scores than the guards ask."""
        tenants = {key[0]: sample for key, sample in samples.items() if key[1] == intent and sample.count > 0}
        pooled = ExactSample(np.concatenate([values for key, values in scores.items() if key[1] == intent]))
        if len(tenants) < 2 or pooled.count < self._policy(None, intent).min_samples or not pooled.max > pooled.min:
            return None
        return credibility(tenants, pooled)

    def _blended(self, key: tuple[str, str], sample: ExactSample, cred: Credibility, window: tuple[int, int],
                 version: int) -> QuantileMap | None:
        """The tenant's scores blended with the pool on its own reference, carrying the evidence promotion
        judges (:func:`museflow.transform.refit.with_evidence`); None when the blend cannot be fitted."""
        reference = self.state.reference(self.routes[key].reference)
        try:
            blended = blend_map(sample, cred, reference, model=self.candidate.name,
                                model_version=self.candidate.version, tenant=key[0], intent=key[1], version=version,
                                now_ms=window[1], source="rehearsal")
        except MapError:
            return None
        policy = self._policy(*key)
        windowed = QuantileMap.from_record({**blended.to_record(), "window_start_ms": window[0]})
        return with_evidence(windowed, sample, cred, reference, policy.contract, policy.watch_thresholds)


@dataclass(frozen=True)
class Row:
    """One (route, threshold): what the candidate with its rehearsal map is predicted to do."""

    tenant: str
    intent: str
    threshold: float
    target_rate: float
    samples: int
    fit: str
    """``own`` (fitted on this route's scores alone), ``blended`` (with the intent's pooled scores) or ``none``."""
    effective_samples: float
    """What the map's alert rate at this threshold rests on: ``samples``, or a blended map's evidence."""
    champion_mapped_rate: float
    predicted_rate: float
    interval: tuple[float, float]
    raw_rate: float
    flips_champion_only: int
    flips_candidate_only: int
    flip_sample: list[str]
    precision: dict[str, float]
    recall: dict[str, float]
    verdict: str


@dataclass(frozen=True)
class RehearsalReport:
    candidate: str
    window: tuple[int, int]
    rows: list[Row]
    routes: dict[str, dict[str, Any]]
    maps: dict[str, dict[str, Any]]

    def verdicts(self) -> dict[str, str]:
        """Per route: ``ok`` or what is wrong (the first failing reason)."""
        return {key: info["verdict"] for key, info in self.routes.items()}

    def to_json(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "window": list(self.window), "routes": self.routes, "maps": self.maps,
                "rows": [asdict(r) for r in self.rows]}


def build_report(rehearsal: Rehearsal, maps: Mapping[tuple[str, str], QuantileMap | MapError],
                 window: tuple[int, int], labels: Mapping[str, bool] | None = None,
                 tolerance: float = TOLERANCE) -> RehearsalReport:
    """Per route and threshold: target, predicted rate with interval, raw rate, flips, precision/recall."""
    labels = labels or {}
    rhos = {key: spearman(rehearsal.columns(key)["champion"], rehearsal.columns(key)["candidate"])
            for key in rehearsal.routes}
    finite = [r for r in rhos.values() if math.isfinite(r)]
    typical = float(np.median(finite)) if len(finite) >= 3 else math.nan
    rows: list[Row] = []
    routes: dict[str, dict[str, Any]] = {}
    map_info: dict[str, dict[str, Any]] = {}
    for key, route in sorted(rehearsal.routes.items()):
        name = f"{key[0]}/{key[1]}"
        cols = rehearsal.columns(key)
        n = len(cols["ids"])
        reference = rehearsal.state.reference(route.reference)
        fitted = maps.get(key)
        problems: list[str] = []
        if n == 0:
            routes[name] = {"samples": 0, "rank_agreement": math.nan, "verdict": "no traffic in the window"}
            continue
        if not isinstance(fitted, QuantileMap):
            problems.append(f"no map: {fitted}")
            mapped = np.full(n, math.nan)
        else:
            mapped = fitted.apply(cols["candidate"])
            map_info[name] = {"version": fitted.version, "fit": _fit(fitted), "samples": fitted.sample_count,
                              "tail_samples": fitted.tail_sample_count, "reference": route.reference,
                              "knots": len(fitted.knots_x)}
            if fitted.evidence:
                map_info[name]["effective_samples"] = {f"{t:g}": e for t, e in fitted.evidence}
        rho = rhos[key]
        known = [i for i, event_id in enumerate(cols["ids"]) if event_id in labels]
        y = np.asarray([labels[cols["ids"][i]] for i in known], dtype=bool)
        ratio = float(np.mean(cols["candidate"]) / np.mean(cols["champion"])) if np.mean(cols["champion"]) else math.nan
        if not 1 / MAX_PROBABILITY_RATIO <= ratio <= MAX_PROBABILITY_RATIO:
            means = f"{np.mean(cols['candidate']):.4f} vs {np.mean(cols['champion']):.4f}"
            problems.append(f"the candidate's probabilities disagree with the champion's (mean {means}): "
                            "a feature broken or in other units for this traffic?")
        if rho < MIN_RANK_AGREEMENT:
            problems.append(f"ranks disagree with the champion (Spearman {rho:.2f} < {MIN_RANK_AGREEMENT})")
        elif rho < typical - RANK_OUTLIER_MARGIN:
            problems.append(f"ranks agree with the champion less than on the other routes (Spearman {rho:.2f} vs "
                            f"median {typical:.2f}): a feature broken for this traffic?")
        for tau in route.watch_thresholds or tuple(float(t) for t in reference.threshold_for(DEFAULT_RATES)):
            target = float(reference.alert_rate(tau))
            # The champion's decisions at the same alert rate (as if served with a map fitted on this
            # window), so flips and recall compare rankings, not how well the champion's map holds.
            cut = float(np.quantile(cols["champion"], 1 - target, method="inverted_cdf"))
            champion_alert = cols["champion"] > cut
            candidate_alert = mapped > tau
            k = int(np.count_nonzero(candidate_alert))
            low, high = wilson(k, n)
            only_champion = np.flatnonzero(champion_alert & ~candidate_alert)
            only_candidate = np.flatnonzero(candidate_alert & ~champion_alert)
            sample = sorted(cols["ids"][i] for i in np.concatenate([only_champion, only_candidate]))[:FLIP_SAMPLE]
            precision, recall = {}, {}
            if y.size and y.any():
                for who, alerted in (("champion", champion_alert), ("candidate", candidate_alert)):
                    c = confusion_at(alerted[known].astype(np.float64), y, 0.5)
                    precision[who], recall[who] = c.precision, c.recall
            verdict = "ok"
            predicted = k / n
            if k >= MIN_SAMPLES and not (low <= target * (1 + tolerance) and high >= target * (1 - tolerance)):
                verdict = f"alert rate {predicted:.3%} vs target {target:.3%}"
            elif y.size and (p := fewer_frauds_p(champion_alert[known], candidate_alert[known], y)) < FEWER_FRAUDS_P:
                verdict = (f"catches fewer frauds than the champion at the same alert rate (recall "
                           f"{recall['candidate']:.2f} vs {recall['champion']:.2f}, McNemar p={p:.2g})")
            elif k < MIN_SAMPLES:
                verdict = f"too few samples ({k} above the threshold, {MIN_SAMPLES} needed to judge)"
            if verdict != "ok" and not verdict.startswith("too few"):
                problems.append(f"at {tau:g}: {verdict}")
            rows.append(Row(key[0], key[1], float(tau), target, n, _fit(fitted), _effective_samples(fitted, tau),
                            float(np.mean(cols["champion_mapped"] > tau)), predicted, (low, high),
                            float(np.mean(cols["candidate"] > tau)), int(only_champion.size),
                            int(only_candidate.size), sample, precision, recall, verdict))
        calibration = {}
        if y.size:  # how far CBPE (museflow.observe.estimate) can be trusted for each model on this route
            for who in ("champion", "candidate"):
                cal = check_calibration(cols[who][known], y)
                calibration[who] = {"ece": cal.ece, "relative_ece": cal.relative_ece, "frauds": cal.positives,
                                    "trustworthy": cal.trustworthy}
        routes[name] = {"samples": n, "labelled": int(y.size), "rank_agreement": rho, "probability_ratio": ratio,
                        "calibration": calibration,
                        "verdict": "ok" if not problems else "; ".join(problems)}
    return RehearsalReport(str(rehearsal.candidate), window, rows, routes, map_info)


def _fit(qmap: QuantileMap | MapError | None) -> str:
    """A map carrying evidence is blended (:func:`museflow.transform.refit.with_evidence`); else its own fit."""
    if not isinstance(qmap, QuantileMap):
        return "none"
    return "blended" if qmap.evidence else "own"


def _effective_samples(qmap: QuantileMap | MapError | None, threshold: float) -> float:
    """Its samples, or a blended map's evidence at ``threshold`` (nan where it has none: promotion judges it
    only at its evidence's thresholds); 0 without a map."""
    if not isinstance(qmap, QuantileMap):
        return 0.0
    if qmap.evidence and not any(abs(t - threshold) <= 1e-9 for t, _ in qmap.evidence):
        return math.nan
    return qmap.effective_samples(threshold)


def rehearsal_vs_shadow(rehearsal: QuantileMap, shadow: QuantileMap, reference: ReferenceDistribution,
                        rates: Sequence[float] = (0.05, 0.01)) -> dict[float, float]:
    """Per target alert rate: the rate the rehearsal's map gives on the traffic the shadow map was fitted on.

    The shadow map is ``Q_ref(F_shadow(p))``, so the share of that traffic above the corrected
    score where the rehearsal's map crosses ``tau`` is ``alert_rate_ref(shadow(rehearsal^-1(tau)))``.
    """
    out = {}
    for rate in rates:
        cut = rehearsal.inverse(reference.threshold_for(rate))
        out[float(rate)] = float(reference.alert_rate(shadow.apply(cut)))
    return out


def fewer_frauds_p(champion: npt.NDArray[np.bool_], candidate: npt.NDArray[np.bool_],
                   fraud: npt.NDArray[np.bool_]) -> float:
    """One-sided exact McNemar p-value that the candidate catches fewer frauds than the champion.

    Among frauds alerted by exactly one model, ``b`` by the champion only and ``c`` by the
    candidate only; with equal recall ``c ~ Binomial(b + c, 1/2)``, so ``p = P(X <= c)``.
    """
    b = int(np.count_nonzero(champion & ~candidate & fraud))
    c = int(np.count_nonzero(candidate & ~champion & fraud))
    n = b + c
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(c + 1)) / 2**n)


def spearman(a: FloatArray, b: FloatArray) -> float:
    """Spearman's rank correlation (average ranks for ties); nan with fewer than 3 pairs."""
    if a.size < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denominator if denominator else math.nan


def _ranks(values: FloatArray) -> FloatArray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0
    return np.asarray(average[inverse], dtype=np.float64)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of ``k / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def write_report(report: RehearsalReport, out_dir: Path) -> Path:
    """``rehearsal.md`` + ``rehearsal.json`` + one PNG per route in ``out_dir``; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start, end = (_iso(t) for t in report.window)
    lines = [f"# Rehearsal of {report.candidate} on retained traffic {start} .. {end}", "",
             "Champion and candidate scored every retained event of each route; the candidate's map was fitted "
             "on these scores. *predicted* is the alert rate the candidate will have once it serves with that "
             "map (95% interval); *raw* is its corrected probability above the threshold without a map; "
             "*flips* are events alerted by one model and not the other. *map* says how the map was fitted: *own* "
             "on the route's scores alone, or *blended* with the intent's pooled scores where the refit guards "
             "would hold the tenant's own map for want of samples; in brackets the samples its alert rate rests "
             "on (a blended map's effective samples, which promotion judges). *predicted* is measured on the "
             "route's own events either way.", "",
             "| route | events | labelled | rank agreement | calibration ECE / fraud rate (champion, candidate) "
             "| verdict |", "|---|---|---|---|---|---|"]
    for name, info in report.routes.items():
        cal = info.get("calibration") or {}
        ece = (", ".join(f"{cal[w]['relative_ece']:.2f}" + ("" if cal[w]["trustworthy"] is None else
                                                            " ok" if cal[w]["trustworthy"] else " untrustworthy")
                         for w in ("champion", "candidate")) if cal else "no labels")
        lines.append(f"| {name} | {info['samples']:,} | {info.get('labelled', 0):,} | "
                     f"{info['rank_agreement']:.3f} | {ece} | {info['verdict']} |")
    lines += ["", "| route | threshold | target | map (samples) | champion now | predicted | interval | raw | "
              "flips champion-only | flips candidate-only | precision (champion / candidate) | "
              "recall (champion / candidate) | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        pr = (f"{r.precision['champion']:.3f} / {r.precision['candidate']:.3f}" if r.precision else "no labels")
        rc = (f"{r.recall['champion']:.3f} / {r.recall['candidate']:.3f}" if r.recall else "no labels")
        fit = r.fit if r.fit == "none" else (
            f"{r.fit} ({r.effective_samples:,.0f})" if math.isfinite(r.effective_samples) else f"{r.fit} (-)")
        lines.append(f"| {r.tenant}/{r.intent} | {r.threshold:.4g} | {r.target_rate:.3%} | {fit} | "
                     f"{r.champion_mapped_rate:.3%} | {r.predicted_rate:.3%} | {r.interval[0]:.3%} .. "
                     f"{r.interval[1]:.3%} | {r.raw_rate:.3%} | {r.flips_champion_only:,} | "
                     f"{r.flips_candidate_only:,} | {pr} | {rc} | {r.verdict} |")
    flipped = [r for r in report.rows if r.flip_sample]
    if flipped:
        lines += ["", "Flipped decisions (a sample of event ids per row):", ""]
        lines += [f"- {r.tenant}/{r.intent} at {r.threshold:.4g}: {', '.join(r.flip_sample)}" for r in flipped]
    plots = _plot(report, out_dir)
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    md = out_dir / "rehearsal.md"
    md.write_text("\n".join(lines))
    (out_dir / "rehearsal.json").write_text(json.dumps(report.to_json(), indent=1, sort_keys=True))
    return md


def _plot(report: RehearsalReport, out_dir: Path) -> list[Path]:
    """Predicted vs target alert rate per route (PNG, no timestamps in the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_route: dict[str, list[Row]] = defaultdict(list)
    for r in report.rows:
        by_route[f"{r.tenant}/{r.intent}"].append(r)
    for name, rows in sorted(by_route.items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        targets = [r.target_rate for r in rows]
        ax.errorbar(targets, [r.predicted_rate for r in rows], fmt="o", label="predicted (mapped)",
                    yerr=np.abs(np.array([[r.predicted_rate - r.interval[0], r.interval[1] - r.predicted_rate]
                                          for r in rows]).T))
        ax.plot(targets, [r.raw_rate for r in rows], "x", label="raw (unmapped)")
        ax.plot(targets, [r.champion_mapped_rate for r in rows], "s", mfc="none", label="champion now")
        low, high = min(targets) / 2, max(targets) * 2
        ax.plot([low, high], [low, high], ":", color="black", label="target")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("target alert rate (reference)")
        ax.set_ylabel("alert rate")
        ax.set_title(f"{name}: {report.candidate}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"rehearsal-{name.replace('/', '-')}.png"
        fig.savefig(path, dpi=80, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def _iso(ms: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _millis(value: Any) -> int:
    if isinstance(value, int):
        return value
    timestamp = getattr(value, "timestamp", None)
    return int(timestamp() * 1000) if timestamp is not None else int(value)
