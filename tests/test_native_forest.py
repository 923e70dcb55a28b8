"""The compiled forest scorer (``_native.ForestScorer``) against ``KindModel.score``, bit for bit.

``score_kernels`` gives, per event kind, ``rows -> (scores, risks)``: it must
return exactly ``KindModel.score(rows)`` as lists (same float bits), on real
feature rows from a replayed dataset with attacks, on hostile rows (NaN,
infinities, huge values, values on the thresholds and on their float32
roundings) and for every batch size; and within 1e-9 of scikit-learn's
``score_samples`` for freshly fitted forests.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest

from detector import native
from detector.engine import Detector, EngineState
from detector.events import EventKind, parse_event
from detector.features import FEATURE_NAMES
from detector.forest import compile_forest
from detector.model import CALIBRATION_LEVELS, KindModel, Model, load_model
from detector.policy import FeatureStats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from common import generated_lines  # noqa: E402

_native = native.load()
MODEL = load_model(Path(__file__).resolve().parent.parent / "models" / "default")
N_COLS = len(FEATURE_NAMES)
F32_MAX = float(np.finfo(np.float32).max)

Scorer = Callable[[list[list[float]]], tuple[list[float], list[float]]]


def _bits(values: Sequence[float]) -> list[bytes]:
    assert all(type(v) is float for v in values)
    return [struct.pack("<d", v) for v in values]


def _kernels(model: Model) -> dict[EventKind, Scorer]:
    assert _native is not None
    det = Detector(model, native=False)
    kernels = native.score_kernels(_native, det)
    assert kernels is not None
    return dict(kernels)


KERNELS = _kernels(MODEL)


def _assert_same(km: KindModel, scorer: Scorer, rows: list[list[float]]) -> None:
    """The kernel's (scores, risks) have exactly the bits of KindModel.score's."""
    with np.errstate(over="ignore"):  # float32 overflow of huge values warns in numpy
        sc, rk = km.score(rows)
    got = scorer(rows)
    assert type(got) is tuple and len(got) == 2
    gsc, grk = got
    assert type(gsc) is list and type(grk) is list
    assert _bits(gsc) == _bits(sc.tolist())
    assert _bits(grk) == _bits(rk.tolist())


def test_module_and_kernels() -> None:
    assert _native is not None
    for kind, km in MODEL.kinds.items():
        assert isinstance(KERNELS[kind], _native.ForestScorer)
        assert km.forest is not None and KERNELS[kind].n_trees == km.forest.n_trees
    det = Detector(MODEL, native=True)
    assert all(isinstance(det._scorers[k], _native.ForestScorer) for k in MODEL.kinds)


# --------------------------------------------------------------------------- real rows


@pytest.fixture(scope="module")
def replay() -> tuple[list[bytes], dict[EventKind, list[list[float]]]]:
    """Feature rows of a generated dataset with attacks, from the pure-Python detector."""
    lines = generated_lines(users=25, days=3, seed=11, attacks=True)
    det = Detector(MODEL, native=False)
    state = EngineState()
    rows: dict[EventKind, list[list[float]]] = {k: [] for k in MODEL.kinds}
    events = [parse_event(line) for line in lines]
    for i in range(0, len(events), 500):
        for d in det.process(events[i : i + 500], state, keep_features=True):
            assert d.features is not None
            rows[d.event.kind].append(d.features)
    return lines, rows


def test_replayed_rows_all_batch_sizes(
    replay: tuple[list[bytes], dict[EventKind, list[list[float]]]],
) -> None:
    _, rows = replay
    for kind, km in MODEL.kinds.items():
        kind_rows = rows[kind]
        assert len(kind_rows) > 1000
        assert any(np.isnan(r).any() for r in kind_rows)  # imputation is exercised
        # Real rows are lists of exact floats: the kernel's own path, not its fallback.
        assert all(type(r) is list and all(type(v) is float for v in r) for r in kind_rows)
        scorer = KERNELS[kind]
        for batch in (1, 2, 7, 1000):
            stop = len(kind_rows) if batch > 1 else 300
            for i in range(0, stop, batch):
                _assert_same(km, scorer, kind_rows[i : i + batch])
        _assert_same(km, scorer, kind_rows)  # one call, several numpy chunks


def test_naive_sum_would_differ(
    replay: tuple[list[bytes], dict[EventKind, list[list[float]]]],
) -> None:
    """Summing the trees' path lengths left to right changes some scores' bits."""
    _, rows = replay
    km = MODEL.kinds[EventKind.AUTH]
    assert km.forest is not None
    plan = km.forest._plan
    x = np.asarray(km.matrix(rows[EventKind.AUTH][:2000]), dtype=np.float32)
    node = np.tile(np.arange(plan.n_trees), (x.shape[0], 1))
    for feat, thr in zip(plan.level_feature, plan.level_threshold, strict=True):
        go_right = np.take_along_axis(x, feat[node], axis=1) > thr[node]
        node = 2 * node + go_right
    leaves = plan.leaf_value[node]
    numpy_sum = leaves.sum(axis=1)
    naive = [sum(r.tolist()) for r in leaves]  # strictly left to right
    assert [_native.ForestScorer.pairwise_sum(r.tolist()) for r in leaves] == numpy_sum.tolist()
    assert sum(a != b for a, b in zip(naive, numpy_sum.tolist(), strict=True)) > 10


# --------------------------------------------------------------------------- hostile rows


def _threshold_values(km: KindModel) -> dict[int, list[float]]:
    """Per row position: the float64 thresholds splitting on it, their float32 roundings
    and the float32 neighbours of those."""
    forest = km.forest
    assert forest is not None
    leaf = forest.left == np.arange(forest.n_nodes)
    out: dict[int, set[float]] = {}
    for f, t in zip(forest.feature[~leaf], forest.threshold[~leaf], strict=True):
        t32 = np.float32(t)
        vals = {float(t), float(t32), float(np.nextafter(t32, np.float32(np.inf))),
                float(np.nextafter(t32, np.float32(-np.inf)))}
        out.setdefault(int(km.columns[f]), set()).update(vals)
    return {c: sorted(v) for c, v in out.items()}


THRESHOLDS = {k: _threshold_values(km) for k, km in MODEL.kinds.items()}
SPECIAL = [
    float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e300, -1e300,
    F32_MAX, -F32_MAX, float(np.nextafter(F32_MAX, np.inf)),
    # float32 rounding boundary: the tie rounds to even (infinity), just below it does not
    2.0**128 * (1 - 2.0**-25), -(2.0**128) * (1 - 2.0**-25),
    float(np.nextafter(2.0**128 * (1 - 2.0**-25), 0.0)), 3.5e38,
    5e-324, -5e-324, 1e-45, 7e-46, 1.0, 2.0**53, 1e18,
]


def _value(col: int) -> st.SearchStrategy[float]:
    on_threshold = sorted({v for t in THRESHOLDS.values() for v in t.get(col, [])})
    options = [st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True),
               st.floats(-50.0, 50.0)]
    if on_threshold:
        options = [st.sampled_from(on_threshold)] * 3 + options
    return st.one_of(options)


ROW = st.tuples(*[_value(c) for c in range(N_COLS)]).map(list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=8))
def test_hypothesis_rows(rows: list[list[float]]) -> None:
    for kind, km in MODEL.kinds.items():
        _assert_same(km, KERNELS[kind], rows)
        _assert_same(km, KERNELS[kind], rows[:1])


def test_threshold_rows_batch_1000() -> None:
    """Every row sits on thresholds (float64, float32-rounded, neighbours), many NaN."""
    rng = np.random.default_rng(5)
    for kind, km in MODEL.kinds.items():
        rows = rng.normal(size=(1000, N_COLS))
        for c, values in THRESHOLDS[kind].items():
            rows[:, c] = rng.choice(values, size=1000)
        rows[rng.random(rows.shape) < 0.1] = np.nan
        rows[::50] = np.inf
        rows[1::50] = -np.inf
        _assert_same(km, KERNELS[kind], rows.tolist())
        for batch in (1, 2, 7):
            for i in range(0, 40, batch):
                _assert_same(km, KERNELS[kind], rows[i : i + batch].tolist())


def test_interp_matches_numpy() -> None:
    """np.interp's cases: on, between, below and above calib_scores, ties in xp, one point."""
    assert _native is not None
    interp = _native.ForestScorer.interp
    rng = np.random.default_rng(4)
    for km in MODEL.kinds.values():
        xp, fp = km.calib_scores, CALIBRATION_LEVELS
        x = np.concatenate([xp, (xp[1:] + xp[:-1]) / 2, np.nextafter(xp, 2.0),
                            np.nextafter(xp, -1.0), [0.0, 1.0, 2.0, -1.0, np.nan],
                            rng.uniform(xp[0] - 0.01, xp[-1] + 0.01, size=5000)])
        assert _bits(interp(x.tolist(), xp.tolist(), fp.tolist())) == _bits(
            np.interp(x, xp, fp).tolist()
        )
    xp = np.array([0.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 5.0, 1e308, 1e308])
    fp = np.array([0.0, 0.5, 0.7, 0.9, 1.0, -1e308, 1e308, 2.0, 3.0, 4.0])
    x = np.concatenate([xp, rng.uniform(-1, 6, size=2000), [1e307, 5e307, np.inf, -np.inf]])
    for n in (1, 2, 3, 4, 5, len(xp)):
        assert _bits(interp(x.tolist(), xp[:n].tolist(), fp[:n].tolist())) == _bits(
            np.interp(x, xp[:n], fp[:n]).tolist()
        ), n
    # Infinite slopes: exactly on a point numpy returns fp[j], not slope * 0 (NaN).
    xp = np.array([0.0, 1e-300, 1.0, 2.0])
    fp = np.array([0.0, 1e300, -1e300, 1e308])
    x = np.array([0.0, 1e-300, 5e-301, 1.0, 1.5, 2.0])
    assert _bits(interp(x.tolist(), xp.tolist(), fp.tolist())) == _bits(
        np.interp(x, xp, fp).tolist()
    )


def test_pairwise_sum_and_pow_match_numpy() -> None:
    assert _native is not None
    rng = np.random.default_rng(2)
    for n in [*range(1, 300), 1000, 4099]:
        a = rng.random(n) * 10.0 ** rng.uniform(-3, 3, size=n)
        want = a.reshape(1, n).sum(axis=1).tolist()[0]
        assert _bits([_native.ForestScorer.pairwise_sum(a.tolist())]) == _bits([want]), n
    e = -rng.uniform(0, 8, size=200_000)
    assert _bits(_native.ForestScorer.pow2(e.tolist())) == _bits(np.power(2.0, e).tolist())


def test_odd_input_goes_to_python() -> None:
    """Input the fast path does not take is Python's: same result or same exception."""
    km = MODEL.kinds[EventKind.NETWORK]
    scorer = KERNELS[EventKind.NETWORK]
    row = [0.5] * N_COLS
    ints = [1] * N_COLS
    mixed = [*row[:-1], 3]
    for rows in ([ints], [row, mixed], [tuple(row)], [row, row + [1.0]][:1], [row * 2]):
        _assert_same(km, scorer, rows)  # type: ignore[arg-type]
    for bad in ([], [row, row[:-1]], [["x"] * N_COLS], [row[:10]]):
        with pytest.raises(Exception) as py_err:
            km.score(bad)  # type: ignore[arg-type]
        with pytest.raises(type(py_err.value)):
            scorer(bad)  # type: ignore[arg-type]


def test_subclassed_models_keep_python() -> None:
    class Timed(KindModel):
        def score(self, rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
            return super().score(rows)

    kinds = {k: Timed(k, m.features, m.forest, m.impute, m.calib_scores, m.stats)
             for k, m in MODEL.kinds.items()}
    det = Detector(Model(MODEL.name, MODEL.version, MODEL.cfg, MODEL.thresholds, kinds,
                         MODEL.peers, MODEL.meta), native=True)
    assert not any(isinstance(s, _native.ForestScorer) for s in det._scorers.values())
    noforest = Detector(MODEL.without_forests(), native=True)
    assert not any(isinstance(s, _native.ForestScorer) for s in noforest._scorers.values())


# --------------------------------------------------------------------------- sklearn


@pytest.mark.parametrize(
    ("n_estimators", "max_samples"), [(1, 256), (7, 64), (100, 256), (150, 128), (300, 256),
                                      (5, 1)],
)
def test_fresh_sklearn_forest(n_estimators: int, max_samples: int) -> None:
    """A newly fitted forest, compiled by compile_forest: kernel == KindModel.score, and
    within 1e-9 of -score_samples."""
    assert _native is not None
    rng = np.random.default_rng(n_estimators)
    n_feat = 6
    train = rng.normal(size=(2000, n_feat))
    train[:, 1] = rng.integers(0, 5, size=2000)
    train[:, 3] *= 1e3
    model = IsolationForest(n_estimators=n_estimators, max_samples=max_samples,
                            random_state=0).fit(train)
    forest = compile_forest(model)
    feats = FEATURE_NAMES[:n_feat]
    calib = np.quantile(forest.score(train), CALIBRATION_LEVELS)
    stats = FeatureStats(feats, (0.0,) * n_feat, (1.0,) * n_feat)
    km = KindModel(EventKind.AUTH, feats, forest, np.median(train, axis=0), calib, stats)
    det = SimpleNamespace(model=SimpleNamespace(kinds={EventKind.AUTH: km}),
                          _scorers={EventKind.AUTH: lambda rows: km.score(rows)})
    scorer = native.score_kernels(_native, det)[EventKind.AUTH]
    assert isinstance(scorer, _native.ForestScorer)
    query = rng.normal(size=(1000, n_feat)) * 2.0
    query[::7, 3] *= 1e3
    rows = np.hstack([query, rng.normal(size=(1000, N_COLS - n_feat))])
    for batch in (1, 2, 7, 1000):
        for i in range(0, 1000 if batch > 1 else 50, batch):
            _assert_same(km, scorer, rows[i : i + batch].tolist())
    sc, _ = scorer(rows.tolist())
    np.testing.assert_allclose(sc, -model.score_samples(query), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- end to end


def _run(det: Detector, lines: list[bytes], batch: int) -> tuple[list[Any], dict[str, Any]]:
    state = EngineState()
    events = [parse_event(line) for line in lines]
    out: list[Any] = []
    for i in range(0, len(events), batch):
        for d in det.process(events[i : i + batch], state):
            out.append((d.to_dict(), _bits([d.score, d.model_risk, d.risk])))
    return out, {k: b.to_dict() for k, b in state.baselines.items()}


@pytest.mark.parametrize("batch", [1, 1000])
def test_end_to_end_native_equals_python(
    batch: int, replay: tuple[list[bytes], dict[EventKind, list[list[float]]]],
) -> None:
    lines = replay[0][: 2500 if batch == 1 else None]
    fast = Detector(MODEL, native=True)
    assert isinstance(fast._scorers[EventKind.AUTH], _native.ForestScorer)
    got = _run(fast, lines, batch)
    want = _run(Detector(MODEL, native=False), lines, batch)
    assert any(d["action"] != "allow" for d, _ in want[0])
    assert got[0] == want[0]
    assert got[1] == want[1]
