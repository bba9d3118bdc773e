"""Golden values for museflow's CBPE from NannyML itself, run in a throwaway venv on seeded data.

Run: ``python bench/nannyml_golden.py [--rebuild]`` (with museflow's venv; the first run installs
NannyML into ``bench/.nannyml-venv``, a few minutes). Writes ``tests/unit/golden/cbpe_nannyml.json``,
which ``tests/unit/test_estimate.py`` checks museflow's estimate against (within 0.01).

Why a second venv: NannyML pulls in lightgbm, FLAML, pandas pins and cloud filesystems; none of
that belongs in museflow's runtime or dev extras. The data is generated here, with museflow's
numpy, by :func:`golden_data` (the unit test loads this file and calls the same function, and the
JSON records the data's sha256 so a change of numpy's streams cannot pass unnoticed); it reaches
NannyML as CSV at full precision, never pickled.

Like with like: NannyML's CBPE by default fits an isotonic calibrator on the reference data when
its cross-validated check says calibration helps, and estimates from the calibrated
probabilities. museflow estimates from the corrected probabilities as they are (calibration is
checked against labels, not silently refitted), so the golden run passes
``calibrator=NoopCalibrator()`` (``nannyml.calibration``): estimates then come straight from the
probabilities. The JSON also keeps what the default isotonic calibration gives, for the record.

Env: ``MUSEFLOW_NANNYML_VENV`` (default ``bench/.nannyml-venv``), ``NANNYML_VERSION`` (default
below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "unit" / "golden" / "cbpe_nannyml.json"
NANNYML_VERSION = os.environ.get("NANNYML_VERSION", "0.13.1")
VENV = Path(os.environ.get("MUSEFLOW_NANNYML_VENV", ROOT / "bench" / ".nannyml-venv"))

DATA = {"seed": 2021, "n_reference": 20_000, "n_analysis": 10_000, "prior": 0.05, "mu": 2.0,
        "shifted_from": 6_000, "shifted_prior": 0.10}
"""Binormal scores (x ~ N(mu * y, 1), p the exact posterior for ``prior``): calibrated by construction,
except that the analysis rows from ``shifted_from`` on have twice the fraud rate (a prior shift)."""
THRESHOLDS = (0.9, 0.98)
CHUNK_SIZE = 2_000
METRICS = ("precision", "recall", "f1")


def golden_data(seed: int, n_reference: int, n_analysis: int, prior: float, mu: float, shifted_from: int,
                shifted_prior: float) -> dict[str, npt.NDArray[Any]]:
    """Reference and analysis rows: corrected probability ``p``, mapped score ``s`` (reference ECDF), label ``y``."""
    rng = np.random.default_rng(seed)
    rates = np.concatenate([np.full(n_reference + shifted_from, prior),
                            np.full(n_analysis - shifted_from, shifted_prior)])
    y = rng.random(rates.size) < rates
    x = rng.standard_normal(rates.size) + mu * y
    p = 1.0 / (1.0 + np.exp(-(math.log(prior / (1.0 - prior)) + mu * x - mu * mu / 2.0)))
    ordered = np.sort(p[:n_reference])
    s = np.searchsorted(ordered, p, side="right") / n_reference
    cut = n_reference
    return {"reference_p": p[:cut], "reference_s": s[:cut], "reference_y": y[:cut],
            "p": p[cut:], "s": s[cut:], "y": y[cut:]}


def data_sha256(data: dict[str, npt.NDArray[Any]]) -> str:
    """Digest of the arrays (little-endian float64 / bool bytes, keys in order)."""
    digest = hashlib.sha256()
    for key in sorted(data):
        array = data[key]
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(array, dtype="<f8" if array.dtype.kind == "f" else "?").tobytes())
    return digest.hexdigest()


RUNNER = r'''
import json, sys, warnings
import pandas as pd
import nannyml as nml
from nannyml.calibration import NoopCalibrator

warnings.simplefilter("ignore")
reference = pd.read_csv(sys.argv[1], float_precision="round_trip")
analysis = pd.read_csv(sys.argv[2], float_precision="round_trip")
thresholds = json.loads(sys.argv[3])
chunk_size = int(sys.argv[4])
metrics = json.loads(sys.argv[5])
out = {"nannyml_version": nml.__version__, "pandas_version": pd.__version__, "runs": []}
for tau in thresholds:
    column = f"y_pred_{tau}"
    for calibration in ("none", "isotonic"):
        kwargs = {"calibrator": NoopCalibrator()} if calibration == "none" else {}
        estimator = nml.CBPE(problem_type="classification_binary", y_pred_proba="p", y_pred=column, y_true="y",
                             metrics=metrics, chunk_size=chunk_size, **kwargs)
        estimator.fit(reference)
        frame = estimator.estimate(analysis).filter(period="analysis").to_df()
        chunks = []
        for _, row in frame.iterrows():
            chunk = {"key": row[("chunk", "key")], "start_index": int(row[("chunk", "start_index")]),
                     "end_index": int(row[("chunk", "end_index")])}
            for metric in metrics:
                chunk[f"estimated_{metric}"] = float(row[(metric, "value")])
                chunk[f"realized_{metric}"] = float(row[(metric, "realized")])
            chunks.append(chunk)
        out["runs"].append({"threshold": tau, "calibration": calibration,
                            "needs_calibration": bool(estimator.needs_calibration), "chunks": chunks})
json.dump(out, sys.stdout)
'''


def ensure_venv(rebuild: bool) -> Path:
    """The throwaway venv with NannyML (idempotent: a stamp file marks it ready)."""
    python = VENV / "bin" / "python"
    # nannyml 0.13.1 imports statsmodels (plots/components/joy_plot.py) without declaring it.
    requirements = (f"nannyml=={NANNYML_VERSION}", "statsmodels")
    stamp = VENV / (".ready-" + hashlib.sha256(" ".join(requirements).encode()).hexdigest()[:12])
    if stamp.exists() and not rebuild:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
                   check=True)
    stamp.write_text(" ".join(requirements) + "\n")
    return python


def write_csv(path: Path, p: npt.NDArray[Any], s: npt.NDArray[Any], y: npt.NDArray[Any]) -> None:
    """Columns p, s, y and one ``y_pred_<tau>`` per threshold (alert = s > tau); floats at full precision."""
    columns = ["p", "s", "y", *(f"y_pred_{tau}" for tau in THRESHOLDS)]
    lines = [",".join(columns)]
    for i in range(p.size):
        preds = ",".join(str(int(s[i] > tau)) for tau in THRESHOLDS)
        lines.append(f"{float(p[i])!r},{float(s[i])!r},{int(y[i])},{preds}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="recreate the NannyML venv first")
    parser.add_argument("--out", type=Path, default=GOLDEN)
    args = parser.parse_args(argv)
    python = ensure_venv(args.rebuild)
    data = golden_data(**DATA)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        reference, analysis = Path(tmp) / "reference.csv", Path(tmp) / "analysis.csv"
        write_csv(reference, data["reference_p"], data["reference_s"], data["reference_y"])
        write_csv(analysis, data["p"], data["s"], data["y"])
        result = subprocess.run([str(python), "-c", RUNNER, str(reference), str(analysis), json.dumps(THRESHOLDS),
                                 str(CHUNK_SIZE), json.dumps(METRICS)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    found = json.loads(result.stdout)
    golden = {
        "generated_by": "python bench/nannyml_golden.py",
        "nannyml_version": found["nannyml_version"],
        "pandas_version": found["pandas_version"],
        "numpy_version_of_data": np.__version__,
        "parameters": {
            "data": DATA, "thresholds": list(THRESHOLDS), "chunk_size": CHUNK_SIZE, "metrics": list(METRICS),
            "alert": "s > threshold (y_pred column), p = y_pred_proba",
            "estimator": "nannyml.CBPE(problem_type='classification_binary', y_pred_proba='p', "
                         "y_pred='y_pred_<threshold>', y_true='y', metrics=[...], chunk_size=...)",
            "calibration": "none: calibrator=nannyml.calibration.NoopCalibrator() (golden); isotonic: NannyML's "
                           "default, kept for the record",
        },
        "data_sha256": data_sha256(data),
        "runs": found["runs"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, indent=2, sort_keys=False) + "\n")
    print(f"wrote {args.out} (nannyml {found['nannyml_version']})")
    for run in found["runs"]:
        values = " ".join(f"{c['estimated_precision']:.4f}/{c['estimated_recall']:.4f}" for c in run["chunks"])
        print(f"  tau={run['threshold']} calibration={run['calibration']:<8} "
              f"needs_calibration={run['needs_calibration']}  precision/recall per chunk: {values}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
