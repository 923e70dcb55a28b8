"""The forest scorer's two layouts: the implicit complete trees and the node table, bit for bit.

``ForestScorer`` walks a forest of ``max_depth <= 10`` with at most 256
columns in the complete layout (level-major splits, early leaves padded by
always-left splits down to ``max_depth``), else in the node table; its
``layout`` constructor argument forces either one (a test hook). Both must
give exactly ``KindModel.score`` (scores and risks, float bits), through the
batch ``__call__`` and through ``score_row`` (the compiled engine's one-row
path, hook ``_score_row``): on the shipped model, and on generated forests
with early leaves at every depth, on 0..12 levels, block boundaries of the
walk (63..65, 128..129 trees), rows on the thresholds, +/-inf, NaN (imputed),
-0.0 and float32 overflow.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector import native
from detector.engine import Detector, EngineState
from detector.events import EventKind, parse_event
from detector.features import FEATURE_NAMES
from detector.forest import CompiledForest, _round_down_float32
from detector.model import CALIBRATION_LEVELS, KindModel, load_model
from detector.policy import FeatureStats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from common import generated_lines  # noqa: E402

_native = native.load()
pytestmark = pytest.mark.skipif(_native is None, reason="detector._native is not built")
MODEL = load_model(Path(__file__).resolve().parent.parent / "models" / "default")
N_COLS = len(FEATURE_NAMES)
F32_MAX = float(np.finfo(np.float32).max)
SPECIAL = [
    float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e300, -1e300, F32_MAX, -F32_MAX,
    float(np.nextafter(F32_MAX, np.inf)), 3.5e38, -3.5e38, 5e-324, -5e-324, 1e-45, 1.0, -1.0,
]


def _bits(values: Sequence[float]) -> list[bytes]:
    assert all(type(v) is float for v in values)
    return [struct.pack("<d", v) for v in values]


def _scorer(km: KindModel, layout: str | None = None) -> Any:
    """A ForestScorer for ``km`` built as ``native.score_kernels`` builds it, with ``layout``."""
    assert _native is not None and km.forest is not None
    f = km.forest
    kwargs = {} if layout is None else {"layout": layout}
    return _native.ForestScorer(
        km.columns.tolist(), km.impute.tolist(), f.feature.tolist(),
        _round_down_float32(f.threshold).tolist(), f.left.tolist(), f.right.tolist(),
        f.value.tolist(), f.roots.tolist(), f.max_depth, f._plan.denominator,
        km.calib_scores.tolist(), CALIBRATION_LEVELS.tolist(), km.score, **kwargs,
    )


def _assert_layouts_agree(km: KindModel, scorers: Sequence[Any], rows: list[list[float]],
                          one_by_one: int | None = None) -> None:
    """Every scorer's batch and one-row results have exactly KindModel.score's bits."""
    with np.errstate(over="ignore"):  # float32 overflow of huge values warns in numpy
        sc, rk = km.score(rows)
    want_sc, want_rk = _bits(sc.tolist()), _bits(rk.tolist())
    for scorer in scorers:
        got_sc, got_rk = scorer(rows)
        assert _bits(got_sc) == want_sc, scorer.layout
        assert _bits(got_rk) == want_rk, scorer.layout
        for i, row in enumerate(rows[:one_by_one]):
            got = scorer._score_row(row)
            assert type(got) is tuple
            assert _bits(got) == [want_sc[i], want_rk[i]], (scorer.layout, i)
            one_sc, one_rk = scorer([row])
            assert _bits(one_sc + one_rk) == [want_sc[i], want_rk[i]], (scorer.layout, i)


# --------------------------------------------------------------------------- shipped model


def test_shipped_model_uses_complete_layout() -> None:
    assert _native is not None
    kernels = native.score_kernels(_native, Detector(MODEL, native=False))
    assert kernels is not None
    for kind, km in MODEL.kinds.items():
        assert km.forest is not None and km.forest.max_depth <= 10
        assert kernels[kind].layout == "complete"
        assert kernels[kind]._leaf_table == _leaf_table(km.forest)  # the one-byte table
        assert _scorer(km).layout == "complete"
        assert _scorer(km, "nodes").layout == "nodes"
    det = Detector(MODEL, native=True)
    assert all(getattr(det._scorers[k], "layout", None) == "complete" for k in MODEL.kinds)


def _threshold_rows(km: KindModel, rng: np.random.Generator, n: int) -> list[list[float]]:
    """Rows whose forest columns sit on thresholds (float64, float32, neighbours) or specials."""
    f = km.forest
    assert f is not None
    inner = f.left != np.arange(f.n_nodes)
    rows = rng.normal(size=(n, N_COLS))
    for j, col in enumerate(km.columns):
        t = f.threshold[inner & (f.feature == j)]
        t32 = t.astype(np.float32)
        cands = np.concatenate([
            t, t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf)),
            SPECIAL,
        ]).astype(np.float64)
        rows[:, col] = rng.choice(cands, size=n)
    rows[rng.random(rows.shape) < 0.05] = np.nan
    out: list[list[float]] = rows.tolist()
    return out


@pytest.fixture(scope="module")
def replay() -> dict[EventKind, list[list[float]]]:
    """Feature rows of a generated dataset with attacks, from the pure-Python detector."""
    lines = generated_lines(users=10, days=2, seed=3, attacks=True)
    det = Detector(MODEL, native=False)
    state = EngineState()
    rows: dict[EventKind, list[list[float]]] = {k: [] for k in MODEL.kinds}
    for d in det.process([parse_event(line) for line in lines], state, keep_features=True):
        assert d.features is not None
        rows[d.event.kind].append(d.features)
    assert all(len(r) > 200 for r in rows.values())
    return rows


def test_shipped_model_layouts_bit_identical(replay: dict[EventKind, list[list[float]]]) -> None:
    rng = np.random.default_rng(7)
    for kind, km in MODEL.kinds.items():
        scorers = [_scorer(km, "complete"), _scorer(km, "nodes"), _scorer(km)]
        _assert_layouts_agree(km, scorers, replay[kind], one_by_one=400)
        _assert_layouts_agree(km, scorers, _threshold_rows(km, rng, 2000), one_by_one=500)
# --------------------------------------------------------------------------- generated forests


THRESHOLDS = [0.0, -0.0, 0.1, -0.1, 1.0, 2.5, -3.0, 1e30, -1e30, 3.4e38, -3.4e38, 1e-40]


def _random_forest(rng: np.random.Generator, n_trees: int, depth: int, n_feat: int,
                   p_leaf: float = 0.3, root_feature: int | None = None,
                   leaf_values: Sequence[float] | None = None) -> CompiledForest:
    """A valid forest of ``n_trees`` trees, deepest leaf at ``depth``, early leaves at random.

    Internal nodes split on random columns at thresholds from ``THRESHOLDS`` or
    random normals; leaf values are random path lengths (not round, so the sum
    order shows in the bits). Tree 0's leftmost path reaches ``depth``; with
    ``root_feature`` every root (of depth >= 1) splits on that column; with
    ``leaf_values`` the leaves take these values in turn.
    """
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    n_leaves = [0]

    def grow(d: int, force: bool) -> int:
        i = len(feature)
        feature.append(0)
        threshold.append(-2.0)
        left.append(i)
        right.append(i)
        value.append(0.0)
        leaf = d == depth or (not force and d >= 1 and rng.random() < p_leaf)
        if leaf:
            if leaf_values is None:
                value[i] = d + float(rng.uniform(0.0, 6.0))
            else:
                value[i] = float(leaf_values[n_leaves[0] % len(leaf_values)])
                n_leaves[0] += 1
            return i
        feature[i] = (int(rng.integers(0, n_feat)) if d or root_feature is None
                      else root_feature)
        threshold[i] = (float(rng.choice(THRESHOLDS)) if rng.random() < 0.5
                        else float(rng.normal()) * 2.0)
        left[i] = grow(d + 1, force)
        right[i] = grow(d + 1, False)
        return i

    roots = [grow(0, t == 0) for t in range(n_trees)]
    return CompiledForest(
        np.array(feature, dtype=np.int32), np.array(threshold), np.array(left, dtype=np.int32),
        np.array(right, dtype=np.int32), np.array(value), np.array(roots, dtype=np.int32),
        depth, n_feat, float(rng.uniform(1.0, 12.0)), -0.5,
    )


def _leaf_depths(forest: CompiledForest) -> set[int]:
    depths = set()
    stack = [(int(r), 0) for r in forest.roots]
    while stack:
        i, d = stack.pop()
        if forest.left[i] == i:
            depths.add(d)
        else:
            stack += [(int(forest.left[i]), d + 1), (int(forest.right[i]), d + 1)]
    return depths


def _leaf_table(forest: CompiledForest) -> int | None:
    """The size of the scorer's leaf table: distinct leaf value bits, None above 256."""
    leaf = forest.left == np.arange(forest.n_nodes)
    n = len(set(forest.value[leaf].view(np.uint64).tolist()))
    return n if n <= 256 else None


def _kind_model(forest: CompiledForest, rng: np.random.Generator) -> KindModel:
    n = forest.n_features
    feats = FEATURE_NAMES[:n]
    train = rng.normal(size=(500, n)) * 2.0
    calib = np.quantile(forest.score(train), CALIBRATION_LEVELS)
    stats = FeatureStats(feats, (0.0,) * n, (1.0,) * n)
    return KindModel(EventKind.AUTH, feats, forest, np.median(train, axis=0), calib, stats)


def _rows(forest: CompiledForest, rng: np.random.Generator, n: int) -> list[list[float]]:
    """Full rows, most values on the forest's thresholds or THRESHOLDS, their float32
    neighbours or SPECIAL (NaN included, imputed), the others normals."""
    t = np.array(THRESHOLDS + forest.threshold.tolist())
    t32 = t.astype(np.float32)
    cands = np.concatenate([t, t32, np.nextafter(t32, np.float32(np.inf)),
                            np.nextafter(t32, np.float32(-np.inf)), SPECIAL])
    rows = rng.normal(size=(n, N_COLS)) * 2.0
    on = rng.random(rows.shape) < 0.6
    rows[on] = rng.choice(cands.astype(np.float64), size=int(on.sum()))
    out: list[list[float]] = rows.tolist()
    return out


@pytest.mark.parametrize("depth", range(0, 11))
def test_generated_forests_every_depth(depth: int) -> None:
    """max_depth 0..10: complete (auto and forced) == nodes == KindModel.score, early leaves
    at every depth 1..max_depth."""
    rng = np.random.default_rng(100 + depth)
    for n_trees in (1, 5, 64, 65, 100):
        forest = _random_forest(rng, n_trees, depth, n_feat=6)
        if depth >= 2 and n_trees >= 64:
            assert _leaf_depths(forest) == set(range(1, depth + 1))
        km = _kind_model(forest, rng)
        scorers = [_scorer(km), _scorer(km, "complete"), _scorer(km, "nodes")]
        assert [s.layout for s in scorers] == ["complete", "complete", "nodes"]
        assert scorers[0]._leaf_table == _leaf_table(forest)
        assert scorers[2]._leaf_table is None
        _assert_layouts_agree(km, scorers, _rows(forest, rng, 300), one_by_one=60)


@pytest.mark.parametrize("n_trees", [63, 64, 65, 127, 128, 129, 200])
def test_generated_forests_block_boundaries(n_trees: int) -> None:
    """The complete walk takes trees in blocks of 64: every tree count around a block edge."""
    rng = np.random.default_rng(n_trees)
    forest = _random_forest(rng, n_trees, 8, n_feat=N_COLS, p_leaf=0.2)
    km = _kind_model(forest, rng)
    scorers = [_scorer(km), _scorer(km, "nodes")]
    assert scorers[0].layout == "complete"
    _assert_layouts_agree(km, scorers, _rows(forest, rng, 200), one_by_one=40)


@pytest.mark.parametrize("n_values", [1, 2, 255, 256, 257, 400])
def test_leaf_table_sizes(n_values: int) -> None:
    """Up to 256 distinct leaf values (by bits: 0.0 and -0.0 differ) take the one-byte
    table, more the direct values; early leaves copied down, all bits kept."""
    rng = np.random.default_rng(n_values)
    values = [0.0, -0.0, 5e-324, 1.5, 1.5 + 2.0**-52][:n_values]
    values += (8.0 + rng.random(n_values - len(values)) * 3.0).tolist()
    for p_leaf in (0.0, 0.2):
        forest = _random_forest(rng, 12, 6, n_feat=5, p_leaf=p_leaf, leaf_values=values)
        km = _kind_model(forest, rng)
        expect = n_values if n_values <= 256 else None
        if p_leaf == 0.0:  # 768 leaves take the values in turn: all of them
            assert _leaf_table(forest) == expect
        scorers = [_scorer(km), _scorer(km, "nodes")]
        assert scorers[0].layout == "complete"
        assert scorers[0]._leaf_table == _leaf_table(forest)
        _assert_layouts_agree(km, scorers, _rows(forest, rng, 300), one_by_one=60)


@pytest.mark.parametrize("depth", [11, 12])
def test_deep_forests_fall_back_to_nodes(depth: int) -> None:
    rng = np.random.default_rng(depth)
    forest = _random_forest(rng, 20, depth, n_feat=5, p_leaf=0.15)
    km = _kind_model(forest, rng)
    scorer = _scorer(km)
    assert scorer.layout == "nodes"
    with pytest.raises(ValueError, match="complete layout"):
        _scorer(km, "complete")
    _assert_layouts_agree(km, [scorer], _rows(forest, rng, 200), one_by_one=40)


def test_inflated_max_depth() -> None:
    """The scorer accepts max_depth above the deepest leaf: both layouts walk to the same leaf."""
    assert _native is not None
    rng = np.random.default_rng(3)
    forest = _random_forest(rng, 30, 4, n_feat=4)
    km = _kind_model(forest, rng)
    f = forest
    args = [km.columns.tolist(), km.impute.tolist(), f.feature.tolist(),
            _round_down_float32(f.threshold).tolist(), f.left.tolist(), f.right.tolist(),
            f.value.tolist(), f.roots.tolist()]
    tail = [f._plan.denominator, km.calib_scores.tolist(), CALIBRATION_LEVELS.tolist(), km.score]
    rows = _rows(forest, rng, 300)
    want = _scorer(km, "nodes")(rows)
    for max_depth in (5, 10):
        for layout in ("complete", "nodes"):
            s = _native.ForestScorer(*args, max_depth, *tail, layout=layout)
            assert s.layout == layout
            got = s(rows)
            assert _bits(got[0] + got[1]) == _bits(want[0] + want[1])
            one = [s._score_row(r) for r in rows[:30]]
            assert [_bits(v) for v in one] == [_bits(v) for v in zip(*want, strict=True)][:30]


@pytest.mark.parametrize("n_feat", [255, 256, 257, 300])
def test_many_columns(n_feat: int) -> None:
    """Up to 256 forest columns take the complete layout; more keep the node table.
    (Columns repeat row positions: the reference is CompiledForest.score on the imputed matrix.)"""
    assert _native is not None
    rng = np.random.default_rng(n_feat)
    # Every root splits on the last column, so a wrong bound on the feature index would show.
    forest = _random_forest(rng, 40, 6, n_feat=n_feat, p_leaf=0.1, root_feature=n_feat - 1)
    columns = [int(c) for c in rng.integers(0, N_COLS, size=n_feat)]
    impute = rng.normal(size=n_feat)
    calib = np.sort(rng.uniform(0.3, 0.8, size=len(CALIBRATION_LEVELS)))
    f = forest
    args = [columns, impute.tolist(), f.feature.tolist(), _round_down_float32(f.threshold).tolist(),
            f.left.tolist(), f.right.tolist(), f.value.tolist(), f.roots.tolist(), f.max_depth,
            f._plan.denominator, calib.tolist(), CALIBRATION_LEVELS.tolist(), None]
    rows = np.array(_rows(forest, rng, 300))
    x = rows[:, columns]
    x = np.where(np.isnan(x), impute, x)
    with np.errstate(over="ignore"):
        want_sc = forest.score(x)
    want = _bits(want_sc.tolist() + np.interp(want_sc, calib, CALIBRATION_LEVELS).tolist())
    auto = _native.ForestScorer(*args)
    assert auto.layout == ("complete" if n_feat <= 256 else "nodes")
    nodes = _native.ForestScorer(*args, layout="nodes")
    for s in (auto, nodes):
        sc, rk = s(rows.tolist())
        assert _bits(sc + rk) == want
        one = [s._score_row(r) for r in rows.tolist()]
        assert _bits([v[0] for v in one] + [v[1] for v in one]) == want
    if n_feat > 256:
        with pytest.raises(ValueError, match="complete layout"):
            _native.ForestScorer(*args, layout="complete")


def test_bad_layout_and_hooks() -> None:
    km = MODEL.kinds[EventKind.AUTH]
    with pytest.raises(ValueError, match="not auto, nodes or complete"):
        _scorer(km, "fast")
    scorer = _scorer(km)
    assert scorer._score_row([0.5] * 3) is None  # too short for the columns: None, as score_row
    assert _native is not None
    secs = _native.ForestScorer._bench_score_row([scorer], [[[0.5] * N_COLS] * 3], 2)
    assert type(secs) is float and secs >= 0.0
    with pytest.raises(ValueError):
        _native.ForestScorer._bench_score_row([scorer], [[[0.5] * 3]], 1)
    with pytest.raises(ValueError):
        _native.ForestScorer._bench_score_row([scorer, scorer], [[[0.5] * N_COLS]], 1)
