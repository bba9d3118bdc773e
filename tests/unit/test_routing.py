from __future__ import annotations

import pytest

from museflow.control.routing import Candidate, ModelRef, Route, RouteTable, load_routes_yaml
from museflow.errors import RouteError

V1, V2, ATO = ModelRef("fraud-cnp", "1"), ModelRef("fraud-cnp", "2"), ModelRef("ato", "1")


def route(**kw: object) -> Route:
    base: dict[str, object] = {"tenant": "acme-bank", "intent": "card-not-present", "champion": V1, "version": 1}
    base.update(kw)
    return Route(**base)  # type: ignore[arg-type]


def test_canary_share_is_the_configured_fraction_and_deterministic_per_event_id() -> None:
    r = route(candidates=(Candidate(V2, "canary", 0.1),))
    decisions = [r.decide(f"evt-{i}") for i in range(20000)]
    share = sum(d.role == "canary" for d in decisions) / len(decisions)
    assert 0.09 < share < 0.11
    assert all(d.serve == (V2 if d.role == "canary" else V1) for d in decisions)
    assert [r.decide(f"evt-{i}").role for i in range(500)] == [d.role for d in decisions[:500]]


def test_shadow_candidates_never_serve_and_score_their_fraction() -> None:
    r = route(candidates=(Candidate(V2, "shadow", 0.5),))
    decisions = [r.decide(f"e{i}") for i in range(10000)]
    assert {d.serve for d in decisions} == {V1}
    assert 0.47 < sum(bool(d.shadows) for d in decisions) / 10000 < 0.53


def test_route_table_applies_only_newer_versions_and_keeps_history() -> None:
    table = RouteTable()
    assert table.apply(route(version=2))
    assert not table.apply(route(version=1, champion=V2))
    assert not table.apply(route(version=2, champion=V2))
    assert table.apply(route(version=3, champion=V2))
    current = table.get("acme-bank", "card-not-present")
    assert current is not None and current.champion == V2
    assert [r.version for r in table.history("acme-bank", "card-not-present")] == [2, 3]
    assert table.apply(route(version=4, deleted=True))
    assert table.get("acme-bank", "card-not-present") is None
    assert not table.apply(route(version=3))


def test_promotion_makes_the_candidate_champion_in_a_new_version() -> None:
    r = route(candidates=(Candidate(V2, "shadow", 1.0),), watch_thresholds=(0.9,))
    promoted = r.promoted(V2)
    assert (promoted.champion, promoted.version, promoted.candidates) == (V2, 2, ())
    with pytest.raises(RouteError, match="not a candidate"):
        r.promoted(ATO)


@pytest.mark.parametrize("tenant", ["Acme", "acme.bank", "acme/../x", "", "a" * 64, "acme_bank", "ü"])
def test_tenant_names_that_could_inject_into_topic_names_are_refused(tenant: str) -> None:
    with pytest.raises(RouteError, match="not a valid name"):
        route(tenant=tenant)


def test_invalid_routes_are_refused_with_the_reason() -> None:
    with pytest.raises(RouteError, match="appears twice"):
        route(candidates=(Candidate(V1, "shadow", 1.0),))
    with pytest.raises(RouteError, match="add up to"):
        route(candidates=(Candidate(V2, "canary", 0.7), Candidate(ATO, "canary", 0.5)))
    with pytest.raises(RouteError, match="fraction"):
        Candidate(V2, "canary", 0.0)
    with pytest.raises(RouteError, match="mode"):
        Candidate(V2, "blue-green", 0.5)


def test_records_round_trip() -> None:
    r = route(candidates=(Candidate(V2, "canary", 0.1),), watch_thresholds=(0.5, 0.9), reference="acme-ref@3")
    assert Route.from_record(r.to_record()) == r


def test_yaml_routes_with_located_errors() -> None:
    routes = load_routes_yaml(text="""
routes:
  - tenant: acme-bank
    intent: card-not-present
    champion: fraud-cnp@1
    candidates: [{model: fraud-cnp@2, mode: shadow, fraction: 1.0}]
    watch_thresholds: [0.9, 0.99]
""")
    assert routes[0].candidates[0].model == V2 and routes[0].watch_thresholds == (0.9, 0.99)
    with pytest.raises(RouteError, match=r"routes\[0\] is missing required field 'champion'"):
        load_routes_yaml(text="routes: [{tenant: a, intent: b}]")
    with pytest.raises(RouteError, match=r"routes\[0\] has unknown fields \['champoin'\]"):
        load_routes_yaml(text="routes: [{tenant: a, intent: b, champoin: m@1}]")
    with pytest.raises(RouteError, match="NAME@VERSION"):
        load_routes_yaml(text="routes: [{tenant: a, intent: b, champion: m}]")
