"""Training: replay history through the same engine, fit forests, write a model.

1. Parse the event files with the one parser.
2. Fold every event into a population baseline per entity kind (users,
   devices): what cold-start entities are judged by.
3. Replay the events through :class:`~detector.engine.Detector` with a
   rules-only bootstrap model, so that baselines evolve exactly as they will
   in production (including poisoning protection), and collect the feature
   row of every event.
4. Per event kind, fit a scikit-learn ``IsolationForest`` on those rows
   (missing values imputed with the training median), compile it to flat
   arrays, and calibrate scores to risk percentiles on the training rows.
5. Choose risk thresholds for an alert budget (signals per entity-day), and
   write ``models/<name>/``.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detector.baseline import EMPTY, Baseline, update
from detector.config import DAY_MS, DetectorConfig
from detector.engine import Detector
from detector.events import Event, EventKind
from detector.features import AUTH_FEATURES, FEATURE_INDEX, FEATURE_NAMES, NETWORK_FEATURES
from detector.forest import compile_forest, save_forest
from detector.model import CALIBRATION_LEVELS, MODEL_FORMAT, KindModel, Model, load_model
from detector.policy import FeatureStats, Thresholds, stats_to_dict
from detector.replay import Reject, batched_events, iter_lines, parse_lines

KIND_FEATURES = {EventKind.AUTH: AUTH_FEATURES, EventKind.NETWORK: NETWORK_FEATURES}


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters.

    ``step_up_budget`` is the number of model-driven step_up signals allowed
    per 100 entity-days of training data, ``revoke_budget`` the number of
    revokes per 1,000 entity-days; they set the risk thresholds. Explicit
    ``step_up_risk``/``revoke_risk`` override them.
    """

    n_estimators: int = 100
    max_samples: int = 256
    max_features: float = 1.0
    seed: int = 0
    max_rows: int = 200_000
    step_up_budget: float = 0.5
    revoke_budget: float = 0.2
    step_up_risk: float | None = None
    revoke_risk: float | None = None
    name: str = "model"
    batch_size: int = 2000
    #: Feature subset for the forests (names from FEATURE_NAMES); each kind's
    #: forest uses the features of KIND_FEATURES[kind] that are in it.
    features: tuple[str, ...] | None = None

    def kind_features(self, kind: EventKind) -> tuple[str, ...]:
        """Return the features the ``kind`` forest is fitted on.

        Raises ``ValueError`` for an unknown feature name, or a subset that
        leaves a forest with no feature at all.

        Examples
        --------
        >>> TrainConfig(features=("hour_rarity", "country_rarity")).kind_features(EventKind.AUTH)
        ('hour_rarity', 'country_rarity')
        """
        if self.features is None:
            return KIND_FEATURES[kind]
        unknown = sorted(set(self.features) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown feature names: {unknown}")
        chosen = tuple(f for f in KIND_FEATURES[kind] if f in self.features)
        if not chosen:
            raise ValueError(f"the feature subset leaves the {kind.value} forest no feature")
        return chosen


@dataclass
class TrainReport:
    """What training saw and produced."""

    events: int
    rejected: int
    by_kind: dict[str, int]
    entities: int
    entity_days: float
    thresholds: Thresholds
    model_dir: Path
    version: str


def _load_events(paths: Sequence[Path]) -> tuple[list[Event], list[Reject]]:
    rejects: list[Reject] = []
    events: list[Event] = []
    for batch in batched_events(parse_lines(iter_lines(paths)), 10_000, rejects.append):
        events.extend(batch)
    return events, rejects


def build_peers(events: Sequence[Event], cfg: DetectorConfig) -> dict[str, Baseline]:
    """Return one population baseline per entity kind (user, device), from all events."""
    caps = {dim: cfg.peer_cap for dim in cfg.caps}
    peers: dict[str, Baseline] = {}
    for e in events:
        cls = e.entity_kind.value
        # Peers are an aggregate: per-entity counters (bursts, traffic of one
        # user) mean little there, but hours, places and services do.
        peers[cls] = update(peers.get(cls, EMPTY), e, cfg, 1.0, caps)
    return {
        k: v._replace(signals=(), fail_burst=(0.0, 0), new_hosts=(0.0, 0))
        for k, v in peers.items()
    }


def entity_days(events: Sequence[Event]) -> float:
    """Return the number of (entity, UTC day) pairs with activity."""
    return float(len({(e.entity_key, e.ts_ms // DAY_MS) for e in events}))


def _bootstrap_model(cfg: DetectorConfig, peers: dict[str, Baseline]) -> Model:
    kinds = {}
    for kind, feats in KIND_FEATURES.items():
        n = len(feats)
        stats = FeatureStats(feats, (0.0,) * n, (float("inf"),) * n)
        kinds[kind] = KindModel(
            kind, feats, None, np.zeros(n), np.zeros(len(CALIBRATION_LEVELS)), stats
        )
    return Model("bootstrap", "bootstrap", cfg, Thresholds(1.0, 1.0), kinds, peers, {})


def collect_rows(
    events: Sequence[Event], model: Model, batch_size: int = 2000
) -> dict[EventKind, np.ndarray]:
    """Replay ``events`` through the engine and return feature rows per kind."""
    det = Detector(model)
    state = det.new_state()
    rows: dict[EventKind, list[list[float]]] = {k: [] for k in EventKind}
    for start in range(0, len(events), batch_size):
        for d in det.process(events[start : start + batch_size], state, keep_features=True):
            assert d.features is not None  # noqa: S101 - keep_features=True
            rows[d.event.kind].append(d.features)
    return {
        k: np.asarray(v, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)) for k, v in rows.items()
    }


def _threshold(budget_events: float, n_events: int) -> float:
    if n_events == 0:
        return 1.0
    tail = min(max(budget_events / n_events, 1e-7), 0.5)
    return round(1.0 - tail, 9)


def train(
    paths: Sequence[Path],
    out_dir: Path,
    tcfg: TrainConfig | None = None,
    cfg: DetectorConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainReport:
    """Train a model on event files and write it to ``out_dir``.

    Parameters
    ----------
    paths : JSONL event files (any accepted form), in time order
    out_dir : the model directory to (re)write
    tcfg : training parameters
    cfg : detector configuration stored with the model
    log : progress callback

    Returns
    -------
    TrainReport
    """
    from sklearn.ensemble import IsolationForest

    tcfg = tcfg or TrainConfig()
    cfg = cfg or DetectorConfig()
    for kind in KIND_FEATURES:
        tcfg.kind_features(kind)  # refuse a bad subset before any work
    say = log or (lambda _msg: None)
    events, rejects = _load_events(paths)
    if not events:
        raise ValueError("no accepted events to train on")
    say(f"parsed {len(events)} events ({len(rejects)} rejected)")
    peers = build_peers(events, cfg)
    say(f"built {len(peers)} peer baselines")
    rows = collect_rows(events, _bootstrap_model(cfg, peers), tcfg.batch_size)
    say("collected feature rows: " + ", ".join(f"{k.value}={len(v)}" for k, v in rows.items()))

    rng = np.random.default_rng(tcfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*"):
        if old.is_file():
            old.unlink()
        elif old.is_dir():
            shutil.rmtree(old)
    files: dict[str, str] = {}
    forests: dict[str, Any] = {}
    for kind in KIND_FEATURES:
        feats = tcfg.kind_features(kind)
        full = rows[kind]
        if len(full) < 10:
            raise ValueError(f"too few {kind.value} events to train on: {len(full)}")
        cols = [FEATURE_INDEX[f] for f in feats]
        x = full[:, cols]
        with np.errstate(all="ignore"):
            median = np.nanmedian(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0)
        median = np.where(np.isnan(median), 0.0, median)
        x = np.where(np.isnan(x), median, x)
        fit_rows = x
        if len(x) > tcfg.max_rows:
            fit_rows = x[np.sort(rng.choice(len(x), tcfg.max_rows, replace=False))]
        iforest = IsolationForest(
            n_estimators=tcfg.n_estimators,
            max_samples=min(tcfg.max_samples, len(fit_rows)),
            max_features=tcfg.max_features,
            random_state=tcfg.seed,
        ).fit(fit_rows)
        compiled = compile_forest(iforest)
        scores = compiled.score(x)
        calib = np.quantile(scores, CALIBRATION_LEVELS)
        fname = f"forest_{kind.value}.npz"
        files[fname] = save_forest(compiled, out_dir / fname)
        forests[kind.value] = {
            "file": fname,
            "features": list(feats),
            "impute": median.tolist(),
            "calibration": np.maximum.accumulate(calib).tolist(),
            "stats": stats_to_dict(
                FeatureStats(
                    feats,
                    tuple(np.quantile(x, 0.5, axis=0).tolist()),
                    tuple(np.quantile(x, 0.99, axis=0).tolist()),
                )
            ),
            "n_estimators": tcfg.n_estimators,
            "max_samples": int(min(tcfg.max_samples, len(fit_rows))),
            "max_features": tcfg.max_features,
            "training_rows": len(x),
            "fit_rows": len(fit_rows),
        }
        say(f"fitted {kind.value} forest on {len(fit_rows)} rows")

    peers_bytes = orjson.dumps({k: v.to_dict() for k, v in sorted(peers.items())})
    (out_dir / "peers.json").write_bytes(peers_bytes)
    files["peers.json"] = hashlib.sha256(peers_bytes).hexdigest()

    n_days = entity_days(events)
    n_events = len(events)
    step_up = (
        tcfg.step_up_risk
        if tcfg.step_up_risk is not None
        else _threshold(tcfg.step_up_budget * n_days / 100.0, n_events)
    )
    revoke = (
        tcfg.revoke_risk
        if tcfg.revoke_risk is not None
        else _threshold(tcfg.revoke_budget * n_days / 1000.0, n_events)
    )
    revoke = max(revoke, step_up)
    thresholds = Thresholds(step_up, revoke)
    digest = hashlib.sha256(
        orjson.dumps(files, option=orjson.OPT_SORT_KEYS)
        + orjson.dumps(cfg.to_dict(), option=orjson.OPT_SORT_KEYS)
        + orjson.dumps([step_up, revoke])
    ).hexdigest()[:12]
    version = f"{tcfg.name}-{digest}"
    import sklearn

    by_kind = {k.value: int(len(v)) for k, v in rows.items()}
    meta = {
        "format": MODEL_FORMAT,
        "name": tcfg.name,
        "version": version,
        "feature_names": list(FEATURE_NAMES),
        "forests": forests,
        "peers_file": "peers.json",
        "files": files,
        "thresholds": {
            "step_up": step_up,
            "revoke": revoke,
            "step_up_budget_per_100_entity_days": tcfg.step_up_budget,
            "revoke_budget_per_1000_entity_days": tcfg.revoke_budget,
        },
        "config": cfg.to_dict(),
        "libraries": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "training": {
            "events": n_events,
            "rejected": len(rejects),
            "by_kind": by_kind,
            "entities": len({e.entity_key for e in events}),
            "entity_days": n_days,
            "first_ts": min(e.ts_ms for e in events),
            "last_ts": max(e.ts_ms for e in events),
            "sources": [p.name for p in paths],
            "seed": tcfg.seed,
        },
    }
    (out_dir / "model.json").write_bytes(
        orjson.dumps(meta, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    load_model(out_dir)  # verify what we wrote loads
    say(f"wrote {out_dir} version {version}")
    return TrainReport(
        events=n_events,
        rejected=len(rejects),
        by_kind=by_kind,
        entities=int(meta["training"]["entities"]),  # type: ignore[index]
        entity_days=n_days,
        thresholds=thresholds,
        model_dir=out_dir,
        version=version,
    )
