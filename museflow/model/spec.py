"""The declarative model spec: one YAML file per model version, validated before anything loads.

A spec names the model and version, its owners and intents, the XGBoost artifact (path relative
to the spec file, format, sha256), the features (event field, type, default when missing, an
optional transform pipeline — never ``eval``, never pickle), training facts (negative sampling
rate beta, data window), the latency SLA and the features monitoring watches. Validation collects
every problem and raises one :class:`~museflow.errors.SpecError` naming the file, the field path
and the fix. Each transform kind is one class in :mod:`museflow.model.transforms` owning its
parsing, placement rules, spec form and vectorised evaluation, so a new kind is one class.
Example::

    name: fraud-cnp
    version: "2"
    owners: [risk-ml@example.com]
    intents: [card-not-present]
    framework: xgboost
    artifact: {uri: fraud-cnp-2.ubj, format: ubj, sha256: 9f2c...e1}
    features:
      - {name: log_amount, source: amount, type: float, default: 0.0, transform: log1p}
      - {name: velocity_1h, source: attributes.velocity_1h, type: int, default: null,
         transform: {clip: {lo: 0, hi: 50}}}
      - {name: channel, source: channel, type: category, default: null,
         transform: {one_hot: [web, app, phone]}}
    training: {negative_sampling_rate: 0.1, window: {start: "2024-01-01", end: "2024-02-01"}}
    sla: {p99_ms: 25}
    monitoring: {features: [log_amount, velocity_1h]}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml

from museflow.contracts.schemas_path import load_avro_schema
from museflow.contracts.validation import NAME_PATTERN
from museflow.errors import SpecError
from museflow.model.problems import Problems, check_keys, check_source, is_number, suggest
from museflow.model.transforms import (
    TRANSFORMS,
    FloatArray,
    Read,
    Scalar,
    StepSite,
    Transform,
    encoder_kinds,
    evaluate,
    matches_type,
)

__all__ = [
    "ARTIFACT_FORMATS",
    "FEATURE_TYPES",
    "FRAMEWORKS",
    "ArtifactRef",
    "FeatureSpec",
    "ModelSpec",
    "Monitoring",
    "Sla",
    "TrainingFacts",
    "dump_spec",
    "event_source_kinds",
    "load_spec",
    "parse_spec",
    "spec_from_mapping",
]

FRAMEWORKS = ("xgboost",)
ARTIFACT_FORMATS = ("json", "ubj")
FEATURE_TYPES = ("float", "int", "bool", "category")

FeatureType: TypeAlias = Literal["float", "int", "bool", "category"]

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_FEATURE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_TOP_KEYS = (
    "name", "version", "description", "owners", "intents", "framework", "artifact",
    "features", "training", "sla", "monitoring",
)
_REQUIRED_TOP = ("name", "version", "owners", "intents", "framework", "artifact", "features", "training")


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: where it comes from, its type, its default and its transforms."""

    name: str
    source: str
    type: FeatureType
    default: Scalar | None
    transforms: tuple[Transform, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Matrix column names this feature produces (``name=value`` per one-hot value)."""
        return self.transforms[0].columns(self.name) if self.transforms else (self.name,)

    def sources(self) -> tuple[str, ...]:
        """Every event field this feature reads (its source, plus those its transforms read)."""
        return (self.source, *(s for t in self.transforms for s in t.sources()))

    def evaluate(self, read: Read) -> tuple[FloatArray, int]:
        """This feature's (rows, columns) values for a batch and how many rows used the default.

        ``read`` returns the batch's raw values of an event field (None where an event lacks it).
        """
        return evaluate(self, read)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "source": self.source, "type": self.type, "default": self.default}
        if self.transforms:
            out["transform"] = [{t.kind: t.params()} for t in self.transforms]
        return out


@dataclass(frozen=True)
class ArtifactRef:
    """Where the XGBoost model file is (relative to the spec file), its format and sha256."""

    uri: str
    format: Literal["json", "ubj"]
    sha256: str

    def resolve(self, base_dir: Path | None) -> Path:
        """The artifact's filesystem path (``file://`` URIs and relative paths supported)."""
        raw = self.uri.removeprefix("file://")
        path = Path(raw)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return path


@dataclass(frozen=True)
class TrainingFacts:
    """Facts about training the scorer relies on: negative sampling rate beta and data window."""

    negative_sampling_rate: float = 1.0
    window_start: str | None = None
    window_end: str | None = None
    rows: int | None = None
    metrics: tuple[tuple[str, float], ...] = ()

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"negative_sampling_rate": self.negative_sampling_rate}
        if self.window_start or self.window_end:
            out["window"] = {"start": self.window_start, "end": self.window_end}
        if self.rows is not None:
            out["rows"] = self.rows
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        return out


@dataclass(frozen=True)
class Sla:
    """Latency target for scoring one event, p99 in milliseconds."""

    p99_ms: float

    def to_mapping(self) -> dict[str, Any]:
        return {"p99_ms": self.p99_ms}


@dataclass(frozen=True)
class Monitoring:
    """Which declared features monitoring exports default-value rates and drift for."""

    features: tuple[str, ...] = ()

    def to_mapping(self) -> dict[str, Any]:
        return {"features": list(self.features)}


@dataclass(frozen=True)
class ModelSpec:
    """A validated, immutable model spec; ``digest`` identifies its content."""

    name: str
    version: str
    owners: tuple[str, ...]
    intents: tuple[str, ...]
    framework: str
    artifact: ArtifactRef
    features: tuple[FeatureSpec, ...]
    training: TrainingFacts
    sla: Sla | None = None
    monitoring: Monitoring = field(default_factory=Monitoring)
    description: str | None = None
    origin: str = "<memory>"
    base_dir: Path | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    @property
    def negative_sampling_rate(self) -> float:
        return self.training.negative_sampling_rate

    @property
    def columns(self) -> tuple[str, ...]:
        """Matrix column names in order; their count is the booster's expected num_features."""
        return tuple(c for f in self.features for c in f.columns)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_mapping(self) -> dict[str, Any]:
        """The canonical mapping (what is dumped as YAML and hashed for the digest)."""
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description is not None:
            out["description"] = self.description
        out.update(
            owners=list(self.owners),
            intents=list(self.intents),
            framework=self.framework,
            artifact={"uri": self.artifact.uri, "format": self.artifact.format, "sha256": self.artifact.sha256},
            features=[f.to_mapping() for f in self.features],
            training=self.training.to_mapping(),
        )
        if self.sla is not None:
            out["sla"] = self.sla.to_mapping()
        if self.monitoring.features:
            out["monitoring"] = self.monitoring.to_mapping()
        return out

    @property
    def digest(self) -> str:
        """sha256 over the canonical JSON of :meth:`to_mapping` (independent of file layout)."""
        canonical = json.dumps(self.to_mapping(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate the spec at ``path``; the artifact is resolved relative to its folder."""
    spec_path = Path(path)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"model spec {spec_path}: file not found; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"model spec {spec_path}: cannot be read ({exc})") from exc
    return parse_spec(text, origin=str(spec_path), base_dir=spec_path.resolve().parent)


def parse_spec(text: str, origin: str = "<memory>", base_dir: Path | None = None) -> ModelSpec:
    """Validate spec YAML ``text``; ``origin`` names it in errors, ``base_dir`` anchors the artifact."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise SpecError(f"model spec {origin}: not valid YAML{where}: {exc}") from exc
    return spec_from_mapping(data, origin=origin, base_dir=base_dir)


def dump_spec(spec: ModelSpec) -> str:
    """The spec as YAML in canonical key order (round-trips through :func:`parse_spec`)."""
    return yaml.safe_dump(spec.to_mapping(), sort_keys=False, default_flow_style=None, width=100)


def event_source_kinds() -> dict[str, str]:
    """TransactionEvent top-level fields and their value kind: ``string`` or ``number``."""
    schema = load_avro_schema("TransactionEvent")
    kinds: dict[str, str] = {}
    for fld in schema.get("fields", []):
        kinds[fld["name"]] = _avro_kind(fld["type"])
    return kinds


def _avro_kind(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        kinds = {_avro_kind(t) for t in avro_type if t != "null"}
        return kinds.pop() if len(kinds) == 1 else "mixed"
    if isinstance(avro_type, dict):
        return "map" if avro_type.get("type") == "map" else _avro_kind(avro_type.get("type"))
    if avro_type in ("string", "enum"):
        return "string"
    if avro_type in ("int", "long", "float", "double"):
        return "number"
    if avro_type == "boolean":
        return "boolean"
    return "other"


def _string_list(p: Problems, path: str, value: Any, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        p.add(path, "must be a non-empty list of strings")
        return ()
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            p.add(f"{path}[{i}]", f"must be a non-empty string, got {item!r}")
        elif pattern is not None and not pattern.fullmatch(item):
            p.add(f"{path}[{i}]", f"{item!r} must be lowercase letters, digits and '-'")
        else:
            out.append(item)
    if len(set(out)) != len(out):
        p.add(path, f"has duplicates: {out}")
    return tuple(out)


def spec_from_mapping(data: Any, origin: str = "<memory>", base_dir: Path | None = None) -> ModelSpec:
    """Validate an already-parsed spec mapping (e.g. from a deployment record)."""
    p = Problems(origin)
    if not isinstance(data, Mapping):
        p.add("<root>", f"must be a mapping of spec fields, got {type(data).__name__}")
        p.raise_if_any()
    check_keys(p, "", data, _TOP_KEYS)
    for key in _REQUIRED_TOP:
        if key not in data:
            p.add(key, "is required")

    name = data.get("name")
    if "name" in data and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        p.add("name", f"{name!r} must be 1-63 lowercase letters, digits and '-' (it names a topic)")
    version = data.get("version")
    if "version" in data:
        if not isinstance(version, str):
            p.add("version", f"must be a string, got {type(version).__name__} {version!r}; quote it: "
                  f'version: "{version}"')
        elif not _VERSION_RE.fullmatch(version):
            p.add("version", f"{version!r} must be letters, digits, '.', '_' or '-'")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        p.add("description", "must be a string")
    owners = _string_list(p, "owners", data["owners"]) if "owners" in data else ()
    intents = _string_list(p, "intents", data["intents"], NAME_PATTERN) if "intents" in data else ()
    framework = data.get("framework")
    if "framework" in data and framework not in FRAMEWORKS:
        p.add("framework", f"{framework!r} is not supported; use one of: {', '.join(FRAMEWORKS)}")

    artifact = _parse_artifact(p, data.get("artifact")) if "artifact" in data else None
    features = _parse_features(p, data.get("features")) if "features" in data else ()
    training = _parse_training(p, data.get("training")) if "training" in data else TrainingFacts()
    sla = _parse_sla(p, data.get("sla")) if data.get("sla") is not None else None
    raw_features = data.get("features")
    declared = [f.get("name") for f in raw_features if isinstance(f, Mapping)] if isinstance(raw_features, list) else []
    monitoring = _parse_monitoring(p, data.get("monitoring"), declared)
    p.raise_if_any()
    assert artifact is not None and isinstance(name, str) and isinstance(version, str)
    return ModelSpec(
        name=name,
        version=version,
        owners=owners,
        intents=intents,
        framework=str(framework),
        artifact=artifact,
        features=features,
        training=training,
        sla=sla,
        monitoring=monitoring,
        description=description,
        origin=origin,
        base_dir=base_dir,
    )


def _parse_artifact(p: Problems, raw: Any) -> ArtifactRef | None:
    if not isinstance(raw, Mapping):
        p.add("artifact", "must be a mapping with uri, format and sha256")
        return None
    check_keys(p, "artifact", raw, ("uri", "format", "sha256"))
    ok = True
    uri = raw.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        p.add("artifact.uri", "is required: the model file path, relative to the spec file")
        ok = False
    elif "://" in uri and not uri.startswith("file://"):
        p.add("artifact.uri", f"{uri!r}: only local paths and file:// URIs are supported")
        ok = False
    fmt = raw.get("format")
    if fmt not in ARTIFACT_FORMATS:
        p.add("artifact.format", f"{fmt!r} must be one of: {', '.join(ARTIFACT_FORMATS)} (XGBoost save_model "
              "formats; pickle is never accepted)")
        ok = False
    sha = raw.get("sha256")
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        p.add("artifact.sha256", f"must be 64 lowercase hex characters (sha256sum of the artifact), got {sha!r}")
        ok = False
    if not ok:
        return None
    return ArtifactRef(uri=str(uri), format="json" if fmt == "json" else "ubj", sha256=str(sha))


def _parse_features(p: Problems, raw: Any) -> tuple[FeatureSpec, ...]:
    if not isinstance(raw, list) or not raw:
        p.add("features", "must be a non-empty list of features")
        return ()
    sources = event_source_kinds()
    out: list[FeatureSpec] = []
    for i, item in enumerate(raw):
        feature = _parse_feature(p, f"features[{i}]", item, sources)
        if feature is not None:
            out.append(feature)
    seen: dict[str, int] = {}
    for i, f in enumerate(out):
        if f.name in seen:
            p.add(f"features[{i}].name", f"{f.name!r} is already declared; feature names must be unique")
        seen.setdefault(f.name, i)
    columns = [c for f in out for c in f.columns]
    dupes = sorted({c for c in columns if columns.count(c) > 1} - set(seen))
    if dupes:
        p.add("features", f"column names collide: {dupes}; rename the features")
    return tuple(out)


def _parse_feature(p: Problems, path: str, raw: Any, sources: Mapping[str, str]) -> FeatureSpec | None:
    if not isinstance(raw, Mapping):
        p.add(path, "must be a mapping with name, source, type and default")
        return None
    check_keys(p, path, raw, ("name", "source", "type", "default", "transform", "description"))
    before = len(p.items)
    name = raw.get("name")
    if not isinstance(name, str) or not _FEATURE_RE.fullmatch(name):
        p.add(f"{path}.name", f"{name!r} must be an identifier (letters, digits, '_', '.', ':', '-')")
    ftype = raw.get("type")
    if ftype not in FEATURE_TYPES:
        p.add(f"{path}.type", f"{ftype!r} must be one of: {', '.join(FEATURE_TYPES)}")
        ftype = None
    source = raw.get("source")
    if not isinstance(source, str):
        p.add(f"{path}.source", "is required: a TransactionEvent field or attributes.<key>")
    else:
        check_source(p, f"{path}.source", source, ftype, sources)
    if "default" not in raw:
        p.add(f"{path}.default", "is required: the raw value used when the source is missing (null = missing "
              "for XGBoost)")
    default = raw.get("default")
    if ftype is not None and default is not None and not matches_type(default, ftype):
        p.add(f"{path}.default", f"{default!r} is not a valid {ftype} value")
    transforms = _parse_transforms(p, path, raw.get("transform"), ftype, sources) if "transform" in raw else ()
    if ftype == "category" and not (transforms and transforms[0].encoder):
        *others, last = encoder_kinds()
        p.add(f"{path}.transform", f"a category feature needs an encoder first: {', '.join(others)} or {last}")
    if len(p.items) > before:
        return None
    assert isinstance(name, str) and isinstance(source, str) and ftype is not None
    return FeatureSpec(name=name, source=source, type=ftype, default=default, transforms=transforms)


def _parse_transforms(
    p: Problems, path: str, raw: Any, ftype: str | None, sources: Mapping[str, str]
) -> tuple[Transform, ...]:
    steps = raw if isinstance(raw, list) else [raw]
    if not steps:
        p.add(f"{path}.transform", "is an empty list; remove it or name a transform")
        return ()
    out: list[Transform] = []
    for j, step in enumerate(steps):
        where = f"{path}.transform[{j}]" if isinstance(raw, list) else f"{path}.transform"
        parsed = _parse_step(p, where, step, ftype, sources)
        if parsed is None:
            continue
        problem = parsed.misplaced(j, len(steps), ftype)
        if problem is not None:
            p.add(where, problem)
        else:
            out.append(parsed)
    return tuple(out)


def _parse_step(
    p: Problems, where: str, step: Any, ftype: str | None, sources: Mapping[str, str]
) -> Transform | None:
    if isinstance(step, str):
        kind, params = step, None
    elif isinstance(step, Mapping) and len(step) == 1:
        kind, params = next(iter(step.items()))
    else:
        p.add(where, "must be a transform name (e.g. log1p) or a one-key mapping such as "
              f"{{clip: {{lo: 0, hi: 100}}}}, got {step!r}")
        return None
    cls = TRANSFORMS.get(kind)
    if cls is None:
        kinds = sorted(TRANSFORMS)
        p.add(where, f"unknown transform {kind!r}{suggest(str(kind), kinds)}; use one of: {', '.join(kinds)}")
        return None
    return cls.parse(params, StepSite(p, f"{where}.{kind}", ftype, sources))


def _parse_training(p: Problems, raw: Any) -> TrainingFacts:
    if not isinstance(raw, Mapping):
        p.add("training", "must be a mapping with negative_sampling_rate (1.0 = no down-sampling)")
        return TrainingFacts()
    check_keys(p, "training", raw, ("negative_sampling_rate", "window", "rows", "metrics"))
    beta = raw.get("negative_sampling_rate")
    if beta is None:
        p.add("training.negative_sampling_rate", "is required: the rate negatives were kept at (1.0 = all)")
        beta = 1.0
    elif not is_number(beta) or not 0.0 < beta <= 1.0:
        p.add("training.negative_sampling_rate", f"must be a number in (0, 1], got {beta!r}")
        beta = 1.0
    start = end = None
    window = raw.get("window")
    if window is not None:
        if not isinstance(window, Mapping):
            p.add("training.window", "must be a mapping {start: ISO date, end: ISO date}")
        else:
            check_keys(p, "training.window", window, ("start", "end"))
            start = _iso(p, "training.window.start", window.get("start"))
            end = _iso(p, "training.window.end", window.get("end"))
            if start and end and _parse_iso(start) > _parse_iso(end):
                p.add("training.window", f"start {start} is after end {end}")
    rows = raw.get("rows")
    if rows is not None and not (isinstance(rows, int) and not isinstance(rows, bool) and rows > 0):
        p.add("training.rows", f"must be a positive integer, got {rows!r}")
        rows = None
    metrics_raw = raw.get("metrics") or {}
    metrics: list[tuple[str, float]] = []
    if not isinstance(metrics_raw, Mapping):
        p.add("training.metrics", "must map metric names to numbers")
    else:
        for key, value in metrics_raw.items():
            if not isinstance(key, str) or not is_number(value):
                p.add(f"training.metrics.{key}", f"must be a number, got {value!r}")
            else:
                metrics.append((key, float(value)))
    return TrainingFacts(float(beta), start, end, rows, tuple(sorted(metrics)))


def _parse_iso(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(p: Problems, path: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            p.add(path, f"{value!r} is not an ISO-8601 date or date-time")
            return None
        return value
    p.add(path, f"must be an ISO-8601 date, got {value!r}")
    return None


def _parse_sla(p: Problems, raw: Any) -> Sla | None:
    if not isinstance(raw, Mapping):
        p.add("sla", "must be a mapping {p99_ms: number}")
        return None
    check_keys(p, "sla", raw, ("p99_ms",))
    target: Any = raw.get("p99_ms")
    if not is_number(target) or target <= 0:
        p.add("sla.p99_ms", f"must be a positive number of milliseconds, got {target!r}")
        return None
    return Sla(float(target))


def _parse_monitoring(p: Problems, raw: Any, declared: Sequence[Any]) -> Monitoring:
    if raw is None:
        return Monitoring()
    if not isinstance(raw, Mapping):
        p.add("monitoring", "must be a mapping {features: [declared feature names]}")
        return Monitoring()
    check_keys(p, "monitoring", raw, ("features",))
    watched = raw.get("features") or []
    if not isinstance(watched, list):
        p.add("monitoring.features", "must be a list of declared feature names")
        return Monitoring()
    names = [str(d) for d in declared]
    ok: list[str] = []
    for i, name in enumerate(watched):
        if not isinstance(name, str) or name not in names:
            p.add(f"monitoring.features[{i}]", f"{name!r} is not a declared feature{suggest(str(name), names)}")
        else:
            ok.append(name)
    return Monitoring(tuple(ok))
