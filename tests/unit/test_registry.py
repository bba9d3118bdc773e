"""ModelRegistry: verified loads, located artifact errors, immutability, failures leave models intact."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
import yaml

from museflow.demo.loadgen import TransactionGenerator
from museflow.errors import ArtifactError, SpecError
from museflow.model.features import FeatureBuilder
from museflow.model.registry import ModelRegistry, UnknownModelError
from museflow.model.spec import spec_from_mapping

FEATURES: list[dict[str, Any]] = [
    {"name": "log_amount", "source": "amount", "type": "float", "default": 0.0, "transform": "log1p"},
    {"name": "velocity_1h", "source": "attributes.velocity_1h", "type": "int", "default": 0},
    {"name": "channel", "source": "channel", "type": "category", "default": None,
     "transform": {"one_hot": ["web", "app"]}},
]
PICKLE_BYTES = b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."


def spec_dict(version: str, uri: str, fmt: str, sha: str, features: list[dict[str, Any]] = FEATURES) -> dict[str, Any]:
    return {
        "name": "tiny", "version": version, "owners": ["tests"], "intents": ["card-not-present"],
        "framework": "xgboost", "artifact": {"uri": uri, "format": fmt, "sha256": sha},
        "features": features, "training": {"negative_sampling_rate": 0.5},
    }


def train_tiny(fmt: str = "ubj", objective: str = "binary:logistic", rounds: int = 5) -> bytes:
    spec = spec_from_mapping(spec_dict("0", "x", "json", "0" * 64))
    generated = TransactionGenerator(seed=3, start_ms=0).generate(3000)
    x = FeatureBuilder(spec).build([g.event for g in generated]).values
    y = np.array([g.is_fraud for g in generated], dtype=np.float32)
    params = {"objective": objective, "max_depth": 3, "nthread": 1, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=list(spec.columns)), rounds)
    return bytes(booster.save_raw(raw_format=fmt))


def write_model(
    folder: Path, version: str, data: bytes, fmt: str = "ubj", sha: str | None = None, **overrides: Any
) -> Path:
    uri = f"tiny-{version}.{fmt}"
    (folder / uri).write_bytes(data)
    spec = spec_dict(version, uri, fmt, sha or hashlib.sha256(data).hexdigest())
    spec.update(overrides)
    path = folder / f"tiny-{version}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def ubj() -> bytes:
    return train_tiny("ubj")


def test_load_registers_a_verified_model_and_lookups_work(tmp_path: Path, ubj: bytes) -> None:
    registry = ModelRegistry()
    model = registry.load(write_model(tmp_path, "1", ubj))
    json_model = registry.load(write_model(tmp_path, "2", train_tiny("json"), fmt="json"))
    assert model.key == ("tiny", "1") and json_model.key == ("tiny", "2")
    assert registry.get("tiny", "1") is model
    assert registry.versions("tiny") == ("1", "2")
    assert registry.names() == ("tiny",)
    assert ("tiny", "2") in registry and len(registry) == 2
    assert registry.remove("tiny", "1") is model
    assert registry.versions("tiny") == ("2",)
    with pytest.raises(UnknownModelError, match="model tiny version 1 is not loaded; registered versions: 2"):
        registry.get("tiny", "1")
    with pytest.raises(LookupError):
        registry.remove("nope", "1")


def test_loading_the_same_spec_again_is_idempotent(tmp_path: Path, ubj: bytes) -> None:
    registry = ModelRegistry()
    path = write_model(tmp_path, "1", ubj)
    first = registry.load(path)
    assert registry.load(path) is first
    assert registry.load_bytes(path.read_text(), ubj, origin="deployments@0:7") is first
    assert len(registry) == 1


def test_a_different_spec_under_a_registered_version_is_refused(tmp_path: Path, ubj: bytes) -> None:
    registry = ModelRegistry()
    original = registry.load(write_model(tmp_path, "1", ubj))
    changed = tmp_path / "changed"
    changed.mkdir()
    with pytest.raises(SpecError, match=r"model tiny version 1 .* already registered with a different spec"):
        registry.load(write_model(changed, "1", ubj, owners=["someone-else"]))
    assert registry.get("tiny", "1") is original


def test_wrong_sha256_is_a_located_artifact_error(tmp_path: Path, ubj: bytes) -> None:
    path = write_model(tmp_path, "1", ubj, sha="0" * 64)
    with pytest.raises(ArtifactError) as info:
        ModelRegistry().load(path)
    message = str(info.value)
    assert str(path) in message and "tiny-1.ubj" in message
    assert "sha256 mismatch: artifact.sha256 in the spec is " + "0" * 64 in message
    assert hashlib.sha256(ubj).hexdigest() in message


def test_a_missing_artifact_file_is_reported_with_its_path(tmp_path: Path, ubj: bytes) -> None:
    path = write_model(tmp_path, "1", ubj)
    (tmp_path / "tiny-1.ubj").unlink()
    with pytest.raises(ArtifactError, match=r"artifact.uri 'tiny-1.ubj' not found at .*tiny-1\.ubj"):
        ModelRegistry().load(path)


@pytest.mark.parametrize(
    ("data", "fmt", "expected"),
    [
        (PICKLE_BYTES, "ubj", "looks like a Python pickle; museflow never loads pickles"),
        (bytes(range(256)) * 4, "ubj", "the file is not XGBoost UBJSON"),
        (b'{"not": "a model"}', "json", "not a loadable XGBoost model"),
        (b'{"learner": 1}', "ubj", "the file is not XGBoost UBJSON (it is JSON: set format: json)"),
    ],
)
def test_a_non_xgboost_artifact_is_refused_even_with_a_matching_sha(
    tmp_path: Path, data: bytes, fmt: str, expected: str
) -> None:
    with pytest.raises(ArtifactError, match="model tiny version 1") as info:
        ModelRegistry().load(write_model(tmp_path, "1", data, fmt=fmt))
    assert expected in str(info.value)


def test_a_booster_with_another_feature_count_or_objective_is_refused(tmp_path: Path, ubj: bytes) -> None:
    fewer = FEATURES[:2]
    with pytest.raises(ArtifactError, match="booster expects 4 features but the spec declares 2 columns"):
        ModelRegistry().load(write_model(tmp_path, "1", ubj, features=fewer))
    squared = train_tiny("ubj", objective="reg:squarederror", rounds=2)
    with pytest.raises(ArtifactError, match="objective 'reg:squarederror' does not output probabilities"):
        ModelRegistry().load(write_model(tmp_path, "2", squared))


def test_a_spec_error_names_the_field(tmp_path: Path, ubj: bytes) -> None:
    broken = [dict(FEATURES[0]), dict(FEATURES[1], source="atributes.velocity_1h"), FEATURES[2]]
    with pytest.raises(SpecError, match=r"tiny-1\.yaml .*\n  features\[1\]\.source: 'atributes.velocity_1h'"):
        ModelRegistry().load(write_model(tmp_path, "1", ubj, features=broken))


def test_a_failing_load_leaves_loaded_models_intact(tmp_path: Path, ubj: bytes) -> None:
    registry = ModelRegistry()
    good = registry.load(write_model(tmp_path, "1", ubj))
    events = [g.event for g in TransactionGenerator(seed=9, start_ms=0).generate(50)]
    before = good.score(events).probability.copy()
    failures: list[Callable[[], object]] = [
        lambda: registry.load(write_model(tmp_path, "2", ubj, sha="1" * 64)),
        lambda: registry.load(write_model(tmp_path, "3", PICKLE_BYTES)),
        lambda: registry.load_bytes("name: tiny\nversion: 4\n", ubj, origin="record"),
        lambda: registry.load(write_model(tmp_path, "1", ubj, owners=["changed"])),
    ]
    for fail in failures:
        with pytest.raises((SpecError, ArtifactError)):
            fail()
    assert registry.versions("tiny") == ("1",)
    assert registry.get("tiny", "1") is good
    np.testing.assert_array_equal(good.score(events).probability, before)


def test_load_bytes_checks_the_sha_of_the_received_bytes(tmp_path: Path, ubj: bytes) -> None:
    text = write_model(tmp_path, "1", ubj).read_text()
    registry = ModelRegistry()
    with pytest.raises(ArtifactError, match=r"tiny-1\.ubj \(from deployments@2:41\): sha256 mismatch"):
        registry.load_bytes(text, ubj + b"tampered", origin="deployments@2:41")
    model = registry.load_bytes(text, ubj, origin="deployments@2:41")
    assert model.spec.origin == "deployments@2:41" and model.artifact_sha256 == hashlib.sha256(ubj).hexdigest()
