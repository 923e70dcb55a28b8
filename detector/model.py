"""Model artifacts: load, verify and score. No pickle, no code on the load path.

A model directory ``models/<name>/`` holds:

* ``model.json``: format version, model version, feature names, per event
  kind the forest's feature subset, imputation medians, calibration
  quantiles, explanation statistics, policy thresholds, the detector
  configuration, library versions, a training-data summary, and the sha256
  of every other file;
* ``forest_auth.npz`` / ``forest_network.npz``: compiled isolation forests as
  plain numeric arrays (loaded with ``allow_pickle=False``);
* ``peers.json``: peer-group baselines for cold start.

Scores are **higher = more anomalous** everywhere; the one sign conversion
from scikit-learn's convention lives in :mod:`detector.forest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from detector.baseline import Baseline
from detector.config import DetectorConfig
from detector.events import EventKind
from detector.features import FEATURE_INDEX, FEATURE_NAMES
from detector.forest import CompiledForest, load_forest
from detector.policy import FeatureStats, Thresholds

MODEL_FORMAT: Final = "zt-detector-model/1"

#: Calibration levels: dense in the tail, where the thresholds live.
CALIBRATION_LEVELS: Final = np.unique(
    np.concatenate(
        [
            np.linspace(0.0, 0.99, 100),
            np.linspace(0.99, 0.999, 91),
            np.linspace(0.999, 0.9999, 91),
            np.linspace(0.9999, 1.0, 101),
        ]
    ).round(8)
)


class ModelError(ValueError):
    """A model directory is missing, malformed, or does not verify."""


@dataclass(frozen=True)
class KindModel:
    """The forest, imputation and calibration for one event kind."""

    kind: EventKind
    features: tuple[str, ...]
    forest: CompiledForest | None  # None: constant model (benchmark floor)
    impute: np.ndarray  # training median per feature, for NaN
    calib_scores: np.ndarray  # score quantiles at CALIBRATION_LEVELS
    stats: FeatureStats

    columns: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cols = np.array([FEATURE_INDEX[n] for n in self.features], dtype=np.intp)
        object.__setattr__(self, "columns", cols)

    def matrix(self, rows: list[list[float]]) -> np.ndarray:
        """Return the forest's input: its feature columns with NaN imputed."""
        full = np.asarray(rows, dtype=np.float64)
        x: np.ndarray = full[:, self.columns]
        missing = np.isnan(x)
        if missing.any():
            x = np.where(missing, self.impute, x)
        return x

    def score(self, rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
        """Return (anomaly score, calibrated risk) for full feature rows.

        Risk is the training-score percentile: 0.999 means the score is
        higher than 99.9 % of the events the model was trained on.
        """
        if self.forest is None:
            zeros = np.zeros(len(rows))
            return zeros, zeros
        scores = self.forest.score(self.matrix(rows))
        risk = np.interp(scores, self.calib_scores, CALIBRATION_LEVELS)
        return scores, risk


@dataclass(frozen=True)
class Model:
    """A loaded, verified model: everything the engine needs to decide."""

    name: str
    version: str
    cfg: DetectorConfig
    thresholds: Thresholds
    kinds: Mapping[EventKind, KindModel]
    peers: Mapping[str, Baseline]
    meta: Mapping[str, Any]

    def without_forests(self) -> Model:
        """Return a copy whose forests score a constant 0 (rules only).

        Used to measure the pipeline's floor (parse, baseline, features,
        decide) in benchmarks, and as the bootstrap model during training.
        """
        kinds = {
            k: KindModel(k, m.features, None, m.impute, m.calib_scores, m.stats)
            for k, m in self.kinds.items()
        }
        return Model(
            self.name, self.version + "+noforest", self.cfg, self.thresholds, kinds,
            self.peers, self.meta,
        )


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ModelError(f"model.json: missing {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise ModelError(f"model.json: {key!r} has the wrong type")
    return value


def _floats(values: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ModelError(f"model.json: {what} must be {n} finite numbers")
    return arr


def load_model(path: Path | str) -> Model:
    """Load and verify a model directory.

    Checks the format version, that every feature name is known at the same
    position (names are append-only), the sha256 of every array and peer
    file, and the shapes of all statistics. Refuses any mismatch with a
    :class:`ModelError` that says what is wrong.

    Parameters
    ----------
    path : the model directory (``models/<name>``)

    Returns
    -------
    Model

    Examples
    --------
    >>> m = load_model("models/default")
    >>> sorted(k.value for k in m.kinds)
    ['auth', 'network']
    """
    root = Path(path)
    meta_path = root / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"no model.json in {root}")
    try:
        meta = orjson.loads(meta_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"{meta_path}: not valid JSON") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: not an object")
    if meta.get("format") != MODEL_FORMAT:
        raise ModelError(f"{meta_path}: unsupported format {meta.get('format')!r}")
    names = _need(meta, "feature_names", list)
    if tuple(names) != FEATURE_NAMES[: len(names)]:
        raise ModelError(
            "model feature names do not match this detector's FEATURE_NAMES "
            "(feature names are append-only; retrain the model)"
        )
    files = _need(meta, "files", dict)
    for fname, digest in files.items():
        if "/" in fname or "\\" in fname or fname.startswith("."):
            raise ModelError(f"model.json: illegal file name {fname!r}")
        fpath = root / fname
        if not fpath.is_file():
            raise ModelError(f"missing model file {fpath}")
        actual = sha256_file(fpath)
        if actual != digest:
            raise ModelError(f"sha256 mismatch for {fpath}: expected {digest}, got {actual}")
    try:
        cfg = DetectorConfig.from_dict(_need(meta, "config", dict))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model.json: bad config: {exc}") from exc
    th = _need(meta, "thresholds", dict)
    try:
        thresholds = Thresholds(float(th["step_up"]), float(th["revoke"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError("model.json: thresholds need step_up and revoke") from exc
    if not 0.0 < thresholds.step_up <= thresholds.revoke <= 1.0:
        raise ModelError("model.json: thresholds must satisfy 0 < step_up <= revoke <= 1")

    kinds: dict[EventKind, KindModel] = {}
    for kind in EventKind:
        spec = _need(_need(meta, "forests", dict), kind.value, dict)
        feats = tuple(_need(spec, "features", list))
        unknown = [f for f in feats if f not in names]
        if unknown or not feats:
            raise ModelError(f"model.json: forest {kind.value} uses unknown features {unknown}")
        fname = _need(spec, "file", str)
        if fname not in files:
            raise ModelError(f"model.json: forest file {fname} has no sha256")
        forest = load_forest(root / fname, files[fname])
        if forest.n_features != len(feats):
            raise ModelError(
                f"forest {kind.value} expects {forest.n_features} features, "
                f"model.json lists {len(feats)}"
            )
        n = len(feats)
        st = _need(spec, "stats", dict)
        stats = FeatureStats(
            feats,
            tuple(_floats(st.get("median"), n, f"{kind.value}.stats.median").tolist()),
            tuple(_floats(st.get("p99"), n, f"{kind.value}.stats.p99").tolist()),
        )
        calib = _floats(spec.get("calibration"), len(CALIBRATION_LEVELS), "calibration")
        if np.any(np.diff(calib) < 0):
            raise ModelError(f"model.json: {kind.value} calibration is not sorted")
        kinds[kind] = KindModel(
            kind, feats, forest, _floats(spec.get("impute"), n, "impute"), calib, stats
        )

    peers: dict[str, Baseline] = {}
    peer_file = meta.get("peers_file")
    if peer_file is not None:
        if peer_file not in files:
            raise ModelError("model.json: peers file has no sha256")
        try:
            raw = orjson.loads((root / peer_file).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ModelError(f"peers file {peer_file}: not valid JSON") from exc
        if not isinstance(raw, dict):
            raise ModelError("peers file: not an object")
        for cls, data in raw.items():
            try:
                peers[str(cls)] = Baseline.from_dict(data)
            except ValueError as exc:
                raise ModelError(f"peers file: {cls}: {exc}") from exc
    return Model(
        name=str(meta.get("name", root.name)),
        version=_need(meta, "version", str),
        cfg=cfg,
        thresholds=thresholds,
        kinds=kinds,
        peers=peers,
        meta=meta,
    )
