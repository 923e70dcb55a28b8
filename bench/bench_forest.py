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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.forest import compile_forest  # noqa: E402

N_ROWS = 20_000
N_FEATURES = 24
BATCHES = (1, 10, 100, 1000)
TREES = (100, 200)
TOL = 1e-9


def interleaved_seconds_per_call(
    fns: Sequence[Callable[[], object]], sample_s: float, samples: int
) -> list[float]:
    """Median seconds per call of each of ``fns``, timed in alternation (ABAB...).

    Each timing sample repeats a function for about ``sample_s`` seconds;
    the functions take turns sample by sample, so machine noise hits them alike.
    """
    calls = []
    for fn in fns:
        fn()  # warm up
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        calls.append(max(1, int(sample_s / once)))
    results: list[list[float]] = [[] for _ in fns]
    for _ in range(samples):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(calls[i]):
                fn()
            results[i].append((time.perf_counter() - t0) / calls[i])
    return [statistics.median(r) for r in results]


def measure_forest(
    quick: bool = False,
    samples: int = 9,
    trees: Sequence[int] = TREES,
    batches: Sequence[int] = BATCHES,
    n_rows: int = N_ROWS,
) -> dict[str, Any]:
    """Time scikit-learn ``score_samples`` and the compiled forest on the same rows.

    For each tree count and batch size, sklearn and the compiled forest are
    timed alternately on the same rows. Raises ``AssertionError`` if any score
    differs from ``-score_samples`` by more than ``TOL``. Returns a dict with
    ``rows`` (trees, batch, us/row for both, speed-up, max abs diff) and the
    largest difference over an extra 5,000-row check per forest.
    """
    sample_s = 0.02 if quick else 0.15
    samples = 3 if quick else samples
    rng = np.random.default_rng(0)
    train = rng.normal(size=(n_rows, N_FEATURES))
    # Queries: fresh float64 rows (mostly not float32-representable), some outliers.
    queries = rng.normal(size=(max(batches), N_FEATURES))
    queries[::10] *= 4.0
    rows: list[dict[str, Any]] = []
    check_diff = 0.0
    for n_trees in trees:
        model = IsolationForest(n_estimators=n_trees, max_samples=256, random_state=0)
        model.fit(train)
        forest = compile_forest(model)
        # Exactness on many rows, not only on the timed batches.
        check = rng.normal(size=(5000, N_FEATURES)) * 2.0
        full_diff = float(np.max(np.abs(forest.score(check) + model.score_samples(check))))
        assert full_diff <= TOL, full_diff
        check_diff = max(check_diff, full_diff)
        for batch in batches:
            x = queries[:batch]
            expected = -model.score_samples(x)
            got = forest.score(x)
            diff = float(np.max(np.abs(got - expected)))
            assert diff <= TOL, (n_trees, batch, diff)
            t_sk, t_cf = interleaved_seconds_per_call(
                [functools.partial(model.score_samples, x), functools.partial(forest.score, x)],
                sample_s, samples,
            )
            rows.append({"trees": n_trees, "batch": batch,
                         "sklearn_us_per_row": t_sk / batch * 1e6,
                         "compiled_us_per_row": t_cf / batch * 1e6,
                         "speedup": t_sk / t_cf, "max_abs_diff": diff})
    return {"rows": rows, "check_max_abs_diff": check_diff, "tolerance": TOL,
            "training_rows": n_rows, "features": N_FEATURES, "samples": samples}


def main() -> None:
    """Run the scoring-kernel benchmark alone and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short timing samples")
    parser.add_argument("--samples", type=int, default=9, help="timing samples per cell")
    args = parser.parse_args()
    res = measure_forest(args.quick, args.samples)
    header = (
        f"{'trees':>5} {'batch':>6} {'sklearn us/row':>15} {'compiled us/row':>16} "
        f"{'speed-up':>9} {'max abs diff':>13}"
    )
    print(f"numpy {np.__version__}, {N_ROWS} x {N_FEATURES} training rows, max_samples=256")
    print(header)
    print("-" * len(header))
    for r in res["rows"]:
        print(
            f"{r['trees']:>5} {r['batch']:>6} {r['sklearn_us_per_row']:>15.2f} "
            f"{r['compiled_us_per_row']:>16.2f} {r['speedup']:>8.1f}x {r['max_abs_diff']:>13.1e}"
        )
    print(f"all scores equal to -score_samples within {TOL:g}")


if __name__ == "__main__":
    main()
