"""Benchmark: the compiled forest scorer's complete layout vs its node table, side by side.

``_native.ForestScorer`` walks shallow forests (``max_depth <= 10``) in an
implicit complete-tree layout and deeper ones in the node table; the
constructor's ``layout`` hook forces either. For the shipped model
(``models/default``: two event kinds, 100 trees each, depth 8) on replayed
feature rows, and for freshly fitted 100- and 200-tree forests (max_samples
256, and 512/1024 for depths 9 and 10) on random rows, this prints per row:

* ``score_row`` (the compiled engine's one-event path), timed inside Rust by
  the ``_bench_score_row`` hook; for the shipped model with the two kinds
  interleaved row by row, as the engine meets them;
  (median and minimum of the samples);
* ``__call__`` on one-row batches and on 1,000-row batches (Python lists in,
  lists out), as ``native.score_kernels``' scorers are called.

Each pair is timed in alternation (ABAB...), medians of the samples; the
results of both layouts are asserted to have the same float bits first.
Figures are printed, never asserted. Run with
``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_forest_layout.py``
(``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_forest import interleaved_seconds_per_call  # noqa: E402
from common import generated_lines  # noqa: E402

from detector import native  # noqa: E402
from detector.engine import Detector, EngineState  # noqa: E402
from detector.events import EventKind, parse_event  # noqa: E402
from detector.features import FEATURE_NAMES  # noqa: E402
from detector.forest import _round_down_float32, compile_forest  # noqa: E402
from detector.model import CALIBRATION_LEVELS, KindModel, load_model  # noqa: E402
from detector.policy import FeatureStats  # noqa: E402

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
LAYOUTS = ("nodes", "complete")


def layout_scorer(module: Any, km: KindModel, layout: str) -> Any:
    """Return ``km``'s ForestScorer built as ``native.score_kernels`` builds it, in ``layout``."""
    f = km.forest
    assert f is not None
    return module.ForestScorer(
        km.columns.tolist(), km.impute.tolist(), f.feature.tolist(),
        _round_down_float32(f.threshold).tolist(), f.left.tolist(), f.right.tolist(),
        f.value.tolist(), f.roots.tolist(), f.max_depth, f._plan.denominator,
        km.calib_scores.tolist(), CALIBRATION_LEVELS.tolist(), km.score, layout=layout,
    )


def _bits(values: Sequence[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def score_row_seconds(
    module: Any, pairs: Sequence[Sequence[Any]], rows: Sequence[list[list[float]]],
    samples: int, reps: int,
) -> list[tuple[float, float]]:
    """Median and minimum seconds per row of ``score_row`` for each scorer list in ``pairs``.

    ``pairs[i]`` holds one scorer per row list of ``rows`` (kinds interleaved
    row by row); the lists take turns sample by sample. (The minimum is the
    figure least disturbed by other processes on a shared machine.)
    """
    results: list[list[float]] = [[] for _ in pairs]
    for scorers in pairs:  # warm up
        module.ForestScorer._bench_score_row(list(scorers), list(rows), 1)
    for _ in range(samples):
        for i, scorers in enumerate(pairs):
            results[i].append(module.ForestScorer._bench_score_row(list(scorers), list(rows), reps))
    return [(statistics.median(r), min(r)) for r in results]


def replayed_rows() -> dict[EventKind, list[list[float]]]:
    """Feature rows of a generated dataset with attacks, from the pure-Python detector."""
    model = load_model(MODEL_DIR)
    lines = generated_lines(users=25, days=3, seed=11, attacks=True)
    det = Detector(model, native=False)
    state = EngineState()
    rows: dict[EventKind, list[list[float]]] = {k: [] for k in model.kinds}
    events = [parse_event(line) for line in lines]
    for i in range(0, len(events), 500):
        for d in det.process(events[i : i + 500], state, keep_features=True):
            assert d.features is not None
            rows[d.event.kind].append(d.features)
    return rows


def fitted_kind_model(n_trees: int, max_samples: int, rng: np.random.Generator) -> KindModel:
    """A KindModel around ``IsolationForest(n_trees, max_samples)`` fitted on 20k x 24 normals."""
    n_feat = 24
    train = rng.normal(size=(20_000, n_feat))
    model = IsolationForest(n_estimators=n_trees, max_samples=max_samples, random_state=0)
    forest = compile_forest(model.fit(train))
    feats = FEATURE_NAMES[:n_feat]
    return KindModel(EventKind.AUTH, feats, forest, np.median(train, axis=0),
                     np.quantile(forest.score(train), CALIBRATION_LEVELS),
                     FeatureStats(feats, (0.0,) * n_feat, (1.0,) * n_feat))


def random_rows(rng: np.random.Generator, n: int) -> list[list[float]]:
    """Full feature rows: normals, every tenth row an outlier, some NaN (imputed)."""
    full = rng.normal(size=(n, len(FEATURE_NAMES)))
    full[::10] *= 4.0
    full[::3, 1] = np.nan
    out: list[list[float]] = full.tolist()
    return out


def measure_case(
    module: Any, name: str, kms: Sequence[KindModel], rows: Sequence[list[list[float]]],
    quick: bool,
) -> dict[str, Any]:
    """Time both layouts of the scorers of ``kms`` on ``rows`` (one list per kind).

    Asserts that both layouts give the same bits. Returns the case's name,
    depth and tree count and seconds per row of ``score_row``, ``__call__``
    batch 1 and batch 1000 per layout (the last two for the first kind).
    """
    scorers = {lay: [layout_scorer(module, km, lay) for km in kms] for lay in LAYOUTS}
    for j, r in enumerate(rows):
        a, b = (scorers[lay][j](r[:1000]) for lay in LAYOUTS)
        assert _bits(a[0] + a[1]) == _bits(b[0] + b[1]), name
        assert [scorers["nodes"][j]._score_row(x) for x in r[:300]] == [
            scorers["complete"][j]._score_row(x) for x in r[:300]
        ], name
    samples = 5 if quick else 31
    row_s = score_row_seconds(module, [scorers[lay] for lay in LAYOUTS],
                              [r[:1000] for r in rows], samples, 1 if quick else 3)
    forest = kms[0].forest
    assert forest is not None
    out: dict[str, Any] = {"case": name, "trees": forest.n_trees, "depth": forest.max_depth}
    out["score_row"] = {lay: s[0] for lay, s in zip(LAYOUTS, row_s, strict=True)}
    out["score_row_min"] = {lay: s[1] for lay, s in zip(LAYOUTS, row_s, strict=True)}
    sample_s = 0.02 if quick else 0.1
    for batch in (1, 1000):
        one = rows[0][:batch]
        fns: list[Callable[[], object]] = [functools.partial(scorers[lay][0], one)
                                           for lay in LAYOUTS]
        secs = interleaved_seconds_per_call(fns, sample_s, samples)
        out[f"call_{batch}"] = {lay: s / batch for lay, s in zip(LAYOUTS, secs, strict=True)}
    return out


def measure_layouts(quick: bool = False) -> list[dict[str, Any]]:
    """Run every case (shipped model, fitted 100/200-tree forests, depths 9 and 10)."""
    module = native.load()
    if module is None:
        raise SystemExit("detector._native is not built")
    model = load_model(MODEL_DIR)
    replay = replayed_rows()
    kinds = list(model.kinds)
    cases = [measure_case(module, "default, kinds interleaved",
                          [model.kinds[k] for k in kinds], [replay[k] for k in kinds], quick)]
    for k in kinds:
        cases.append(measure_case(module, f"default, {k.value} only", [model.kinds[k]],
                                  [replay[k]], quick))
    rng = np.random.default_rng(0)
    fitted = [(100, 256), (200, 256)] + ([] if quick else [(100, 512), (100, 1024)])
    for n_trees, max_samples in fitted:
        km = fitted_kind_model(n_trees, max_samples, rng)
        cases.append(measure_case(module, f"fitted, max_samples {max_samples}", [km],
                                  [random_rows(rng, 1000)], quick))
    return cases


def main() -> None:
    """Run the layout benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short timing samples")
    args = parser.parse_args()
    cases = measure_layouts(args.quick)
    cols = ("score_row", "score_row_min", "call_1", "call_1000")
    head = f"{'case':<33} {'trees':>5} {'depth':>5} " + " ".join(
        f"{c + ' old/new us':>25}" for c in cols
    )
    print(head)
    print("-" * len(head))
    for c in cases:
        cells = []
        for col in cols:
            old, new = c[col]["nodes"] * 1e6, c[col]["complete"] * 1e6
            cells.append(f"{old:>8.3f} {new:>7.3f} ({new / old - 1:+4.0%})")
        print(f"{c['case']:<33} {c['trees']:>5} {c['depth']:>5} " + " ".join(
            f"{s:>25}" for s in cells))
    print("us per row (medians, score_row_min: minimum); old = node table "
          "(layout='nodes'), new = complete layout; score_row timed in Rust "
          "(_bench_score_row), __call__ from Python; both layouts' results equal, bit for bit")


if __name__ == "__main__":
    main()
