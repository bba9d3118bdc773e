"""Demo models trained on synthetic traffic, so museflow can be shown end to end without real data.

Trains ``fraud-cnp`` v1 (all data, few features, JSON artifact), ``fraud-cnp`` v2 (negatives
down-sampled at beta=0.1 as recorded in its spec, more trees and features, UBJ artifact — its raw
scores sit far higher than v1's, which is what the quantile maps must absorb) and ``ato`` v1 for
account takeover. Features are built by the same :class:`~museflow.model.features.FeatureBuilder` the
scorer uses, so training and serving cannot disagree.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from museflow.demo.loadgen import (
    ACCOUNT_TAKEOVER,
    CARD_NOT_PRESENT,
    DEFAULT_TENANTS,
    GeneratedEvent,
    TenantProfile,
    TransactionGenerator,
)
from museflow.model.features import FeatureBuilder
from museflow.model.spec import ArtifactRef, ModelSpec, dump_spec, spec_from_mapping

__all__ = [
    "DEFAULT_DEMO_EVENTS",
    "DEMO_ROUTES_FILE",
    "DEMO_START_MS",
    "SHOWCASE_ROUTES",
    "DemoModel",
    "demo_routes_yaml",
    "roc_auc",
    "train_demo",
    "train_demo_models",
]

DEFAULT_DEMO_EVENTS = 300_000
DEMO_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: fixed so artifacts are reproducible
DEMO_ROUTES_FILE = "routes.yaml"

SHOWCASE_ROUTES = """
routes:
  - {tenant: acme-bank, intent: card-not-present, champion: fraud-cnp@1,
     candidates: [{model: fraud-cnp@2, mode: shadow, fraction: 1.0}], watch_thresholds: [0.95, 0.99]}
  - {tenant: globex-pay, intent: card-not-present, champion: fraud-cnp@1,
     candidates: [{model: fraud-cnp@2, mode: canary, fraction: 0.1}], watch_thresholds: [0.95]}
  - {tenant: initech-fin, intent: card-not-present, champion: fraud-cnp@1, watch_thresholds: [0.95]}
  - {tenant: acme-bank, intent: account-takeover, champion: ato@1}
  - {tenant: globex-pay, intent: account-takeover, champion: ato@1}
  - {tenant: initech-fin, intent: account-takeover, champion: ato@1}
"""
"""The demo models on three tenants x two intents, with a shadow and a 10% canary of fraud-cnp v2
(the routes the pipeline tests and the soak run)."""
_OWNERS = ["risk-ml@museflow.example"]

_CNP_V1: list[dict[str, Any]] = [
    {"name": "log_amount", "source": "amount", "type": "float", "default": 0.0, "transform": "log1p"},
    {"name": "velocity_1h", "source": "attributes.velocity_1h", "type": "int", "default": 0,
     "transform": {"clip": {"lo": 0, "hi": 50}}},
    {"name": "log_distance_km", "source": "attributes.distance_km", "type": "float", "default": None,
     "transform": "log1p"},
    {"name": "account_age_days", "source": "attributes.account_age_days", "type": "int", "default": None},
    {"name": "billing_shipping_match", "source": "attributes.billing_shipping_match", "type": "bool",
     "default": True},
    {"name": "channel", "source": "channel", "type": "category", "default": None,
     "transform": {"one_hot": ["web", "app", "phone"]}},
    {"name": "hour_of_day", "source": "attributes.hour_of_day", "type": "int", "default": None},
]
_CNP_V2: list[dict[str, Any]] = [
    *_CNP_V1,
    {"name": "amount_vs_avg_30d", "source": "amount", "type": "float", "default": None,
     "transform": [{"ratio": {"denominator": "attributes.amount_avg_30d", "on_zero": 0.0}},
                   {"clip": {"lo": 0, "hi": 100}}]},
    {"name": "velocity_24h", "source": "attributes.velocity_24h", "type": "int", "default": 0},
    {"name": "foreign_merchant", "source": "merchant_country", "type": "category", "default": None,
     "transform": {"lookup": {"table": {"DE": 0, "US": 0, "GB": 0}, "default": 1}}},
    {"name": "risky_mcc", "source": "merchant_category", "type": "category", "default": None,
     "transform": {"one_hot": ["5732", "7995", "4829", "5944"]}},
    {"name": "ip_risk", "source": "attributes.ip_risk", "type": "float", "default": None},
    {"name": "new_device", "source": "attributes.new_device", "type": "bool", "default": False},
    {"name": "day_part", "source": "attributes.hour_of_day", "type": "int", "default": None,
     "transform": {"bucketize": [6, 12, 18, 22]}},
]
_ATO_V1: list[dict[str, Any]] = [
    {"name": "failed_logins_24h", "source": "attributes.failed_logins_24h", "type": "int", "default": 0,
     "transform": {"clip": [0, 20]}},
    {"name": "log_device_age_days", "source": "attributes.device_age_days", "type": "int", "default": None,
     "transform": "log1p"},
    {"name": "new_device", "source": "attributes.new_device", "type": "bool", "default": False},
    {"name": "password_reset_7d", "source": "attributes.password_reset_7d", "type": "bool", "default": False},
    {"name": "ip_risk", "source": "attributes.ip_risk", "type": "float", "default": None},
    {"name": "log_amount", "source": "amount", "type": "float", "default": 0.0, "transform": "log1p"},
    {"name": "account_age_days", "source": "attributes.account_age_days", "type": "int", "default": None},
    {"name": "log_distance_km", "source": "attributes.distance_km", "type": "float", "default": None,
     "transform": "log1p"},
    {"name": "channel", "source": "channel", "type": "category", "default": None,
     "transform": {"one_hot": ["web", "app", "phone"]}},
    {"name": "transfer", "source": "merchant_category", "type": "category", "default": None,
     "transform": {"equals": "4829"}},
]


@dataclass(frozen=True)
class _Recipe:
    name: str
    version: str
    intent: str
    features: list[dict[str, Any]]
    beta: float
    rounds: int
    depth: int
    fmt: str
    description: str


_RECIPES = (
    _Recipe("fraud-cnp", "1", CARD_NOT_PRESENT, _CNP_V1, 1.0, 60, 4, "json",
            "Card-not-present fraud, baseline: all training data, 7 features."),
    _Recipe("fraud-cnp", "2", CARD_NOT_PRESENT, _CNP_V2, 0.1, 150, 5, "ubj",
            "Card-not-present fraud, challenger: negatives down-sampled at 0.1, 14 features."),
    _Recipe("ato", "1", ACCOUNT_TAKEOVER, _ATO_V1, 1.0, 80, 4, "ubj",
            "Account takeover: login, device and password-reset signals."),
)


@dataclass(frozen=True)
class DemoModel:
    """One trained demo model: where its spec and artifact are and how well it ranks held-out data."""

    name: str
    version: str
    intent: str
    spec_path: Path
    artifact_path: Path
    auc: float
    train_rows: int
    holdout_rows: int
    beta: float
    mean_probability: float
    holdout_fraud_rate: float


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve via average ranks (Mann-Whitney U); ties count one half."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec(recipe: _Recipe, sha256: str, training: Mapping[str, Any]) -> ModelSpec:
    return spec_from_mapping(
        {
            "name": recipe.name,
            "version": recipe.version,
            "description": recipe.description,
            "owners": _OWNERS,
            "intents": [recipe.intent],
            "framework": "xgboost",
            "artifact": {"uri": f"{recipe.name}-{recipe.version}.{recipe.fmt}", "format": recipe.fmt,
                         "sha256": sha256},
            "features": recipe.features,
            "training": dict(training),
            "sla": {"p99_ms": 25},
            "monitoring": {"features": [f["name"] for f in recipe.features[:3]]},
        },
        origin=f"demo:{recipe.name}-{recipe.version}",
    )


def _train_one(
    recipe: _Recipe,
    train: Sequence[GeneratedEvent],
    holdout: Sequence[GeneratedEvent],
    out_dir: Path,
    seed: int,
) -> DemoModel:
    draft = _spec(recipe, "0" * 64, {"negative_sampling_rate": recipe.beta})
    builder = FeatureBuilder(draft)
    y = np.fromiter((g.is_fraud for g in train), dtype=bool, count=len(train))
    rng = np.random.default_rng(seed)
    keep = y | (rng.random(len(train)) < recipe.beta)
    kept = [g for g, k in zip(train, keep.tolist(), strict=True) if k]
    x_train = builder.build([g.event for g in kept]).values
    dtrain = xgb.DMatrix(x_train, label=y[keep].astype(np.float32), feature_names=list(draft.columns))
    params = {
        "objective": "binary:logistic", "eval_metric": "auc", "tree_method": "hist", "max_depth": recipe.depth,
        "eta": 0.1, "subsample": 0.9, "min_child_weight": 2.0, "nthread": 2, "seed": seed,
    }
    booster = xgb.train(params, dtrain, num_boost_round=recipe.rounds)
    artifact = out_dir / draft.artifact.uri
    data = bytes(booster.save_raw(raw_format=recipe.fmt))
    artifact.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()

    holdout_y = np.fromiter((g.is_fraud for g in holdout), dtype=bool, count=len(holdout))
    x_hold = builder.build([g.event for g in holdout]).values
    raw = booster.inplace_predict(x_hold, validate_features=False)
    auc = roc_auc(holdout_y, raw)
    beta = recipe.beta
    mean_p = float(np.mean(beta * raw / (beta * raw - raw + 1.0)))
    times = [g.event["event_time"] for g in train]
    training = {
        "negative_sampling_rate": beta,
        "window": {"start": _iso(min(times)), "end": _iso(max(times))},
        "rows": len(kept),
        "metrics": {"auc_holdout": round(auc, 4)},
    }
    spec = dataclasses.replace(
        _spec(recipe, sha, training),
        artifact=ArtifactRef(draft.artifact.uri, draft.artifact.format, sha),
    )
    spec_path = out_dir / f"{recipe.name}-{recipe.version}.yaml"
    spec_path.write_text(dump_spec(spec), encoding="utf-8")
    return DemoModel(
        name=recipe.name, version=recipe.version, intent=recipe.intent, spec_path=spec_path,
        artifact_path=artifact, auc=auc, train_rows=len(kept), holdout_rows=len(holdout), beta=beta,
        mean_probability=mean_p, holdout_fraud_rate=float(holdout_y.mean()) if len(holdout) else 0.0,
    )


def demo_routes_yaml(tenants: Sequence[TenantProfile] = DEFAULT_TENANTS) -> str:
    """The demo's starting routes: every tenant's intents on the v1 champions (fraud-cnp@1, ato@1).

    ``museflow models train-demo`` writes it beside the specs as :data:`DEMO_ROUTES_FILE`, where the
    compose stack's publish step (``deploy/compose/publish-demo.sh``) applies it with ``museflow routes
    set -f`` after deploying every spec; v2 joins later as a shadow (see ``museflow demo``).
    """
    champion = {CARD_NOT_PRESENT: "fraud-cnp@1", ACCOUNT_TAKEOVER: "ato@1"}
    lines = ["# Demo routes written by `museflow models train-demo`: apply with `museflow routes set -f`.", "routes:"]
    for tenant in tenants:
        for intent in tenant.intents:
            if intent in champion:
                lines.append(f"  - {{tenant: {tenant.name}, intent: {intent}, champion: {champion[intent]}}}")
    return "\n".join(lines) + "\n"


def train_demo_models(
    out_dir: str | Path,
    seed: int = 0,
    n_events: int = DEFAULT_DEMO_EVENTS,
    progress: Callable[[str], None] | None = None,
) -> list[DemoModel]:
    """Generate traffic, train every demo model, write specs and artifacts into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)
    say(f"generating {n_events:,} synthetic events (seed {seed})")
    events = TransactionGenerator(seed=seed, start_ms=DEMO_START_MS).generate(n_events)
    split = int(len(events) * 0.8)
    results: list[DemoModel] = []
    for recipe in _RECIPES:
        train = [g for g in events[:split] if g.event["intent"] == recipe.intent]
        holdout = [g for g in events[split:] if g.event["intent"] == recipe.intent]
        say(f"training {recipe.name} v{recipe.version} on {len(train):,} {recipe.intent} events "
            f"(beta={recipe.beta})")
        results.append(_train_one(recipe, train, holdout, out, seed))
    return results


def train_demo(
    out_dir: str | Path,
    seed: int = 0,
    n_events: int = DEFAULT_DEMO_EVENTS,
    echo: Callable[[str], None] | None = print,
) -> list[Path]:
    """Train the demo models into ``out_dir``, print a held-out AUC summary, return the spec paths."""
    models = train_demo_models(out_dir, seed=seed, n_events=n_events, progress=echo)
    if echo is not None:
        for m in models:
            echo(
                f"{m.name} v{m.version}: held-out AUC {m.auc:.3f}, beta {m.beta}, mean corrected p "
                f"{m.mean_probability:.4f} vs fraud rate {m.holdout_fraud_rate:.4f} -> {m.spec_path}"
            )
    return [m.spec_path for m in models]
