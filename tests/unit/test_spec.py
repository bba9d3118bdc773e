"""Model spec validation: valid specs parse, every problem is reported with its location and fix."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from museflow.errors import SpecError
from museflow.model.spec import dump_spec, load_spec, parse_spec, spec_from_mapping
from museflow.model.transforms import TRANSFORMS, Bucketize, Clip, Log1p, OneHot, Ratio

SHA = "ab" * 32


def base() -> dict[str, Any]:
    return {
        "name": "fraud-cnp",
        "version": "3",
        "owners": ["risk@example.com"],
        "intents": ["card-not-present"],
        "framework": "xgboost",
        "artifact": {"uri": "fraud-cnp-3.ubj", "format": "ubj", "sha256": SHA},
        "features": [
            {"name": "log_amount", "source": "amount", "type": "float", "default": 0.0, "transform": "log1p"},
            {"name": "velocity_1h", "source": "attributes.velocity_1h", "type": "int", "default": 0,
             "transform": {"clip": [0, 50]}},
            {"name": "channel", "source": "channel", "type": "category", "default": None,
             "transform": {"one_hot": ["web", "app"]}},
            {"name": "amount_ratio", "source": "amount", "type": "float", "default": None,
             "transform": [{"ratio": "attributes.amount_avg_30d"}, {"bucketize": [0.5, 2, 10]}]},
        ],
        "training": {"negative_sampling_rate": 0.25, "window": {"start": "2024-01-01", "end": "2024-02-01"}},
        "sla": {"p99_ms": 20},
        "monitoring": {"features": ["log_amount"]},
    }


def problems_of(data: Any, origin: str = "specs/fraud.yaml") -> str:
    with pytest.raises(SpecError) as info:
        spec_from_mapping(data, origin=origin)
    return str(info.value)


def test_a_valid_spec_parses_into_typed_fields() -> None:
    spec = spec_from_mapping(base())
    assert spec.key == ("fraud-cnp", "3")
    assert spec.negative_sampling_rate == 0.25
    assert spec.columns == ("log_amount", "velocity_1h", "channel=web", "channel=app", "amount_ratio")
    assert spec.features[0].transforms == (Log1p(),)
    assert spec.features[1].transforms == (Clip(0.0, 50.0),)
    assert spec.features[2].transforms == (OneHot(("web", "app")),)
    assert spec.features[3].transforms == (Ratio("attributes.amount_avg_30d", 0.0), Bucketize((0.5, 2.0, 10.0)))
    assert spec.training.window_start == "2024-01-01"
    assert spec.sla is not None and spec.sla.p99_ms == 20.0
    assert spec.monitoring.features == ("log_amount",)


def test_digest_depends_on_content_not_on_yaml_layout() -> None:
    block = yaml.safe_dump(base(), default_flow_style=False)
    flow = yaml.safe_dump(base(), default_flow_style=True)
    a, b = parse_spec(block), parse_spec(flow)
    assert a.digest == b.digest and len(a.digest) == 64
    assert parse_spec(dump_spec(a)).digest == a.digest
    changed = base()
    changed["owners"] = ["someone-else@example.com"]
    assert spec_from_mapping(changed).digest != a.digest


def test_shorthand_and_long_transform_forms_are_the_same_spec() -> None:
    long = base()
    long["features"][0]["transform"] = [{"log1p": {}}]
    long["features"][1]["transform"] = {"clip": {"lo": 0, "hi": 50}}
    long["features"][2]["transform"] = {"one_hot": {"values": ["web", "app"]}}
    assert spec_from_mapping(long).digest == spec_from_mapping(base()).digest


def test_unknown_transform_is_located_and_suggests_the_fix() -> None:
    data = base()
    data["features"][3]["transform"] = "log2"
    message = problems_of(data)
    assert "specs/fraud.yaml" in message
    assert "features[3].transform: unknown transform 'log2'" in message
    assert "did you mean 'log1p'" in message


def test_missing_or_unknown_feature_source_is_located() -> None:
    data = base()
    data["features"][1]["source"] = "amout"
    del data["features"][2]["source"]
    message = problems_of(data)
    assert "features[1].source: 'amout' is not a field of TransactionEvent (did you mean 'amount'?)" in message
    assert "features[2].source: is required" in message
    assert "(2 problems)" in message


def test_any_attribute_key_is_a_valid_source() -> None:
    data = base()
    data["features"][1]["source"] = "attributes.anything_a_producer_sends"
    assert spec_from_mapping(data).features[1].source == "attributes.anything_a_producer_sends"


def test_all_problems_are_collected_not_just_the_first() -> None:
    data = base()
    data["version"] = 1.10
    data["artifact"]["sha256"] = "abc"
    data["artifact"]["format"] = "pickle"
    data["features"][0]["type"] = "double"
    data["training"]["negative_sampling_rate"] = 0
    data["monitoring"]["features"] = ["log_amout"]
    data["colour"] = "blue"
    message = problems_of(data)
    for expected in (
        "version: must be a string, got float 1.1; quote it",
        "artifact.sha256: must be 64 lowercase hex characters",
        "artifact.format: 'pickle' must be one of: json, ubj",
        "features[0].type: 'double' must be one of: float, int, bool, category",
        "training.negative_sampling_rate: must be a number in (0, 1], got 0",
        "monitoring.features[0]: 'log_amout' is not a declared feature (did you mean 'log_amount'?)",
        "colour: unknown key",
    ):
        assert expected in message
    assert "(7 problems)" in message


@pytest.mark.parametrize(
    ("index", "feature_patch", "expected"),
    [
        (
            0,
            {"source": "channel"},
            "features[0].source: 'channel' is a string field; declare the feature as type category",
        ),
        (
            2,
            {"transform": "log1p"},
            "features[2].transform: log1p needs a number; encode the category first",
        ),
        (
            1,
            {"transform": {"clip": {"lo": 5, "hi": 1}}},
            "features[1].transform.clip: lo (5) must be <= hi (1)",
        ),
        (
            1,
            {"transform": {"bucketize": [1, 1, 2]}},
            "features[1].transform.bucketize: edges must be strictly increasing",
        ),
        (
            2,
            {"transform": [{"one_hot": ["web"]}, "log1p"]},
            "features[2].transform[0]: one_hot produces several columns",
        ),
        (
            1,
            {"transform": ["log1p", {"ratio": "amount"}]},
            "features[1].transform[1]: ratio reads the raw source",
        ),
        (
            0,
            {"default": "zero"},
            "features[0].default: 'zero' is not a valid float value",
        ),
        (
            2,
            {"transform": {"one_hot": [1, 2]}},
            "features[2].transform.one_hot: needs values: a non-empty list of category",
        ),
        (
            3,
            {"transform": {"ratio": {"denominator": "attributes."}}},
            "features[3].transform.ratio.denominator: attributes.<key> needs a key",
        ),
        (0, {"name": "bad name!"}, "features[0].name: 'bad name!' must be an identifier"),
    ],
)
def test_feature_problems_are_located(index: int, feature_patch: dict[str, Any], expected: str) -> None:
    data = base()
    data["features"][index].update(feature_patch)
    assert expected in problems_of(data)


def test_a_missing_default_and_a_category_without_encoder_are_reported() -> None:
    data = base()
    del data["features"][0]["default"]
    del data["features"][2]["transform"]
    message = problems_of(data)
    assert "features[0].default: is required" in message
    assert "features[2].transform: a category feature needs an encoder first" in message


def test_duplicate_feature_names_and_required_top_level_fields() -> None:
    data = base()
    data["features"].append(copy.deepcopy(data["features"][0]))
    del data["training"]
    del data["owners"]
    message = problems_of(data)
    assert "features[4].name: 'log_amount' is already declared" in message
    assert "training: is required" in message
    assert "owners: is required" in message


def test_framework_other_than_xgboost_is_refused() -> None:
    data = base()
    data["framework"] = "sklearn"
    assert "framework: 'sklearn' is not supported; use one of: xgboost" in problems_of(data)


def test_load_spec_names_the_file_and_yaml_syntax_errors_have_a_line(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base()))
    spec = load_spec(good)
    assert spec.origin == str(good) and spec.base_dir == tmp_path.resolve()
    assert spec.artifact.resolve(spec.base_dir) == tmp_path.resolve() / "fraud-cnp-3.ubj"

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfeatures: [\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML at line"):
        load_spec(bad)
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "absent.yaml")

    wrong = base()
    wrong["features"][3]["transform"] = "log2"
    bad_field = tmp_path / "fraud-cnp-3.yaml"
    bad_field.write_text(yaml.safe_dump(wrong))
    with pytest.raises(SpecError, match=r"fraud-cnp-3\.yaml .*\n  features\[3\]\.transform: unknown transform"):
        load_spec(bad_field)


def test_yaml_dates_and_a_reversed_window() -> None:
    text = yaml.safe_dump(base()).replace("'2024-01-01'", "2024-01-01").replace("'2024-02-01'", "2024-02-01")
    assert parse_spec(text).training.window_end == "2024-02-01"
    data = base()
    data["training"]["window"] = {"start": "2024-03-01", "end": "2024-02-01"}
    assert "training.window: start 2024-03-01 is after end 2024-02-01" in problems_of(data)


def test_a_spec_that_is_not_a_mapping() -> None:
    with pytest.raises(SpecError, match=r"<root>: must be a mapping"):
        parse_spec("- just\n- a list\n", origin="x.yaml")


def test_every_transform_kind_dumps_and_digests_exactly_as_pinned() -> None:
    """Specs are content-addressed: the dump and digest of each transform's spec form never drift."""
    data = base()
    data["features"] += [
        {"name": "web", "source": "channel", "type": "category", "default": None, "transform": {"equals": "web"}},
        {"name": "home", "source": "merchant_country", "type": "category", "default": "DE",
         "transform": [{"lookup": {"table": {"DE": 0, "US": 0.5}, "default": 1}}, {"clip": {"hi": 0.75}}]},
    ]
    spec = spec_from_mapping(data)
    text = dump_spec(spec)
    assert {kind for f in spec.features for kind in (t.kind for t in f.transforms)} == set(TRANSFORMS)
    assert "  - lookup:\n      table: {DE: 0.0, US: 0.5}\n      default: 1.0\n  - clip: {lo: null, hi: 0.75}\n" in text
    dumped = hashlib.sha256(text.encode()).hexdigest()
    assert dumped == "812f66262f88230e7219267a9b3c63cf83c1ceff7aaa8288da80f793442dcc47"
    assert spec.digest == "aa7461034fe8b6d524d64eae1689d5578548f0030e45feb2f030bb06f2c16952"
    assert parse_spec(text).digest == spec.digest


def test_placement_rules_belong_to_each_transform() -> None:
    data = base()
    data["features"] += [
        {"name": "a", "source": "amount", "type": "float", "default": None,
         "transform": ["log1p", {"ratio": "attributes.avg"}]},
        {"name": "b", "source": "channel", "type": "category", "default": None,
         "transform": [{"one_hot": ["web"]}, {"equals": "web"}]},
        {"name": "c", "source": "attributes.flag", "type": "bool", "default": False,
         "transform": {"lookup": {"table": {"x": 1}}}},
        {"name": "d", "source": "attributes.n", "type": "int", "default": 0,
         "transform": {"lookup": {"table": {"x": 1}}}},
        {"name": "e", "source": "attributes.flag", "type": "bool", "default": False,
         "transform": {"ratio": "attributes.avg"}},
    ]
    message = problems_of(data)
    assert "features[4].transform[1]: ratio reads the raw source, so it must be the first transform" in message
    assert ("features[5].transform[0]: one_hot produces several columns and cannot be followed by other "
            "transforms") in message
    assert "features[5].transform[1]: equals reads the raw value, so it must be the first transform" in message
    assert "features[6].transform: lookup does not apply to a bool feature" in message
    assert "features[7].transform: lookup maps category strings; use bucketize or equals for numbers" in message
    assert "features[8].transform: ratio does not apply to a bool feature" in message
    assert "a category feature needs an encoder first: one_hot, equals or lookup" in problems_of(
        {**base(), "features": [{"name": "c", "source": "channel", "type": "category", "default": None,
                                 "transform": "log1p"}]})
