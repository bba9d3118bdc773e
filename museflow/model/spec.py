"""The declarative model spec: one YAML file per model version, validated before anything loads.

A spec names the model and version, its owners and intents, the XGBoost artifact (path relative
to the spec file, format, sha256), the features (event field, type, default when missing, an
optional transform pipeline evaluated by :mod:`museflow.model.features` — never ``eval``, never
pickle), training facts (negative sampling rate beta, data window), the latency SLA and the
features monitoring watches. Validation collects every problem and raises one
:class:`~museflow.errors.SpecError` naming the file, the field path and the fix. Example::

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

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias

import yaml

from museflow.contracts.schemas_path import load_avro_schema
from museflow.errors import SpecError

__all__ = [
    "ARTIFACT_FORMATS",
    "FEATURE_TYPES",
    "FRAMEWORKS",
    "TRANSFORM_KINDS",
    "ArtifactRef",
    "Bucketize",
    "Clip",
    "Equals",
    "FeatureSpec",
    "Log1p",
    "Lookup",
    "ModelSpec",
    "Monitoring",
    "OneHot",
    "Ratio",
    "Sla",
    "TrainingFacts",
    "Transform",
    "dump_spec",
    "event_source_kinds",
    "load_spec",
    "parse_spec",
    "spec_from_mapping",
]

FRAMEWORKS = ("xgboost",)
ARTIFACT_FORMATS = ("json", "ubj")
FEATURE_TYPES = ("float", "int", "bool", "category")
ATTRIBUTES_PREFIX = "attributes."

FeatureType: TypeAlias = Literal["float", "int", "bool", "category"]
Scalar: TypeAlias = str | int | float | bool

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_FEATURE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_TOP_KEYS = (
    "name", "version", "description", "owners", "intents", "framework", "artifact",
    "features", "training", "sla", "monitoring",
)
_REQUIRED_TOP = ("name", "version", "owners", "intents", "framework", "artifact", "features", "training")


@dataclass(frozen=True)
class Log1p:
    """``ln(1 + max(x, 0))``: compresses heavy-tailed amounts and counts."""

    kind: ClassVar[str] = "log1p"

    def params(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Clip:
    """Bound ``x`` to ``[lo, hi]`` (either bound may be absent)."""

    lo: float | None
    hi: float | None
    kind: ClassVar[str] = "clip"

    def params(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class Bucketize:
    """Bucket index of ``x``: the number of (strictly increasing) ``edges`` that are <= x."""

    edges: tuple[float, ...]
    kind: ClassVar[str] = "bucketize"

    def params(self) -> dict[str, Any]:
        return {"edges": list(self.edges)}


@dataclass(frozen=True)
class OneHot:
    """One 0/1 column per listed value; anything else (or missing) is all zeros."""

    values: tuple[Scalar, ...]
    kind: ClassVar[str] = "one_hot"

    def params(self) -> dict[str, Any]:
        return {"values": list(self.values)}


@dataclass(frozen=True)
class Equals:
    """1.0 when the raw value equals ``value``, else 0.0."""

    value: Scalar
    kind: ClassVar[str] = "equals"

    def params(self) -> dict[str, Any]:
        return {"value": self.value}


@dataclass(frozen=True)
class Lookup:
    """Map a category to a number through ``table``; unlisted values map to ``default``."""

    table: tuple[tuple[str, float], ...]
    default: float
    kind: ClassVar[str] = "lookup"

    def params(self) -> dict[str, Any]:
        return {"table": dict(self.table), "default": self.default}


@dataclass(frozen=True)
class Ratio:
    """``x / denominator`` where the denominator is another event field; ``on_zero`` when it is 0."""

    denominator: str
    on_zero: float
    kind: ClassVar[str] = "ratio"

    def params(self) -> dict[str, Any]:
        return {"denominator": self.denominator, "on_zero": self.on_zero}


Transform: TypeAlias = Log1p | Clip | Bucketize | OneHot | Equals | Lookup | Ratio
TRANSFORM_KINDS = ("bucketize", "clip", "equals", "log1p", "lookup", "one_hot", "ratio")
_ENCODERS = ("one_hot", "equals", "lookup")


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
        if self.transforms and isinstance(self.transforms[0], OneHot):
            return tuple(f"{self.name}={v}" for v in self.transforms[0].values)
        return (self.name,)

    def sources(self) -> tuple[str, ...]:
        """Every event field this feature reads (its source, plus a ratio's denominator)."""
        extra = tuple(t.denominator for t in self.transforms if isinstance(t, Ratio))
        return (self.source, *extra)

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


class _Problems:
    """Collects located problems so one SpecError can report all of them."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        count = len(self.items)
        lines = [f"invalid model spec {self.origin} ({count} problem{'s' if count > 1 else ''}):"]
        lines += [f"  {path}: {message}" for path, message in self.items]
        raise SpecError("\n".join(lines))


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(p: _Problems, path: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            p.add(where, f"unknown key{_suggest(str(key), allowed)}; allowed keys: {', '.join(allowed)}")


def _string_list(p: _Problems, path: str, value: Any, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
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
    p = _Problems(origin)
    if not isinstance(data, Mapping):
        p.add("<root>", f"must be a mapping of spec fields, got {type(data).__name__}")
        p.raise_if_any()
    _check_keys(p, "", data, _TOP_KEYS)
    for key in _REQUIRED_TOP:
        if key not in data:
            p.add(key, "is required")

    name = data.get("name")
    if "name" in data and not (isinstance(name, str) and _NAME_RE.fullmatch(name)):
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
    intents = _string_list(p, "intents", data["intents"], _NAME_RE) if "intents" in data else ()
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


def _parse_artifact(p: _Problems, raw: Any) -> ArtifactRef | None:
    if not isinstance(raw, Mapping):
        p.add("artifact", "must be a mapping with uri, format and sha256")
        return None
    _check_keys(p, "artifact", raw, ("uri", "format", "sha256"))
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


def _parse_features(p: _Problems, raw: Any) -> tuple[FeatureSpec, ...]:
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


def _parse_feature(p: _Problems, path: str, raw: Any, sources: Mapping[str, str]) -> FeatureSpec | None:
    if not isinstance(raw, Mapping):
        p.add(path, "must be a mapping with name, source, type and default")
        return None
    _check_keys(p, path, raw, ("name", "source", "type", "default", "transform", "description"))
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
        _check_source(p, f"{path}.source", source, ftype, sources)
    if "default" not in raw:
        p.add(f"{path}.default", "is required: the raw value used when the source is missing (null = missing "
              "for XGBoost)")
    default = raw.get("default")
    if ftype is not None and default is not None and not _matches_type(default, ftype):
        p.add(f"{path}.default", f"{default!r} is not a valid {ftype} value")
    transforms = _parse_transforms(p, path, raw.get("transform"), ftype, sources) if "transform" in raw else ()
    if ftype == "category" and not (transforms and transforms[0].kind in _ENCODERS):
        p.add(f"{path}.transform", "a category feature needs an encoder first: one_hot, equals or lookup")
    if len(p.items) > before:
        return None
    assert isinstance(name, str) and isinstance(source, str) and ftype is not None
    return FeatureSpec(name=name, source=source, type=ftype, default=default, transforms=transforms)


def _check_source(p: _Problems, path: str, source: str, ftype: str | None, sources: Mapping[str, str]) -> None:
    if source.startswith(ATTRIBUTES_PREFIX):
        if not source[len(ATTRIBUTES_PREFIX):]:
            p.add(path, "attributes.<key> needs a key, e.g. attributes.velocity_1h")
        return
    kind = sources.get(source)
    if kind is None or kind == "map":
        fields_ = [k for k, v in sources.items() if v != "map"]
        p.add(path, f"{source!r} is not a field of TransactionEvent{_suggest(source, fields_)}; use one of "
              f"{', '.join(fields_)} or attributes.<key>")
        return
    if kind == "string" and ftype in ("float", "int", "bool"):
        p.add(path, f"{source!r} is a string field; declare the feature as type category")
    if kind == "number" and ftype in ("category", "bool"):
        p.add(path, f"{source!r} is a numeric field; declare the feature as type float or int")


def _matches_type(value: Any, ftype: str) -> bool:
    if ftype == "float":
        return _is_number(value)
    if ftype == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


def _parse_transforms(
    p: _Problems, path: str, raw: Any, ftype: str | None, sources: Mapping[str, str]
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
        if parsed.kind in _ENCODERS and j > 0:
            p.add(where, f"{parsed.kind} reads the raw value, so it must be the first transform")
        elif parsed.kind == "ratio" and j > 0:
            p.add(where, "ratio reads the raw source, so it must be the first transform")
        elif parsed.kind == "one_hot" and len(steps) > 1:
            p.add(where, "one_hot produces several columns and cannot be followed by other transforms")
        elif j == 0 and ftype == "category" and parsed.kind not in _ENCODERS:
            p.add(where, f"{parsed.kind} needs a number; encode the category first (one_hot, equals, lookup)")
        elif ftype in ("bool",) and parsed.kind in ("ratio", "lookup"):
            p.add(where, f"{parsed.kind} does not apply to a bool feature")
        elif ftype in ("float", "int") and parsed.kind == "lookup":
            p.add(where, "lookup maps category strings; use bucketize or equals for numbers")
        else:
            out.append(parsed)
    return tuple(out)


def _parse_step(
    p: _Problems, where: str, step: Any, ftype: str | None, sources: Mapping[str, str]
) -> Transform | None:
    if isinstance(step, str):
        kind, params = step, None
    elif isinstance(step, Mapping) and len(step) == 1:
        kind, params = next(iter(step.items()))
    else:
        p.add(where, "must be a transform name (e.g. log1p) or a one-key mapping such as "
              f"{{clip: {{lo: 0, hi: 100}}}}, got {step!r}")
        return None
    if kind not in TRANSFORM_KINDS:
        p.add(where, f"unknown transform {kind!r}{_suggest(str(kind), TRANSFORM_KINDS)}; use one of: "
              f"{', '.join(TRANSFORM_KINDS)}")
        return None
    at = f"{where}.{kind}"
    if kind == "log1p":
        if params not in (None, {}):
            p.add(at, "takes no parameters")
            return None
        return Log1p()
    if kind == "clip":
        return _parse_clip(p, at, params)
    if kind == "bucketize":
        edges = params.get("edges") if isinstance(params, Mapping) else params
        if not isinstance(edges, list) or not edges or not all(_is_number(e) for e in edges):
            p.add(at, "needs edges: a non-empty list of numbers, e.g. {bucketize: [1, 10, 100]}")
            return None
        if any(b <= a for a, b in itertools.pairwise(edges)):
            p.add(at, f"edges must be strictly increasing, got {edges}")
            return None
        return Bucketize(tuple(float(e) for e in edges))
    if kind == "one_hot":
        values = params.get("values") if isinstance(params, Mapping) else params
        if not isinstance(values, list):
            values = [values]
        if not values or any(v is None for v in values) or (ftype and not all(_matches_type(v, ftype) for v in values)):
            p.add(at, f"needs values: a non-empty list of {ftype or 'raw'} values, e.g. {{one_hot: [web, app]}}")
            return None
        if len(set(values)) != len(values):
            p.add(at, f"values must be unique, got {values}")
            return None
        return OneHot(tuple(values))
    if kind == "equals":
        value = params.get("value") if isinstance(params, Mapping) else params
        if value is None or (ftype and not _matches_type(value, ftype)):
            p.add(at, f"needs a {ftype or 'raw'} value to compare with, e.g. {{equals: web}}")
            return None
        return Equals(value)
    if kind == "lookup":
        return _parse_lookup(p, at, params)
    return _parse_ratio(p, at, params, sources)


def _parse_clip(p: _Problems, at: str, params: Any) -> Clip | None:
    if isinstance(params, list) and len(params) == 2:
        lo, hi = params
    elif isinstance(params, Mapping) and set(params) <= {"lo", "hi"} and params:
        lo, hi = params.get("lo"), params.get("hi")
    else:
        p.add(at, "needs bounds: {clip: {lo: 0, hi: 100}} or {clip: [0, 100]} (one bound may be null)")
        return None
    if any(b is not None and not _is_number(b) for b in (lo, hi)) or (lo is None and hi is None):
        p.add(at, f"bounds must be numbers (one may be null), got lo={lo!r}, hi={hi!r}")
        return None
    if lo is not None and hi is not None and lo > hi:
        p.add(at, f"lo ({lo}) must be <= hi ({hi})")
        return None
    return Clip(None if lo is None else float(lo), None if hi is None else float(hi))


def _parse_lookup(p: _Problems, at: str, params: Any) -> Lookup | None:
    if not isinstance(params, Mapping) or not isinstance(params.get("table"), Mapping):
        p.add(at, "needs {table: {value: number, ...}, default: number}")
        return None
    table = params["table"]
    default = params.get("default", 0.0)
    bad = [k for k, v in table.items() if not isinstance(k, str) or not _is_number(v)]
    if bad or not table or not _is_number(default):
        p.add(at, f"table must map strings to numbers and default must be a number (bad keys: {bad})")
        return None
    return Lookup(tuple(sorted((k, float(v)) for k, v in table.items())), float(default))


def _parse_ratio(p: _Problems, at: str, params: Any, sources: Mapping[str, str]) -> Ratio | None:
    if isinstance(params, str):
        params = {"denominator": params}
    if not isinstance(params, Mapping) or not isinstance(params.get("denominator"), str):
        p.add(at, "needs a denominator source, e.g. {ratio: {denominator: attributes.amount_avg_30d}}")
        return None
    _check_keys(p, at, params, ("denominator", "on_zero"))
    denominator = str(params["denominator"])
    before = len(p.items)
    _check_source(p, f"{at}.denominator", denominator, "float", sources)
    on_zero = params.get("on_zero", 0.0)
    if not _is_number(on_zero):
        p.add(f"{at}.on_zero", f"must be a number, got {on_zero!r}")
    if len(p.items) > before:
        return None
    return Ratio(denominator, float(on_zero))


def _parse_training(p: _Problems, raw: Any) -> TrainingFacts:
    if not isinstance(raw, Mapping):
        p.add("training", "must be a mapping with negative_sampling_rate (1.0 = no down-sampling)")
        return TrainingFacts()
    _check_keys(p, "training", raw, ("negative_sampling_rate", "window", "rows", "metrics"))
    beta = raw.get("negative_sampling_rate")
    if beta is None:
        p.add("training.negative_sampling_rate", "is required: the rate negatives were kept at (1.0 = all)")
        beta = 1.0
    elif not _is_number(beta) or not 0.0 < beta <= 1.0:
        p.add("training.negative_sampling_rate", f"must be a number in (0, 1], got {beta!r}")
        beta = 1.0
    start = end = None
    window = raw.get("window")
    if window is not None:
        if not isinstance(window, Mapping):
            p.add("training.window", "must be a mapping {start: ISO date, end: ISO date}")
        else:
            _check_keys(p, "training.window", window, ("start", "end"))
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
            if not isinstance(key, str) or not _is_number(value):
                p.add(f"training.metrics.{key}", f"must be a number, got {value!r}")
            else:
                metrics.append((key, float(value)))
    return TrainingFacts(float(beta), start, end, rows, tuple(sorted(metrics)))


def _parse_iso(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(p: _Problems, path: str, value: Any) -> str | None:
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


def _parse_sla(p: _Problems, raw: Any) -> Sla | None:
    if not isinstance(raw, Mapping):
        p.add("sla", "must be a mapping {p99_ms: number}")
        return None
    _check_keys(p, "sla", raw, ("p99_ms",))
    target: Any = raw.get("p99_ms")
    if not _is_number(target) or target <= 0:
        p.add("sla.p99_ms", f"must be a positive number of milliseconds, got {target!r}")
        return None
    return Sla(float(target))


def _parse_monitoring(p: _Problems, raw: Any, declared: Sequence[Any]) -> Monitoring:
    if raw is None:
        return Monitoring()
    if not isinstance(raw, Mapping):
        p.add("monitoring", "must be a mapping {features: [declared feature names]}")
        return Monitoring()
    _check_keys(p, "monitoring", raw, ("features",))
    watched = raw.get("features") or []
    if not isinstance(watched, list):
        p.add("monitoring.features", "must be a list of declared feature names")
        return Monitoring()
    names = [str(d) for d in declared]
    ok: list[str] = []
    for i, name in enumerate(watched):
        if not isinstance(name, str) or name not in names:
            p.add(f"monitoring.features[{i}]", f"{name!r} is not a declared feature{_suggest(str(name), names)}")
        else:
            ok.append(name)
    return Monitoring(tuple(ok))
