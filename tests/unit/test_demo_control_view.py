"""The live view's per-tenant swap state, read from the control state: champion, maps in use, v2's progress."""

from __future__ import annotations

from pathlib import Path

from museflow.control.routing import Candidate, Route
from museflow.control.state import PipelineState
from museflow.demo.control_view import apply_control_state
from museflow.demo.loadgen import CARD_NOT_PRESENT
from museflow.demo.scenario import V1, V2
from museflow.demo.view import TenantSwap
from museflow.observe.metrics import PipelineMetrics


def test_a_shadowed_route_shows_v2_pending_and_a_promoted_one_shows_v2_as_champion(tmp_path: Path) -> None:
    state = PipelineState(model_dir=tmp_path, metrics=PipelineMetrics())
    state.routes.apply(Route("acme-bank", CARD_NOT_PRESENT, V1, version=3, watch_thresholds=(0.25,),
                             candidates=(Candidate(V2, "shadow", 1.0),)))
    state.routes.apply(Route("globex-pay", CARD_NOT_PRESENT, V2, version=5))
    tenants = {"acme-bank": TenantSwap(), "globex-pay": TenantSwap(), "initech-fin": TenantSwap()}
    apply_control_state(tenants, state)
    acme, globex = tenants["acme-bank"], tenants["globex-pay"]
    assert (acme.champion, acme.route_version, acme.watch) == ("fraud-cnp@1", 3, (0.25,))
    assert (acme.map_in_use, acme.v2_map, acme.promoted) == ("identity (no map yet)", "map pending", False)
    assert (globex.champion, globex.route_version, globex.promoted) == ("fraud-cnp@2", 5, True)
    assert tenants["initech-fin"] == TenantSwap()  # no route yet: left as it was
