"""What one ``museflow demo`` run is: its options, the models it swaps, its fixed knobs, and the record of the swap."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from museflow.control.routing import ModelRef

__all__ = [
    "ATO",
    "BAD_FRACTION",
    "DRIFT",
    "MIN_FREEZE_SAMPLES",
    "REFIT_INTERVAL_S",
    "REFIT_MAX_SHIFT",
    "TRAIN_EVENTS",
    "V1",
    "V2",
    "DemoOptions",
    "SwapRecord",
]

V1, V2, ATO = ModelRef("fraud-cnp", "1"), ModelRef("fraud-cnp", "2"), ModelRef("ato", "1")
TRAIN_EVENTS = 120_000
DRIFT = 0.05
BAD_FRACTION = 0.002
REFIT_INTERVAL_S = 3.0
REFIT_MAX_SHIFT = 1.0
"""The demo's first maps come from a few hundred scores, so their tails are noisy; with the default 25%
alert-rate-shift guard a later, better fit would be held and the noisy map promoted. 100% lets the maps
converge during the shadow phase while still holding a wild refit."""
MIN_FREEZE_SAMPLES = 300


@dataclass(frozen=True)
class DemoOptions:
    """What the user asked for on the command line."""

    duration_s: float
    rate: float
    tenants: tuple[str, ...]
    seed: int
    out_dir: Path
    keep_running: bool

    @property
    def label_delay_s(self) -> float:
        return min(30.0, max(5.0, self.duration_s / 12))


@dataclass
class SwapRecord:
    """What the control-plane steps did, for the live view and the summary."""

    watch: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    freeze_samples: dict[str, int] = field(default_factory=dict)
    deployed_at: float | None = None
    promoted_at: float | None = None
    promoted: dict[str, bool] = field(default_factory=dict)
    not_promoted: dict[str, str] = field(default_factory=dict)
    v2_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    contract: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per tenant, the alert-rate contract's judgement of the map v2 was promoted with, per threshold."""
    produced_at_promotion: int = 0
    deployed_wall_ms: int = 0
    rehearsed_at: float | None = None
    rehearsal_promoted_at: float | None = None
    rehearsal: dict[str, Any] = field(default_factory=dict)
    promoted_by: dict[str, str] = field(default_factory=dict)
    shadow_map_lead_s: dict[str, float | None] = field(default_factory=dict)
