"""The compiled isolation forest: exact sklearn equality, validation, safe artifacts."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError

import detector.forest as forest_mod
from detector.forest import (
    CompiledForest,
    ForestFormatError,
    compile_forest,
    load_forest,
    save_forest,
)
from tests.unpickle_probe import UNPICKLED, Payload

N_FEATURES = 6
TOL = 1e-9


def _training_data(n_rows: int = 1500) -> np.ndarray:
    """Mixed columns: continuous, many duplicates, a constant, wide scale, ties."""
    rng = np.random.default_rng(42)
    x = np.empty((n_rows, N_FEATURES))
    x[:, 0] = rng.normal(size=n_rows)
    x[:, 1] = rng.integers(0, 5, size=n_rows)  # 5 distinct values
    x[:, 2] = 7.0  # constant column
    x[:, 3] = rng.normal(scale=1e3, size=n_rows)
    x[:, 4] = rng.uniform(size=n_rows)
    x[:, 5] = np.round(rng.normal(size=n_rows) * 2) / 2  # ties on a 0.5 grid
    x[:20] = x[20:40]  # duplicated rows
    return x


def _query_data(train: np.ndarray, n_rows: int = 1000) -> np.ndarray:
    """Training rows, perturbed rows (float64 values float32 cannot represent), outliers."""
    rng = np.random.default_rng(7)
    q = train[rng.integers(0, len(train), size=n_rows)].copy()
    third = n_rows // 3
    q[:third] += rng.normal(scale=1e-7, size=(third, N_FEATURES))
    q[third : 2 * third] = rng.normal(size=(third, N_FEATURES)) * train.std(axis=0) * 2
    q[-5:] = [[9, 9, 9, 9e4, 9, 9], [-9, -1, 7, 0, 0.5, 0], [0, 2, 7, 0, 2, 0], *q[-2:]]
    assert not np.array_equal(q, q.astype(np.float32).astype(np.float64))
    return q


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return _training_data()


@pytest.fixture(scope="module")
def query(train: np.ndarray) -> np.ndarray:
    return _query_data(train)


@pytest.fixture(scope="module")
def fitted(train: np.ndarray) -> tuple[IsolationForest, CompiledForest]:
    model = IsolationForest(n_estimators=50, random_state=0).fit(train)
    return model, compile_forest(model)


CONFIGS: list[dict[str, Any]] = [
    {"n_estimators": 10},
    {"n_estimators": 100},
    {"n_estimators": 10, "max_samples": 64},
    {"n_estimators": 100, "max_samples": 512},
    {"n_estimators": 10, "max_features": 0.5},
    {"n_estimators": 100, "max_features": 0.5, "bootstrap": True},
    {"n_estimators": 10, "max_samples": 512, "bootstrap": True},
    {"n_estimators": 10, "max_features": 1},
    {"n_estimators": 10, "max_samples": 0.3, "contamination": 0.05},
]


@pytest.mark.parametrize(
    "params", CONFIGS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items())
)
def test_scores_equal_negated_score_samples(
    params: dict[str, Any], train: np.ndarray, query: np.ndarray
) -> None:
    model = IsolationForest(random_state=0, **params).fit(train)
    forest = compile_forest(model)
    assert forest.n_trees == params["n_estimators"]
    assert forest.n_features == N_FEATURES
    assert forest.offset == model.offset_
    expected = -model.score_samples(query)
    for batch in (1, 7, 1000):
        got = np.concatenate(
            [forest.score(query[i : i + batch]) for i in range(0, len(query), batch)]
        )
        assert got.dtype == np.float64 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    # A row scores the same alone as in a batch, bit for bit.
    np.testing.assert_array_equal(
        np.concatenate([forest.score(query[i : i + 1]) for i in range(50)]),
        forest.score(query)[:50],
    )


def test_node_table_walk_matches_complete_layout(
    fitted: tuple[IsolationForest, CompiledForest],
    query: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forests too deep for the padded layout are scored by walking the node table."""
    model, forest = fitted
    monkeypatch.setattr(forest_mod, "_MAX_LAYOUT_NODES", 0)
    walked = CompiledForest.from_arrays(forest.to_arrays())
    assert not walked._plan.complete and forest._plan.complete
    expected = -model.score_samples(query)
    np.testing.assert_allclose(walked.score(query), expected, rtol=0, atol=TOL)
    for i in range(7):
        np.testing.assert_allclose(walked.score(query[i : i + 1]), expected[i : i + 1], atol=TOL)


def test_many_chunks(
    fitted: tuple[IsolationForest, CompiledForest],
    query: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, forest = fitted
    monkeypatch.setattr(forest_mod, "_CHUNK_ELEMENTS", 3 * forest.n_trees)
    small = CompiledForest.from_arrays(forest.to_arrays())
    assert small._plan.chunk_rows == 3
    np.testing.assert_array_equal(small.score(query), forest.score(query))


def _walk_float64(forest: CompiledForest, row: np.ndarray) -> float:
    """Reference walk that (wrongly) compares float64 values, to show the cast matters."""
    total = 0.0
    for root in forest.roots:
        node = int(root)
        while forest.left[node] != node:
            go_left = row[forest.feature[node]] <= forest.threshold[node]
            node = int(forest.left[node] if go_left else forest.right[node])
        total += float(forest.value[node])
    return float(2.0 ** (-total / (forest.n_trees * forest.average_path_length_max_samples)))


def test_float32_cast_at_thresholds(
    fitted: tuple[IsolationForest, CompiledForest], train: np.ndarray
) -> None:
    """Values just above a threshold in float64 but not after the float32 cast."""
    model, forest = fitted
    rows = []
    for root in forest.roots:
        f, t = int(forest.feature[root]), float(forest.threshold[root])
        below = np.float32(t)
        if float(below) > t:
            below = np.nextafter(below, np.float32(-np.inf))
        above = np.nextafter(below, np.float32(np.inf))
        x = (t + (float(below) + float(above)) / 2) / 2  # t < x, float32(x) == below <= t
        if not (x > t and float(np.float32(x)) <= t):
            continue
        row = train[0].copy()
        row[f] = x
        rows.append(row)
    assert len(rows) >= 10
    q = np.array(rows)
    expected = -model.score_samples(q)
    np.testing.assert_allclose(forest.score(q), expected, rtol=0, atol=TOL)
    naive = np.array([_walk_float64(forest, r) for r in q])
    assert np.abs(naive - expected).max() > 1e-6  # the test would catch a missing cast


def test_outlier_scores_higher(fitted: tuple[IsolationForest, CompiledForest]) -> None:
    _, forest = fitted
    rng = np.random.default_rng(3)
    inliers = _training_data()[rng.integers(0, 1500, size=200)]
    outlier = np.array([[8.0, 40.0, 7.0, 2e4, 5.0, -9.0]])
    scores = forest.score(np.vstack([inliers, outlier]))
    assert scores[-1] > scores[:-1].max()
    assert scores[-1] > 0.6 > np.median(scores[:-1])


def test_degenerate_forests() -> None:
    """Constant training data (single-leaf trees) and max_samples=1 (zero denominator)."""
    const = np.ones((50, 3))
    for params in ({"n_estimators": 5}, {"n_estimators": 5, "max_samples": 1}):
        model = IsolationForest(random_state=0, **params).fit(const)
        forest = compile_forest(model)
        assert forest.max_depth == 0
        q = np.array([[1.0, 1.0, 1.0], [5.0, -5.0, 0.0]])
        np.testing.assert_allclose(forest.score(q), -model.score_samples(q), rtol=0, atol=TOL)
        np.testing.assert_allclose(forest.score(q[:1]), -model.score_samples(q[:1]), atol=TOL)


def test_empty_batch(fitted: tuple[IsolationForest, CompiledForest]) -> None:
    _, forest = fitted
    out = forest.score(np.empty((0, N_FEATURES)))
    assert out.shape == (0,) and out.dtype == np.float64


def test_input_validation(fitted: tuple[IsolationForest, CompiledForest]) -> None:
    _, forest = fitted
    with pytest.raises(ValueError, match=r"^X has 3 features, but the forest expects 6$"):
        forest.score(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="2-D array"):
        forest.score(np.zeros(N_FEATURES))
    with pytest.raises(ValueError, match="numeric"):
        forest.score(np.array([["a"] * N_FEATURES]))
    bad = np.zeros((5, N_FEATURES))
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(first in row 3\).*impute"):
        forest.score(bad)
    # Infinite values are routed like sklearn does.
    q = np.zeros((2, N_FEATURES))
    q[0, 0], q[1, 3] = np.inf, -np.inf
    model = fitted[0]
    np.testing.assert_allclose(forest.score(q), -model.score_samples(q), rtol=0, atol=TOL)
    # Integer and float32 input, and lists, are accepted.
    ints = np.arange(2 * N_FEATURES).reshape(2, N_FEATURES)
    np.testing.assert_allclose(forest.score(ints), -model.score_samples(ints), atol=TOL)
    np.testing.assert_array_equal(forest.score(ints.tolist()), forest.score(ints))
    np.testing.assert_array_equal(forest.score(ints.astype(np.float32)), forest.score(ints))


def test_compile_rejects_unfitted_and_wrong_models() -> None:
    with pytest.raises(NotFittedError):
        compile_forest(IsolationForest())
    with pytest.raises(TypeError, match="IsolationForest"):
        compile_forest(object())


def test_forest_is_immutable(fitted: tuple[IsolationForest, CompiledForest]) -> None:
    _, forest = fitted
    arrays = forest.to_arrays()
    copy = CompiledForest.from_arrays(arrays)
    arrays["threshold"][:] = 0.0  # the caller's arrays are copied
    q = _query_data(_training_data(), 20)
    np.testing.assert_array_equal(copy.score(q), forest.score(q))
    with pytest.raises(ValueError, match="read-only"):
        forest.threshold[0] = 1.0
    with pytest.raises(AttributeError):
        forest.max_depth = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- artifacts


def test_save_load_round_trip(
    fitted: tuple[IsolationForest, CompiledForest], query: np.ndarray, tmp_path: Path
) -> None:
    _, forest = fitted
    path = tmp_path / "forest.npz"
    digest = save_forest(forest, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert save_forest(forest, tmp_path / "again.npz") == digest  # deterministic bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.npz", "forest.npz"]
    # Written like any other file (umask applies), not 0o600 like a mkstemp file.
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777
    loaded = load_forest(path, digest.upper())
    np.testing.assert_array_equal(loaded.score(query), forest.score(query))
    for name, arr in forest.to_arrays().items():
        np.testing.assert_array_equal(loaded.to_arrays()[name], arr)
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[name].dtype.kind in "if" for name in npz.files)


def test_loading_and_scoring_never_import_sklearn(
    fitted: tuple[IsolationForest, CompiledForest], tmp_path: Path
) -> None:
    _, forest = fitted
    path = tmp_path / "forest.npz"
    digest = save_forest(forest, path)
    module = Path(forest_mod.__file__)
    code = (
        "import importlib.util, sys\n"
        "import numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('forest_alone', {str(module)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "sys.modules['forest_alone'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "from pathlib import Path\n"
        f"f = mod.load_forest(Path({str(path)!r}), {digest!r})\n"
        f"print(f.score(np.zeros((3, {N_FEATURES}))).shape)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn',"
        " 'joblib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["(3,)", "[]"], out.stdout + out.stderr


def test_tampered_file_refused(
    fitted: tuple[IsolationForest, CompiledForest], tmp_path: Path
) -> None:
    _, forest = fitted
    path = tmp_path / "forest.npz"
    digest = save_forest(forest, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ForestFormatError, match=f"sha256 mismatch for .*expected {digest}, got"):
        load_forest(path, digest)


def test_wrong_or_malformed_hash_refused(
    fitted: tuple[IsolationForest, CompiledForest], tmp_path: Path
) -> None:
    _, forest = fitted
    path = tmp_path / "forest.npz"
    save_forest(forest, path)
    with pytest.raises(ForestFormatError, match="sha256 mismatch"):
        load_forest(path, hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(ForestFormatError, match="64 hex digits"):
        load_forest(path, "abc")
    with pytest.raises(ForestFormatError, match="64 hex digits"):
        load_forest(path, "z" * 64)


def _write(path: Path, writer: Callable[[Path], None]) -> str:
    writer(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_object_array_refused_without_unpickling(
    fitted: tuple[IsolationForest, CompiledForest], tmp_path: Path
) -> None:
    _, forest = fitted
    arrays: dict[str, Any] = forest.to_arrays()
    arrays["value"] = np.array([Payload()], dtype=object)
    path = tmp_path / "evil.npz"
    digest = _write(path, lambda p: np.savez(p, allow_pickle=True, **arrays))
    UNPICKLED.clear()
    with pytest.raises(ForestFormatError, match="cannot load array 'value'"):
        load_forest(path, digest)
    assert UNPICKLED == []
    # The file really does carry a pickle that would run code.
    with np.load(path, allow_pickle=True) as npz:
        npz["value"]
    assert UNPICKLED == ["payload ran"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.pop("offset"), "missing array.*offset"),
        (lambda a: a.pop("format_version"), "missing array.*format_version"),
        (lambda a: a.update(extra=np.zeros(3)), "unexpected array.*extra"),
        (lambda a: a.update(feature=a["feature"].astype(np.int64)), "feature: expected dtype"),
        (lambda a: a.update(max_depth=np.array([8])), "max_depth: expected 0 dim"),
        (lambda a: a.update(format_version=np.array(2)), "unsupported version 2"),
        (lambda a: a["left"].__setitem__(0, 10**6), r"left: index 1000000 out of range"),
    ],
)
def test_bad_archives_refused(
    edit: Callable[[dict[str, np.ndarray]], object],
    message: str,
    fitted: tuple[IsolationForest, CompiledForest],
    tmp_path: Path,
) -> None:
    _, forest = fitted
    arrays = forest.to_arrays()
    edit(arrays)
    path = tmp_path / "bad.npz"
    digest = _write(path, lambda p: np.savez_compressed(p, **arrays))
    with pytest.raises(ForestFormatError, match=message):
        load_forest(path, digest)


def test_non_npz_files_refused(tmp_path: Path) -> None:
    npy = tmp_path / "plain.npy"
    digest = _write(npy, lambda p: np.save(p, np.arange(3)))
    with pytest.raises(ForestFormatError, match="not an .npz"):
        load_forest(npy, digest)
    junk = tmp_path / "junk.npz"
    digest = _write(junk, lambda p: p.write_bytes(b"\x80\x04 definitely not numpy"))
    with pytest.raises(ForestFormatError, match="not a pickle-free .npz"):
        load_forest(junk, digest)


# --------------------------------------------------------------------------- from_arrays


def _tiny() -> dict[str, np.ndarray]:
    """Two trees: 0 -> (1, 2), 2 -> (3, 4); and a single leaf 5."""
    return {
        "format_version": np.array(1),
        "feature": np.array([1, 0, 0, 0, 0, 0], dtype=np.int32),
        "threshold": np.array([0.5, -2, 1.5, -2, -2, -2]),
        "left": np.array([1, 1, 3, 3, 4, 5], dtype=np.int32),
        "right": np.array([2, 1, 4, 3, 4, 5], dtype=np.int32),
        "value": np.array([0, 1, 0, 2, 2, 0.5]),
        "roots": np.array([0, 5], dtype=np.int32),
        "max_depth": np.array(2),
        "n_features": np.array(2),
        "average_path_length_max_samples": np.array(1.5),
        "offset": np.array(-0.5),
    }


def test_tiny_forest_scores_by_hand() -> None:
    forest = CompiledForest.from_arrays(_tiny())
    x = np.array([[0.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.5, 1.0]])
    # Path lengths: tree 0 gives 1 (left), 2, 2, 2 (1.5 <= 1.5 goes left); tree 1 gives 0.5.
    expected = 2.0 ** (-np.array([1.5, 2.5, 2.5, 2.5]) / (2 * 1.5))
    np.testing.assert_allclose(forest.score(x), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(forest.score(x[1:2]), expected[1:2], rtol=0, atol=1e-15)


def _set(name: str, index: int, value: float) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(a: dict[str, np.ndarray]) -> None:
        a[name][index] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("left", 0, 6), r"left: index 6 out of range \[0, 6\) at node 0"),
        (_set("right", 2, -1), r"right: index -1 out of range"),
        (_set("roots", 1, 9), r"roots: index 9 out of range \[0, 6\) at tree 1"),
        (_set("feature", 2, 2), r"feature: column 2 out of range \[0, 2\) at node 2"),
        (_set("feature", 3, -1), r"feature: column -1 out of range"),
        (_set("threshold", 0, np.nan), "threshold: non-finite value at node 0"),
        (_set("value", 4, np.inf), "value: non-finite value at node 4"),
        (_set("value", 0, 1.0), "internal node 0 has a non-zero value"),
        (_set("left", 2, 0), "node 2: an internal node needs two distinct children"),
        (_set("left", 2, 4), "node 2: an internal node needs two distinct children"),
        (_set("left", 3, 4), "node 3: an internal node needs"),  # half a leaf
        (_set("right", 2, 5), "node 5 is referenced more than once"),
        (_set("roots", 1, 2), "node 2 is referenced more than once"),
        (lambda a: a.update(max_depth=np.array(3)), "deepest leaf is at depth 2"),
        (lambda a: a.update(max_depth=np.array(-1)), "max_depth: must be >= 0"),
        (lambda a: a.update(n_features=np.array(0)), "n_features: must be >= 1"),
        (
            lambda a: a.update(average_path_length_max_samples=np.array(np.nan)),
            "average_path_length_max_samples: must be finite",
        ),
        (lambda a: a.update(roots=np.array([0], dtype=np.int32)), "node 5 is not reachable"),
        (lambda a: a.update(value=a["value"][:5]), "value: expected 6 entries, got 5"),
        (lambda a: a.update(left=a["left"].reshape(2, 3)), "left: expected 1 dim"),
        (lambda a: a.update(roots=np.array([], dtype=np.int32)), "no trees"),
        (lambda a: a.update(threshold=a["threshold"].astype(np.float32)), "threshold: expected"),
        (lambda a: a.update(offset=[0.0]), "offset: expected a numpy array"),
    ],
)
def test_from_arrays_rejects(edit: Callable[[dict[str, Any]], object], message: str) -> None:
    arrays: dict[str, Any] = _tiny()
    edit(arrays)
    with pytest.raises(ForestFormatError, match=message):
        CompiledForest.from_arrays(arrays)
