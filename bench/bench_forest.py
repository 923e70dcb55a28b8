"""Benchmark: scikit-learn ``score_samples`` vs :meth:`CompiledForest.score`.

Fits ``IsolationForest(n_estimators=100 and 200, max_samples=256,
random_state=0)`` on 20k x 24 random rows, then for batch sizes 1, 10, 100
and 1000 times both scorers on the same rows and prints the median cost per
row, the speed-up and the largest absolute score difference (asserted to be
at most 1e-9).

Run with ``.venv/bin/python bench/bench_forest.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.forest import compile_forest  # noqa: E402

N_ROWS = 20_000
N_FEATURES = 24
BATCHES = (1, 10, 100, 1000)
TREES = (100, 200)
TOL = 1e-9


def median_seconds_per_call(fn: Callable[[], object], sample_s: float, samples: int) -> float:
    """Median over ``samples`` timing samples, each ~``sample_s`` seconds of calls."""
    fn()  # warm up
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(sample_s / once))
    results = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        results.append((time.perf_counter() - t0) / calls)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short timing samples")
    parser.add_argument("--samples", type=int, default=9, help="timing samples per cell")
    args = parser.parse_args()
    sample_s = 0.02 if args.quick else 0.15
    samples = 3 if args.quick else args.samples

    rng = np.random.default_rng(0)
    train = rng.normal(size=(N_ROWS, N_FEATURES))
    # Queries: fresh float64 rows (mostly not float32-representable), some outliers.
    queries = rng.normal(size=(max(BATCHES), N_FEATURES))
    queries[::10] *= 4.0

    header = (
        f"{'trees':>5} {'batch':>6} {'sklearn us/row':>15} {'compiled us/row':>16} "
        f"{'speed-up':>9} {'max abs diff':>13}"
    )
    print(f"numpy {np.__version__}, {N_ROWS} x {N_FEATURES} training rows, max_samples=256")
    print(header)
    print("-" * len(header))
    for n_trees in TREES:
        model = IsolationForest(n_estimators=n_trees, max_samples=256, random_state=0)
        model.fit(train)
        forest = compile_forest(model)
        # Exactness on many rows, not only on the timed batches.
        check = rng.normal(size=(5000, N_FEATURES)) * 2.0
        full_diff = float(np.max(np.abs(forest.score(check) + model.score_samples(check))))
        assert full_diff <= TOL, full_diff
        for batch in BATCHES:
            x = queries[:batch]
            expected = -model.score_samples(x)
            got = forest.score(x)
            diff = float(np.max(np.abs(got - expected)))
            assert diff <= TOL, (n_trees, batch, diff)
            t_sk = median_seconds_per_call(
                functools.partial(model.score_samples, x), sample_s, samples
            )
            t_cf = median_seconds_per_call(functools.partial(forest.score, x), sample_s, samples)
            print(
                f"{n_trees:>5} {batch:>6} {t_sk / batch * 1e6:>15.2f} "
                f"{t_cf / batch * 1e6:>16.2f} {t_sk / t_cf:>8.1f}x {diff:>13.1e}"
            )
    print(f"all scores equal to -score_samples within {TOL:g}")


if __name__ == "__main__":
    main()
