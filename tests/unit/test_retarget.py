"""A route re-targeted onto a new reference: old maps neither serve it nor block its first map."""

from __future__ import annotations

import numpy as np

from museflow.transform.qmap import MapStore, QuantileMap
from museflow.transform.reference import ReferenceDistribution
from museflow.transform.refit import RefitPolicy, Refitter


def qmap(tenant: str | None, reference: str, version: int = 1) -> QuantileMap:
    name, _, ref_version = reference.partition("@")
    return QuantileMap(model="m", model_version="1", tenant=tenant, intent="cnp", version=version,
                       reference_name=name, reference_version=int(ref_version), knots_x=[0, 1], knots_y=[0, 1])


def test_resolve_skips_maps_fitted_onto_another_reference() -> None:
    store = MapStore()
    store.put(qmap("acme", "uniform@1"))
    store.put(qmap(None, "uniform@1"))
    assert store.resolve("m", "1", "acme", "cnp", reference="uniform@1").tenant == "acme"
    assert store.resolve("m", "1", "acme", "cnp", reference="acme-ref@1").is_identity
    store.put(qmap(None, "acme-ref@1", version=2))
    assert store.resolve("m", "1", "acme", "cnp", reference="acme-ref@1").pooled


def test_a_reference_change_publishes_a_first_map_instead_of_holding_it_as_a_shift() -> None:
    rng = np.random.default_rng(3)
    scores = rng.beta(1, 40, 20_000)
    references = {"uniform": ReferenceDistribution.uniform(), "frozen": ReferenceDistribution.from_samples(
        "acme-ref", 1, rng.beta(1, 40, 50_000))}
    target = {"name": "uniform"}
    policy = RefitPolicy(min_samples=1000, min_tail_samples=10, watch_thresholds=(0.05,), max_alert_rate_shift=0.25)
    refitter = Refitter(lambda tenant, intent: references[target["name"]], policy)
    refitter.observe("m", "1", "acme", "cnp", scores, now=1000.0)
    (first,) = [o for o in refitter.refit(1000.0) if o.key[3] == "acme"]
    assert first.published and first.candidate is not None and first.candidate.reference_name == "uniform"

    target["name"] = "frozen"  # the route now maps onto the tenant's frozen reference
    refitter.observe("m", "1", "acme", "cnp", scores, now=1001.0)
    (second,) = [o for o in refitter.refit(1001.0) if o.key[3] == "acme"]
    assert second.published, second.decision.message
    assert second.candidate is not None and second.candidate.reference_name == "acme-ref"
    assert second.candidate.version == first.candidate.version + 1
