"""Benchmark: scikit-learn ``score_samples`` vs :meth:`CompiledForest.score` vs native.

Fits ``IsolationForest(n_estimators=100 and 200, max_samples=256,
random_state=0)`` on 20k x 24 random rows, then for batch sizes 1, 10, 100
and 1000 times both scorers on the same rows and prints the median cost per
row, the speed-up and the largest absolute score difference (asserted to be
at most 1e-9).

The same forest is also wrapped in a :class:`~detector.model.KindModel` (the
engine's per-kind scorer: feature rows as Python lists, imputation,
calibration) and timed as the engine calls it, ``KindModel.score(rows)``
then ``.tolist()``, beside the compiled kernel ``detector._native``'s
``ForestScorer`` (``detector.native.score_kernels``) on the same rows; the
kernel's results are asserted to have the same float bits.

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
from types import SimpleNamespace
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector import native  # noqa: E402
from detector.events import EventKind  # noqa: E402
from detector.features import FEATURE_NAMES  # noqa: E402
from detector.forest import CompiledForest, compile_forest  # noqa: E402
from detector.model import CALIBRATION_LEVELS, KindModel  # noqa: E402
from detector.policy import FeatureStats  # noqa: E402

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


def kind_scorers(
    forest: CompiledForest, train: np.ndarray
) -> tuple[Callable[[list[list[float]]], Any], Callable[[list[list[float]]], Any] | None]:
    """Return the engine's Python scorer and the native one for ``forest`` as one event kind.

    The kind uses the first ``n_features`` feature columns, the training
    medians as imputation and the training scores' quantiles as calibration.
    The native scorer is None when ``detector._native`` is not built.
    """
    n = forest.n_features
    feats = FEATURE_NAMES[:n]
    km = KindModel(
        EventKind.AUTH, feats, forest, np.median(train, axis=0),
        np.quantile(forest.score(train), CALIBRATION_LEVELS),
        FeatureStats(feats, (0.0,) * n, (1.0,) * n),
    )

    def python(rows: list[list[float]]) -> tuple[list[float], list[float]]:
        sc, rk = km.score(rows)
        return sc.tolist(), rk.tolist()

    module = native.load()
    if module is None:
        return python, None
    detector = SimpleNamespace(model=SimpleNamespace(kinds={EventKind.AUTH: km}),
                               _scorers={EventKind.AUTH: python})
    kernels = native.score_kernels(module, detector)
    return python, (None if kernels is None else kernels[EventKind.AUTH])


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
    ``rows`` (trees, batch, us/row for both, speed-up, max abs diff; and
    us/row of ``KindModel.score`` and of the native kernel on the same rows as
    35-column Python lists, ``None`` without the module) and the largest
    difference over an extra 5,000-row check per forest. Raises
    ``AssertionError`` if the native kernel's results differ in any bit from
    ``KindModel.score``'s.
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
        python, kernel = kind_scorers(forest, train)
        for batch in batches:
            x = queries[:batch]
            expected = -model.score_samples(x)
            got = forest.score(x)
            diff = float(np.max(np.abs(got - expected)))
            assert diff <= TOL, (n_trees, batch, diff)
            # The engine's rows: all feature columns as Python floats, some NaN.
            full = np.full((batch, len(FEATURE_NAMES)), 0.5)
            full[:, :N_FEATURES] = x
            full[::3, 1] = np.nan
            lists = full.tolist()
            fns: list[Callable[[], object]] = [
                functools.partial(model.score_samples, x), functools.partial(forest.score, x),
                functools.partial(python, lists),
            ]
            if kernel is not None:
                want, have = python(lists), kernel(lists)
                assert np.array_equal(np.array(want).view(np.uint64),
                                      np.array(have).view(np.uint64)), (n_trees, batch)
                fns.append(functools.partial(kernel, lists))
            times = interleaved_seconds_per_call(fns, sample_s, samples)
            t_sk, t_cf, t_km = times[:3]
            t_nat = times[3] if kernel is not None else None
            rows.append({"trees": n_trees, "batch": batch,
                         "sklearn_us_per_row": t_sk / batch * 1e6,
                         "compiled_us_per_row": t_cf / batch * 1e6,
                         "speedup": t_sk / t_cf, "max_abs_diff": diff,
                         "kindmodel_us_per_row": t_km / batch * 1e6,
                         "native_us_per_row": None if t_nat is None else t_nat / batch * 1e6})
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
        f"{'speed-up':>9} {'max abs diff':>13} {'KindModel us/row':>17} {'native us/row':>14} "
        f"{'native vs KindModel':>20}"
    )
    print(f"numpy {np.__version__}, {N_ROWS} x {N_FEATURES} training rows, max_samples=256")
    print(header)
    print("-" * len(header))
    for r in res["rows"]:
        print(
            f"{r['trees']:>5} {r['batch']:>6} {r['sklearn_us_per_row']:>15.2f} "
            f"{r['compiled_us_per_row']:>16.2f} {r['speedup']:>8.1f}x {r['max_abs_diff']:>13.1e} "
            f"{r['kindmodel_us_per_row']:>17.2f} " + (
                f"{r['native_us_per_row']:>14.3f} "
                f"{r['kindmodel_us_per_row'] / r['native_us_per_row']:>19.1f}x"
                if r["native_us_per_row"] is not None else f"{'(not built)':>14}"
            )
        )
    print(f"all scores equal to -score_samples within {TOL:g}; native == KindModel.score, "
          f"bit for bit ({native.status()})")


if __name__ == "__main__":
    main()
