"""The declarative model spec: one YAML file per model version, validated before anything loads.

A spec names the model and version, its owners and intents, the XGBoost artifact (path relative
to the spec file, format, sha256), the features (event field, type, default when missing, an
optional transform pipeline — never ``eval``, never pickle), training facts (negative sampling
rate beta, data window), the latency SLA and the features monitoring watches. Validation collects
every problem and raises one :class:`~museflow.errors.SpecError` naming the file, the field path
and the fix. Each transform kind is one :class:`Transform` subclass in :data:`TRANSFORMS` owning
its parsing, placement rules, spec form and vectorised evaluation, so a new kind is one class.
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

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import yaml

from museflow.contracts.schemas_path import load_avro_schema
from museflow.errors import SpecError

__all__ = [
    "ARTIFACT_FORMATS",
    "FEATURE_TYPES",
    "FRAMEWORKS",
    "TRANSFORMS",
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
    "StepSite",
    "TrainingFacts",
    "Transform",
    "dump_spec",
    "event_source_kinds",
    "load_spec",
    "parse_spec",
    "register_transform",
    "spec_from_mapping",
]

FRAMEWORKS = ("xgboost",)
ARTIFACT_FORMATS = ("json", "ubj")
FEATURE_TYPES = ("float", "int", "bool", "category")
ATTRIBUTES_PREFIX = "attributes."

FeatureType: TypeAlias = Literal["float", "int", "bool", "category"]
Scalar: TypeAlias = str | int | float | bool
FloatArray: TypeAlias = npt.NDArray[np.float64]
Mask: TypeAlias = npt.NDArray[np.bool_]
Read: TypeAlias = Callable[[str], list[Any]]

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
class StepSite:
    """Where one transform step is being parsed: the field path, the feature's type, the event fields."""

    problems: _Problems
    path: str
    ftype: str | None
    sources: Mapping[str, str]

    def add(self, message: str) -> None:
        """Report a problem with this step (at ``path``)."""
        self.problems.add(self.path, message)


class Transform:
    """One step of a feature's transform pipeline; a subclass is one transform kind.

    The class owns everything about its kind: parsing its spec form (:meth:`parse`), where it may
    stand in the pipeline (:meth:`misplaced`), its spec form (:meth:`params`) and its evaluation
    (:meth:`read` as the first step, :meth:`apply` after it). Decorated with
    :func:`register_transform`, the parser, :func:`dump_spec` and the feature builder use it.
    """

    kind: ClassVar[str]
    encoder: ClassVar[bool] = False
    """True when it reads the raw value (so it can encode a category) and must come first."""

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Transform | None:
        """The step from its spec parameters, or None after reporting the problem to ``site``."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The step's parameters as written in the spec (``{kind: params}``)."""
        return {}

    def misplaced(self, index: int, count: int, ftype: str | None) -> str | None:
        """Why this cannot be step ``index`` of ``count`` of a ``ftype`` feature; None when it can."""
        if index == 0 and ftype == "category":
            return f"{self.kind} needs a number; encode the category first ({', '.join(_encoder_kinds())})"
        return None

    def columns(self, name: str) -> tuple[str, ...]:
        """Matrix column names the feature ``name`` produces when this is its first step."""
        return (name,)

    def sources(self) -> tuple[str, ...]:
        """Event fields this step reads besides the feature's own source."""
        return ()

    def read(self, feature: FeatureSpec, read: Read) -> tuple[FloatArray, int]:
        """As the first step: the feature's column(s) for a batch and how many rows used the default."""
        x, missing = _numbers(read(feature.source), _number_default(feature))
        return self.apply(x), _count(missing)

    def apply(self, x: FloatArray) -> FloatArray:
        """After the first step: map a float column to a float column."""
        raise AssertionError(f"transform {self.kind} cannot follow another transform")


TRANSFORMS: dict[str, type[Transform]] = {}
"""Every transform kind the spec accepts, by name, in registration order."""

_T = TypeVar("_T", bound=type[Transform])


def register_transform(cls: _T) -> _T:
    """Class decorator: make ``cls`` a transform kind the spec parser, dumper and feature builder know."""
    TRANSFORMS[cls.kind] = cls
    return cls


def _encoder_kinds() -> list[str]:
    return [kind for kind, cls in TRANSFORMS.items() if cls.encoder]


class _Encoder(Transform):
    """A first step that reads the raw value (defaults filled in) rather than a number."""

    encoder: ClassVar[bool] = True

    def misplaced(self, index: int, count: int, ftype: str | None) -> str | None:
        if index > 0:
            return f"{self.kind} reads the raw value, so it must be the first transform"
        return None

    def read(self, feature: FeatureSpec, read: Read) -> tuple[FloatArray, int]:
        raw = read(feature.source)
        missing = raw.count(None)
        if missing and feature.default is not None:
            raw = [feature.default if v is None else v for v in raw]
        return self.encode(raw, feature.type), missing

    def encode(self, raw: list[Any], ftype: str) -> FloatArray:
        """The column(s) for the raw values of a ``ftype`` feature."""
        raise NotImplementedError


@register_transform
@dataclass(frozen=True)
class Log1p(Transform):
    """``ln(1 + max(x, 0))``: compresses heavy-tailed amounts and counts."""

    kind: ClassVar[str] = "log1p"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Log1p | None:
        if params not in (None, {}):
            site.add("takes no parameters")
            return None
        return cls()

    def apply(self, x: FloatArray) -> FloatArray:
        return np.log1p(np.maximum(x, 0.0))


@register_transform
@dataclass(frozen=True)
class Clip(Transform):
    """Bound ``x`` to ``[lo, hi]`` (either bound may be absent)."""

    lo: float | None
    hi: float | None
    kind: ClassVar[str] = "clip"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Clip | None:
        if isinstance(params, list) and len(params) == 2:
            lo, hi = params
        elif isinstance(params, Mapping) and set(params) <= {"lo", "hi"} and params:
            lo, hi = params.get("lo"), params.get("hi")
        else:
            site.add("needs bounds: {clip: {lo: 0, hi: 100}} or {clip: [0, 100]} (one bound may be null)")
            return None
        if any(b is not None and not _is_number(b) for b in (lo, hi)) or (lo is None and hi is None):
            site.add(f"bounds must be numbers (one may be null), got lo={lo!r}, hi={hi!r}")
            return None
        if lo is not None and hi is not None and lo > hi:
            site.add(f"lo ({lo}) must be <= hi ({hi})")
            return None
        return cls(None if lo is None else float(lo), None if hi is None else float(hi))

    def params(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi}

    def apply(self, x: FloatArray) -> FloatArray:
        return np.clip(x, -math.inf if self.lo is None else self.lo, math.inf if self.hi is None else self.hi)


@register_transform
@dataclass(frozen=True)
class Bucketize(Transform):
    """Bucket index of ``x``: the number of (strictly increasing) ``edges`` that are <= x."""

    edges: tuple[float, ...]
    kind: ClassVar[str] = "bucketize"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Bucketize | None:
        edges = params.get("edges") if isinstance(params, Mapping) else params
        if not isinstance(edges, list) or not edges or not all(_is_number(e) for e in edges):
            site.add("needs edges: a non-empty list of numbers, e.g. {bucketize: [1, 10, 100]}")
            return None
        if any(b <= a for a, b in itertools.pairwise(edges)):
            site.add(f"edges must be strictly increasing, got {edges}")
            return None
        return cls(tuple(float(e) for e in edges))

    def params(self) -> dict[str, Any]:
        return {"edges": list(self.edges)}

    def apply(self, x: FloatArray) -> FloatArray:
        idx = np.searchsorted(np.asarray(self.edges), x, side="right").astype(np.float64)
        return np.where(np.isnan(x), math.nan, idx)


@register_transform
@dataclass(frozen=True)
class OneHot(_Encoder):
    """One 0/1 column per listed value; anything else (or missing) is all zeros."""

    values: tuple[Scalar, ...]
    kind: ClassVar[str] = "one_hot"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> OneHot | None:
        values = params.get("values") if isinstance(params, Mapping) else params
        if not isinstance(values, list):
            values = [values]
        ftype = site.ftype
        if not values or any(v is None for v in values) or (ftype and not all(_matches_type(v, ftype) for v in values)):
            site.add(f"needs values: a non-empty list of {ftype or 'raw'} values, e.g. {{one_hot: [web, app]}}")
            return None
        if len(set(values)) != len(values):
            site.add(f"values must be unique, got {values}")
            return None
        return cls(tuple(values))

    def params(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def misplaced(self, index: int, count: int, ftype: str | None) -> str | None:
        if (problem := super().misplaced(index, count, ftype)) is not None:
            return problem
        if count > 1:
            return "one_hot produces several columns and cannot be followed by other transforms"
        return None

    def columns(self, name: str) -> tuple[str, ...]:
        return tuple(f"{name}={v}" for v in self.values)

    def encode(self, raw: list[Any], ftype: str) -> FloatArray:
        arr = _raw_array(raw, ftype)
        return np.stack([np.equal(arr, value) for value in self.values], axis=1).astype(np.float64)


@register_transform
@dataclass(frozen=True)
class Equals(_Encoder):
    """1.0 when the raw value equals ``value``, else 0.0."""

    value: Scalar
    kind: ClassVar[str] = "equals"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Equals | None:
        value = params.get("value") if isinstance(params, Mapping) else params
        ftype = site.ftype
        if value is None or (ftype and not _matches_type(value, ftype)):
            site.add(f"needs a {ftype or 'raw'} value to compare with, e.g. {{equals: web}}")
            return None
        return cls(value)

    def params(self) -> dict[str, Any]:
        return {"value": self.value}

    def encode(self, raw: list[Any], ftype: str) -> FloatArray:
        arr = _raw_array(raw, ftype)
        x: FloatArray = np.equal(arr, self.value).astype(np.float64)
        if ftype != "category":
            x[np.isnan(arr.astype(np.float64))] = math.nan
        return x


@register_transform
@dataclass(frozen=True)
class Lookup(_Encoder):
    """Map a category to a number through ``table``; unlisted values map to ``default``."""

    table: tuple[tuple[str, float], ...]
    default: float
    kind: ClassVar[str] = "lookup"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Lookup | None:
        if not isinstance(params, Mapping) or not isinstance(params.get("table"), Mapping):
            site.add("needs {table: {value: number, ...}, default: number}")
            return None
        table = params["table"]
        default = params.get("default", 0.0)
        bad = [k for k, v in table.items() if not isinstance(k, str) or not _is_number(v)]
        if bad or not table or not _is_number(default):
            site.add(f"table must map strings to numbers and default must be a number (bad keys: {bad})")
            return None
        return cls(tuple(sorted((k, float(v)) for k, v in table.items())), float(default))

    def params(self) -> dict[str, Any]:
        return {"table": dict(self.table), "default": self.default}

    def misplaced(self, index: int, count: int, ftype: str | None) -> str | None:
        if (problem := super().misplaced(index, count, ftype)) is not None:
            return problem
        if ftype == "bool":
            return f"{self.kind} does not apply to a bool feature"
        if ftype in ("float", "int"):
            return "lookup maps category strings; use bucketize or equals for numbers"
        return None

    def encode(self, raw: list[Any], ftype: str) -> FloatArray:
        table = dict(self.table)
        return np.array([table.get(v, self.default) for v in raw], dtype=np.float64)


@register_transform
@dataclass(frozen=True)
class Ratio(Transform):
    """``x / denominator`` where the denominator is another event field; ``on_zero`` when it is 0."""

    denominator: str
    on_zero: float
    kind: ClassVar[str] = "ratio"

    @classmethod
    def parse(cls, params: Any, site: StepSite) -> Ratio | None:
        if isinstance(params, str):
            params = {"denominator": params}
        if not isinstance(params, Mapping) or not isinstance(params.get("denominator"), str):
            site.add("needs a denominator source, e.g. {ratio: {denominator: attributes.amount_avg_30d}}")
            return None
        p, at = site.problems, site.path
        _check_keys(p, at, params, ("denominator", "on_zero"))
        denominator = str(params["denominator"])
        before = len(p.items)
        _check_source(p, f"{at}.denominator", denominator, "float", site.sources)
        on_zero = params.get("on_zero", 0.0)
        if not _is_number(on_zero):
            p.add(f"{at}.on_zero", f"must be a number, got {on_zero!r}")
        if len(p.items) > before:
            return None
        return cls(denominator, float(on_zero))

    def params(self) -> dict[str, Any]:
        return {"denominator": self.denominator, "on_zero": self.on_zero}

    def misplaced(self, index: int, count: int, ftype: str | None) -> str | None:
        if index > 0:
            return "ratio reads the raw source, so it must be the first transform"
        if ftype == "bool":
            return f"{self.kind} does not apply to a bool feature"
        return super().misplaced(index, count, ftype)

    def sources(self) -> tuple[str, ...]:
        return (self.denominator,)

    def read(self, feature: FeatureSpec, read: Read) -> tuple[FloatArray, int]:
        x, missing = _numbers(read(feature.source), _number_default(feature))
        den, den_missing = _numbers(read(self.denominator), None)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(den == 0.0, self.on_zero, x / den)
        if den_missing is not None:
            missing = den_missing if missing is None else (missing | den_missing)
        return x, _count(missing)


def _number_default(feature: FeatureSpec) -> float | None:
    return None if feature.default is None else float(feature.default)


def _count(missing: Mask | None) -> int:
    return 0 if missing is None else int(missing.sum())


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp() * 1000.0
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _numbers(raw: list[Any], default: float | None) -> tuple[FloatArray, Mask | None]:
    """Values as float64 with defaults filled, and the mask of rows that used the default."""
    fill = math.nan if default is None else float(default)
    missing: Mask | None = None
    values: list[Any] = raw
    if None in raw:
        missing = np.fromiter((v is None for v in raw), dtype=np.bool_, count=len(raw))
        values = [fill if v is None else v for v in raw]
    try:
        return np.asarray(values, dtype=np.float64), missing
    except (TypeError, ValueError):
        coerced = [_as_float(v) for v in values]
        bad = np.fromiter((v is None for v in coerced), dtype=np.bool_, count=len(raw))
        arr = np.array([fill if v is None else v for v in coerced], dtype=np.float64)
        return arr, bad if missing is None else (bad | missing)


def _raw_array(raw: list[Any], ftype: str) -> npt.NDArray[Any]:
    """Raw values as an array to compare: objects for a category, numbers otherwise."""
    return np.array(raw, dtype=object) if ftype == "category" else _numbers(raw, None)[0]


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
        if self.transforms:
            x, missing = self.transforms[0].read(self, read)
        else:
            values, mask = _numbers(read(self.source), _number_default(self))
            x, missing = values, _count(mask)
        for step in self.transforms[1:]:
            x = step.apply(x)
        return x.reshape(x.shape[0], -1), missing

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
    if ftype == "category" and not (transforms and transforms[0].encoder):
        *others, last = _encoder_kinds()
        p.add(f"{path}.transform", f"a category feature needs an encoder first: {', '.join(others)} or {last}")
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
        problem = parsed.misplaced(j, len(steps), ftype)
        if problem is not None:
            p.add(where, problem)
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
    cls = TRANSFORMS.get(kind)
    if cls is None:
        kinds = sorted(TRANSFORMS)
        p.add(where, f"unknown transform {kind!r}{_suggest(str(kind), kinds)}; use one of: {', '.join(kinds)}")
        return None
    return cls.parse(params, StepSite(p, f"{where}.{kind}", ftype, sources))


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
