"""Verdict records of the alert-rate contract (``ContractVerdict.avsc``, topic ``museflow.verdicts``).

Every decision the contract takes on a route — a promotion, a refused promotion, a breach found
by the watch on served scores, the rollback it triggered — is appended as one record, so what
happened to a tenant's alert rates can be audited and replayed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from museflow.control.contract import Breach, Contract, Judgement

__all__ = ["KINDS", "breach_rows", "judgement_rows", "verdict_record"]

KINDS = ("promote", "hold", "breach", "rollback")


def _row(threshold: float, target: float, estimate: float, low: float, high: float, samples: int,
         needed: int, verdict: str) -> dict[str, Any]:
    return {"threshold": float(threshold), "target": float(target), "estimate": float(estimate), "low": float(low),
            "high": float(high), "samples": int(samples), "samples_needed": int(needed), "verdict": verdict}


def judgement_rows(judgements: Iterable[Judgement]) -> list[dict[str, Any]]:
    return [_row(j.threshold, j.target, j.estimate, j.interval[0], j.interval[1], round(j.effective_samples)
                 if math.isfinite(j.effective_samples) else j.samples, j.samples_needed, j.verdict)
            for j in judgements]


def breach_rows(breaches: Iterable[Breach], contract: Contract) -> list[dict[str, Any]]:
    """One row per breached threshold: the observed rate since the watch (re)started and its direction."""
    return [_row(b.threshold, b.target, b.observed, math.nan, math.nan, b.samples, contract.samples_needed(b.target),
                 b.direction) for b in breaches]


def verdict_record(kind: str, *, tenant: str, intent: str, model: str, model_version: str, route_version: int,
                   contract: Contract, rows: Iterable[dict[str, Any]] | Iterable[Judgement] = (), detail: str = "",
                   by: str = "", at_ms: int | None = None) -> dict[str, Any]:
    """A ``ContractVerdict`` record; ``rows`` are judgements or rows from :func:`breach_rows`."""
    if kind not in KINDS:
        raise ValueError(f"verdict kind {kind!r} is not one of {KINDS}")
    items = list(rows)
    table = judgement_rows(i for i in items if isinstance(i, Judgement)) + [
        i for i in items if isinstance(i, dict)]
    return {"kind": kind, "tenant": tenant, "intent": intent, "model": model, "model_version": str(model_version),
            "route_version": int(route_version), "tolerance": contract.tolerance, "confidence": contract.confidence,
            "thresholds": table, "detail": detail, "at": int(time.time() * 1000) if at_ms is None else at_ms,
            "by": by}
