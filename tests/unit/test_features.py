"""FeatureBuilder: each transform against hand-computed values, defaults and their counts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from museflow.errors import SpecError
from museflow.model.features import FeatureBuilder, source_value, source_values
from museflow.model.spec import ModelSpec, dump_spec, parse_spec, spec_from_mapping
from museflow.model.transforms import TRANSFORMS, Clip, StepSite, Transform


def spec_with(*features: dict[str, Any]) -> ModelSpec:
    return spec_from_mapping(
        {
            "name": "m",
            "version": "1",
            "owners": ["o"],
            "intents": ["card-not-present"],
            "framework": "xgboost",
            "artifact": {"uri": "m.json", "format": "json", "sha256": "0" * 64},
            "features": list(features),
            "training": {"negative_sampling_rate": 1.0},
        }
    )


def event(amount: float | None = None, channel: str | None = None, **attributes: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"channel": channel, "attributes": attributes}
    if amount is not None:
        ev["amount"] = amount
    return ev


def build(feature: dict[str, Any], events: list[dict[str, Any]]) -> tuple[list[list[float]], list[int]]:
    matrix = FeatureBuilder(spec_with(feature)).build(events)
    assert matrix.values.dtype == np.float32
    return matrix.values.tolist(), matrix.default_counts.tolist()


def test_log1p_clips_negatives_and_uses_the_default_when_missing() -> None:
    values, counts = build(
        {"name": "f", "source": "amount", "type": "float", "default": 0.0, "transform": "log1p"},
        [event(amount=0.0), event(amount=math.e - 1), event(amount=99.0), event(amount=-5.0), event()],
    )
    assert [v[0] for v in values] == pytest.approx([0.0, 1.0, math.log(100.0), 0.0, 0.0], rel=1e-6)
    assert counts == [1]


def test_clip_with_one_open_bound() -> None:
    values, _ = build(
        {"name": "f", "source": "attributes.v", "type": "int", "default": 0,
         "transform": {"clip": {"lo": None, "hi": 5}}},
        [event(v=-3), event(v=4), event(v=17)],
    )
    assert values == [[-3.0], [4.0], [5.0]]


def test_bucketize_counts_edges_at_or_below_the_value_and_keeps_missing_missing() -> None:
    values, counts = build(
        {"name": "f", "source": "attributes.h", "type": "int", "default": None,
         "transform": {"bucketize": [6, 12, 18]}},
        [event(h=0), event(h=6), event(h=11), event(h=12), event(h=23), event()],
    )
    assert values[:5] == [[0.0], [1.0], [1.0], [2.0], [3.0]]
    assert math.isnan(values[5][0])
    assert counts == [1]


def test_one_hot_makes_one_column_per_value_and_zeros_for_others_and_missing() -> None:
    feature = {"name": "ch", "source": "channel", "type": "category", "default": None,
               "transform": {"one_hot": ["web", "app"]}}
    matrix = FeatureBuilder(spec_with(feature)).build(
        [event(channel="web"), event(channel="app"), event(channel="pos"), event()]
    )
    assert matrix.columns == ("ch=web", "ch=app")
    assert matrix.values.tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]
    assert matrix.defaults_by_feature() == {"ch": 1}


def test_one_hot_on_an_int_and_a_category_default_that_is_a_value() -> None:
    values, _ = build(
        {"name": "h", "source": "attributes.h", "type": "int", "default": None, "transform": {"one_hot": [0, 1]}},
        [event(h=0), event(h=1), event(h=2)],
    )
    assert values == [[1, 0], [0, 1], [0, 0]]
    values, counts = build(
        {"name": "c", "source": "channel", "type": "category", "default": "web", "transform": {"one_hot": ["web"]}},
        [event(channel="app"), event()],
    )
    assert values == [[0.0], [1.0]] and counts == [1]


def test_equals_on_category_and_on_bool() -> None:
    values, _ = build(
        {"name": "t", "source": "merchant_category", "type": "category", "default": None,
         "transform": {"equals": "4829"}},
        [{"merchant_category": "4829"}, {"merchant_category": "5411"}, {}],
    )
    assert values == [[1.0], [0.0], [0.0]]
    values, counts = build(
        {"name": "b", "source": "attributes.flag", "type": "bool", "default": False, "transform": {"equals": True}},
        [event(flag=True), event(flag=False), event()],
    )
    assert values == [[1.0], [0.0], [0.0]] and counts == [1]


def test_lookup_maps_values_and_unlisted_to_the_default() -> None:
    values, counts = build(
        {"name": "foreign", "source": "merchant_country", "type": "category", "default": None,
         "transform": {"lookup": {"table": {"DE": 0, "FR": 0.5}, "default": 1}}},
        [{"merchant_country": "DE"}, {"merchant_country": "FR"}, {"merchant_country": "NG"}, {}],
    )
    assert values == [[0.0], [0.5], [1.0], [1.0]] and counts == [1]


def test_ratio_divides_by_another_field_and_handles_zero_and_missing_denominators() -> None:
    values, counts = build(
        {"name": "r", "source": "amount", "type": "float", "default": None,
         "transform": [{"ratio": {"denominator": "attributes.avg", "on_zero": -1.0}}, {"clip": [0, 3]}]},
        [event(amount=50.0, avg=100.0), event(amount=500.0, avg=100.0), event(amount=5.0, avg=0.0),
         event(amount=5.0)],
    )
    assert values[:3] == [[0.5], [3.0], [0.0]]
    assert math.isnan(values[3][0])
    assert counts == [1]


def test_bool_and_null_defaults() -> None:
    values, counts = build(
        {"name": "b", "source": "attributes.match", "type": "bool", "default": True},
        [event(match=False), event(match=True), event()],
    )
    assert values == [[0.0], [1.0], [1.0]] and counts == [1]
    values, counts = build(
        {"name": "x", "source": "attributes.x", "type": "float", "default": None},
        [event(x=2.5), event(x=None), {}],
    )
    assert values[0] == [2.5] and math.isnan(values[1][0]) and math.isnan(values[2][0])
    assert counts == [2]


def test_a_non_numeric_value_in_a_numeric_attribute_counts_as_missing_instead_of_failing() -> None:
    values, counts = build(
        {"name": "x", "source": "attributes.x", "type": "float", "default": -1.0},
        [event(x="oops"), event(x=3), event(x="4.5")],
    )
    assert values == [[-1.0], [3.0], [4.5]] and counts == [1]


def test_several_features_fill_their_own_columns_and_empty_batches_work() -> None:
    spec = spec_with(
        {"name": "a", "source": "amount", "type": "float", "default": 0.0},
        {"name": "ch", "source": "channel", "type": "category", "default": None,
         "transform": {"one_hot": ["web", "app"]}},
        {"name": "v", "source": "attributes.v", "type": "int", "default": 7},
    )
    builder = FeatureBuilder(spec)
    matrix = builder.build([event(amount=1.5, channel="app", v=2), event(channel="web")])
    assert matrix.values.tolist() == [[1.5, 0, 1, 2], [0.0, 1, 0, 7]]
    assert matrix.defaults_by_feature() == {"a": 1, "ch": 0, "v": 1}
    empty = builder.build([])
    assert empty.values.shape == (0, 4) and empty.default_counts.tolist() == [0, 0, 0]


@dataclass(frozen=True)
class Scale(Transform):
    """A transform defined only here: multiply by ``factor``."""

    factor: float
    kind: ClassVar[str] = "scale"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Scale | None:
        params = params.get("factor") if isinstance(params, Mapping) else params
        if isinstance(params, bool) or not isinstance(params, int | float):
            site.add(f"needs a number to multiply by, got {params!r}")
            return None
        return cls(float(params))

    def params(self) -> dict[str, Any]:
        return {"factor": self.factor}

    def apply(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return x * self.factor


def test_a_registered_transform_is_parsed_dumped_and_evaluated_without_other_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(TRANSFORMS, Scale.kind, Scale)
    feature = {"name": "f", "source": "attributes.v", "type": "float", "default": 1.0,
               "transform": [{"clip": [0, 10]}, {"scale": 3}]}
    spec = spec_with(feature)
    assert spec.features[0].transforms == (Clip(0.0, 10.0), Scale(3.0))
    assert "  - scale: {factor: 3.0}\n" in dump_spec(spec)
    assert parse_spec(dump_spec(spec)) == spec
    values, counts = build(feature, [event(v=2), event(v=50), event()])
    assert values == [[6.0], [30.0], [3.0]] and counts == [1]
    first, _ = build({**feature, "transform": {"scale": 0.5}}, [event(v=4)])
    assert first == [[2.0]]
    with pytest.raises(SpecError) as info:
        spec_with({**feature, "transform": {"scale": "x"}})
    assert "features[0].transform.scale: needs a number to multiply by, got 'x'" in str(info.value)
    with pytest.raises(SpecError, match=r"features\[0\]\.transform: scale needs a number; encode the category "
                       r"first \(one_hot, equals, lookup\)"):
        spec_with({"name": "c", "source": "channel", "type": "category", "default": None, "transform": {"scale": 2}})


def test_an_unregistered_transform_is_unknown() -> None:
    with pytest.raises(SpecError, match=r"unknown transform 'scale'; use one of: bucketize, clip, equals, log1p, "
                       r"lookup, one_hot, ratio"):
        spec_with({"name": "f", "source": "amount", "type": "float", "default": 0.0, "transform": {"scale": 2}})


def test_source_values_read_event_fields_and_attributes() -> None:
    events: list[dict[str, Any]] = [{"amount": 5.0, "attributes": {"v": 1}}, {"attributes": None}, {"amount": 2.0}]
    assert source_values(events, "amount") == [5.0, None, 2.0]
    assert source_values(events, "attributes.v") == [1, None, None]
    assert [source_value(e, "attributes.v") for e in events] == [1, None, None]
    assert source_value(events[0], "amount") == 5.0
