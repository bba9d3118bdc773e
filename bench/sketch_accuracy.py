"""Tail rank error of REQ (high-rank-accuracy) vs KLL vs exact numpy, on fraud-like scores.

Run: ``python bench/sketch_accuracy.py``. For each sketch and stream size it feeds batches of 500
beta(0.6, 12) scores, asks for the quantile at q, and reports the true rank error of that value
(|exact_rank - q|) and the error relative to the tail mass 1-q, max over trials; plus the
serialized size and the update cost per batch. Exact numpy is the reference (error 0 by definition).
"""

from __future__ import annotations

import time

import datasketches as ds
import numpy as np

from museflow.transform.sketch import WindowedSketch

QS = (0.95, 0.99, 0.995, 0.999)
SIZES = (100_000, 1_000_000)
BATCH = 500
TRIALS = 5


def _make(kind: str) -> object:
    if kind == "REQ k=12 hra":
        return ds.req_floats_sketch(12, True)
    if kind == "REQ k=24 hra":
        return ds.req_floats_sketch(24, True)
    if kind.startswith("Window"):
        k = int(kind.split("k=")[1].split()[0])
        return WindowedSketch(k=k, window_seconds=1200.0, buckets=12)
    if kind == "KLL k=200":
        return ds.kll_floats_sketch(200)
    if kind == "KLL k=800":
        return ds.kll_floats_sketch(800)
    raise ValueError(kind)


def _run(kind: str, n: int, seed: int) -> tuple[list[float], int, float]:
    rng = np.random.default_rng(seed)
    data = rng.beta(0.6, 12.0, size=n).astype(np.float32)
    sketch = _make(kind)
    windowed = isinstance(sketch, WindowedSketch)
    batches = n // BATCH
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, n, BATCH)):
        if isinstance(sketch, WindowedSketch):
            sketch.update(data[start : start + BATCH], now=1200.0 * i / batches)
        else:
            sketch.update(data[start : start + BATCH])  # type: ignore[attr-defined]
    per_batch = (time.perf_counter() - t0) / batches
    ordered = np.sort(data)
    errors = []
    for q in QS:
        value = (float(sketch.quantile(q)) if isinstance(sketch, WindowedSketch)
                 else sketch.get_quantile(q, True))  # type: ignore[attr-defined]
        exact_rank = np.searchsorted(ordered, value, side="right") / n
        errors.append(abs(exact_rank - q))
    size = len(sketch.to_bytes() if windowed else sketch.serialize())  # type: ignore[attr-defined]
    return errors, size, per_batch


def main() -> None:
    kinds = ("REQ k=12 hra", "REQ k=24 hra", "KLL k=200", "KLL k=800", "Window k=12 x12", "Window k=24 x12")
    header = "sketch".ljust(16) + "n".rjust(9)
    for q in QS:
        header += f"  |err| q={q}".rjust(17) + "  rel".rjust(7)
    header += "   bytes".rjust(9) + "  us/batch".rjust(10)
    print(header)
    print("-" * len(header))
    for n in SIZES:
        print("exact numpy".ljust(16) + f"{n:>9}" + "".join(f"{0.0:>17.2e}{0.0:>7.1%}" for _ in QS)
              + f"{4 * n:>9}" + f"{'-':>10}")
        for kind in kinds:
            worst = np.zeros(len(QS))
            sizes, costs = [], []
            for trial in range(TRIALS):
                errors, size, cost = _run(kind, n, seed=1000 * trial + n % 997)
                worst = np.maximum(worst, errors)
                sizes.append(size)
                costs.append(cost)
            row = kind.ljust(16) + f"{n:>9}"
            for q, err in zip(QS, worst, strict=True):
                row += f"{err:>17.2e}{err / (1 - q):>7.1%}"
            row += f"{int(np.mean(sizes)):>9}{1e6 * float(np.mean(costs)):>10.1f}"
            print(row)
    print(f"\nworst over {TRIALS} trials; rel = |rank error| / (1 - q), the error as a share of the alert rate")
    print("Window k=K x12 = museflow WindowedSketch: 12 time buckets of REQ(k=K, hra) merged on query")


if __name__ == "__main__":
    main()
