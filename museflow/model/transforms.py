"""Transforms of a model-spec feature: one class per kind, owning its parsing, placement, spec form and evaluation.

A :class:`Transform` subclass decorated with :func:`register_transform` is a kind the spec parser
(:mod:`museflow.model.spec`), :func:`~museflow.model.spec.dump_spec` and the feature builder know;
nothing else names it. Values are computed with numpy over a batch's column, never with ``eval``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from museflow.model.problems import Problems, check_keys, check_source, is_number

if TYPE_CHECKING:
    from museflow.model.spec import FeatureSpec

__all__ = [
    "TRANSFORMS",
    "Bucketize",
    "Clip",
    "Equals",
    "FloatArray",
    "Log1p",
    "Lookup",
    "OneHot",
    "Ratio",
    "Read",
    "Scalar",
    "StepSite",
    "Transform",
    "encoder_kinds",
    "evaluate",
    "matches_type",
    "register_transform",
]

Scalar: TypeAlias = str | int | float | bool
FloatArray: TypeAlias = npt.NDArray[np.float64]
Mask: TypeAlias = npt.NDArray[np.bool_]
Read: TypeAlias = Callable[[str], list[Any]]


@dataclass(frozen=True)
class StepSite:
    """Where one transform step is being parsed: the field path, the feature's type, the event fields."""

    problems: Problems
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
            return f"{self.kind} needs a number; encode the category first ({', '.join(encoder_kinds())})"
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


def encoder_kinds() -> list[str]:
    """The kinds that read the raw value and so can encode a category (they must come first)."""
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
        if any(b is not None and not is_number(b) for b in (lo, hi)) or (lo is None and hi is None):
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
        if not isinstance(edges, list) or not edges or not all(is_number(e) for e in edges):
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
        if not values or any(v is None for v in values) or (ftype and not all(matches_type(v, ftype) for v in values)):
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
        if value is None or (ftype and not matches_type(value, ftype)):
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
        bad = [k for k, v in table.items() if not isinstance(k, str) or not is_number(v)]
        if bad or not table or not is_number(default):
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
        check_keys(p, at, params, ("denominator", "on_zero"))
        denominator = str(params["denominator"])
        before = len(p.items)
        check_source(p, f"{at}.denominator", denominator, "float", site.sources)
        on_zero = params.get("on_zero", 0.0)
        if not is_number(on_zero):
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


def matches_type(value: Any, ftype: str) -> bool:
    """Whether a literal in a spec (a default, a one-hot value) is a value of a ``ftype`` feature."""
    if ftype == "float":
        return is_number(value)
    if ftype == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


def evaluate(feature: FeatureSpec, read: Read) -> tuple[FloatArray, int]:
    """A feature's (rows, columns) values for a batch and how many rows used the default (its transforms
    in order; none: the source as a number)."""
    steps = feature.transforms
    if steps:
        x, missing = steps[0].read(feature, read)
    else:
        values, mask = _numbers(read(feature.source), _number_default(feature))
        x, missing = values, _count(mask)
    for step in steps[1:]:
        x = step.apply(x)
    return x.reshape(x.shape[0], -1), missing
