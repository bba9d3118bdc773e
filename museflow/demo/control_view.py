"""Each tenant's swap as the live view shows it, refreshed from the control topics in the background."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping

from museflow.config import Settings
from museflow.control.state import PipelineState
from museflow.demo.loadgen import CARD_NOT_PRESENT
from museflow.demo.scenario import V2
from museflow.demo.view import TenantSwap
from museflow.kafka.plane import read_state

__all__ = ["apply_control_state", "poll_control"]


def apply_control_state(tenants: Mapping[str, TenantSwap], state: PipelineState) -> None:
    """Set each tenant's champion, reference, maps in use and v2's map from the control state."""
    for tenant, view in tenants.items():
        route = state.routes.get(tenant, CARD_NOT_PRESENT)
        if route is None:
            continue
        view.champion, view.route_version, view.reference = str(route.champion), route.version, route.reference
        view.watch = route.watch_thresholds
        own = state.maps.get(route.champion.name, route.champion.version, tenant)
        pooled = state.maps.get_pooled(route.champion.name, route.champion.version, CARD_NOT_PRESENT)
        if own is not None:
            view.map_in_use = f"map v{own.version} ({own.sample_count:,}) -> {own.reference_name}"
        elif pooled is not None:
            view.map_in_use = f"pooled map v{pooled.version}"
        else:
            view.map_in_use = "identity (no map yet)"
        v2 = state.maps.get(V2.name, V2.version, tenant)
        if v2 is not None:
            view.v2_map = f"map v{v2.version} ({v2.sample_count:,})"
        elif V2 in route.models():
            view.v2_map = "map pending"
        view.promoted = route.champion == V2


def poll_control(settings: Settings, tenants: Mapping[str, TenantSwap], cancel: threading.Event) -> None:
    """Refresh the per-tenant swap state from the control topics every few seconds until ``cancel``."""
    while not cancel.is_set():
        with contextlib.suppress(Exception):  # a view refresh; the next one retries
            apply_control_state(tenants, read_state(settings))
        cancel.wait(2.0)
