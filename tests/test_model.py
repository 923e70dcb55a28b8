"""Model artifacts: the shipped model verifies; any tampering is refused with a clear error."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detector.events import EventKind
from detector.features import FEATURE_NAMES
from detector.model import ModelError, load_model, sha256_file
from tests.conftest import DEFAULT_MODEL


def test_default_model_loads_and_matches_feature_names() -> None:
    m = load_model(DEFAULT_MODEL)
    assert tuple(m.meta["feature_names"]) == FEATURE_NAMES
    assert set(m.kinds) == {EventKind.AUTH, EventKind.NETWORK}
    assert set(m.peers) == {"user", "device"}
    for km in m.kinds.values():
        assert km.forest is not None
        assert km.forest.n_features == len(km.features)
    assert 0 < m.thresholds.step_up <= m.thresholds.revoke <= 1


def test_scores_are_higher_for_anomalies_and_risk_is_monotonic() -> None:
    km = load_model(DEFAULT_MODEL).kinds[EventKind.AUTH]
    usual = [0.0 if name != "history_log" else 5.0 for name in FEATURE_NAMES]
    odd = list(usual)
    for name in ("country_rarity", "asn_rarity", "device_rarity", "ua_rarity", "hour_rarity"):
        odd[FEATURE_NAMES.index(name)] = 4.0
    scores, risk = km.score([usual, odd])
    assert scores[1] > scores[0]
    assert risk[1] >= risk[0]
    assert np.all((risk >= 0) & (risk <= 1))


def _meta(d: Path) -> dict[str, Any]:
    return dict(orjson.loads((d / "model.json").read_bytes()))


def _write_meta(d: Path, meta: dict[str, Any]) -> None:
    (d / "model.json").write_bytes(orjson.dumps(meta))


def _rename_feature(d: Path) -> None:
    meta = _meta(d)
    meta["feature_names"][0] = "renamed"
    _write_meta(d, meta)


def _bad_threshold(d: Path) -> None:
    meta = _meta(d)
    meta["thresholds"]["step_up"] = 1.5
    _write_meta(d, meta)


def _unknown_setting(d: Path) -> None:
    meta = _meta(d)
    meta["config"]["exec"] = "rm -rf /"
    _write_meta(d, meta)


def _tamper_peers(d: Path) -> None:
    (d / "peers.json").write_bytes(b'{"user": {"v": 1}}')


def _escape_path(d: Path) -> None:
    meta = _meta(d)
    meta["files"]["../model.json"] = "0" * 64
    _write_meta(d, meta)


def _drop_forest(d: Path) -> None:
    (d / "forest_network.npz").unlink()


def _short_calibration(d: Path) -> None:
    meta = _meta(d)
    meta["forests"]["auth"]["calibration"] = meta["forests"]["auth"]["calibration"][:-1]
    _write_meta(d, meta)


def _not_json(d: Path) -> None:
    (d / "model.json").write_bytes(b"\x80\x04 pickle?")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_rename_feature, "feature names"),
        (_bad_threshold, "thresholds"),
        (_unknown_setting, "unknown detector settings"),
        (_tamper_peers, "sha256 mismatch"),
        (_escape_path, "illegal file name"),
        (_drop_forest, "missing model file"),
        (_short_calibration, "calibration"),
        (_not_json, "not valid JSON"),
    ],
)
def test_tampered_models_are_refused(
    tmp_path: Path, tamper: Callable[[Path], None], message: str
) -> None:
    d = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL, d)
    tamper(d)
    with pytest.raises(ModelError, match=message):
        load_model(d)


def test_model_files_hash_as_recorded() -> None:
    meta = _meta(DEFAULT_MODEL)
    for name, digest in meta["files"].items():
        assert sha256_file(DEFAULT_MODEL / name) == digest
