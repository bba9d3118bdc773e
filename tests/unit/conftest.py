"""Fixtures shared by the core's unit tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from museflow.control.routing import load_routes_yaml
from museflow.control.state import PipelineState
from museflow.demo.models import SHOWCASE_ROUTES, train_demo_models
from museflow.observe.metrics import PipelineMetrics


@pytest.fixture(scope="module")
def showcase_state(tmp_path_factory: pytest.TempPathFactory) -> PipelineState:
    """What a worker holds for the demo: the demo models loaded and the showcase routes in force (version 1)."""
    models = train_demo_models(tmp_path_factory.mktemp("models"), seed=3, n_events=4000)
    state = PipelineState(model_dir=Path(tmp_path_factory.mktemp("m")), metrics=PipelineMetrics())
    for m in models:
        state.registry.load(m.spec_path)
    for route in load_routes_yaml(text=SHOWCASE_ROUTES):
        state.routes.apply(replace(route, version=1))
    return state
