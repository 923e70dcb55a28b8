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
from detector.forest import ForestFormatError
from detector.model import ModelError, load_model, sha256_file
from tests.conftest import DEFAULT_MODEL
from tests.unpickle_probe import UNPICKLED, Payload


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


# ------------------------------------------- tampering with the arrays, and code on the load path

def _rehash(d: Path, name: str) -> None:
    """Record the file's current sha256 in model.json: an attacker who controls the directory."""
    meta = _meta(d)
    meta["files"][name] = sha256_file(d / name)
    _write_meta(d, meta)


def _flip_forest_byte(d: Path) -> None:
    data = bytearray((d / "forest_auth.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / "forest_auth.npz").write_bytes(bytes(data))


def _wrong_recorded_hash(d: Path) -> None:
    meta = _meta(d)
    meta["files"]["forest_network.npz"] = "f" * 64
    _write_meta(d, meta)


def _reorder_features(d: Path) -> None:
    meta = _meta(d)
    names = meta["feature_names"]
    names[0], names[1] = names[1], names[0]
    _write_meta(d, meta)


def _unknown_forest_feature(d: Path) -> None:
    meta = _meta(d)
    meta["forests"]["auth"]["features"][0] = "not_a_feature"
    _write_meta(d, meta)


def _forest_feature_count(d: Path) -> None:
    meta = _meta(d)
    feats = meta["forests"]["network"]["features"]
    meta["forests"]["network"]["features"] = feats[:-1]
    _write_meta(d, meta)


def _pickled_object_array(d: Path) -> None:
    with np.load(d / "forest_auth.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["value"] = np.array([Payload()], dtype=object)
    np.savez(d / "forest_auth.npz", allow_pickle=True, **arrays)
    _rehash(d, "forest_auth.npz")


def _raw_pickle_as_forest(d: Path) -> None:
    import pickle

    (d / "forest_auth.npz").write_bytes(pickle.dumps(Payload()))
    _rehash(d, "forest_auth.npz")


def _raw_pickle_as_peers(d: Path) -> None:
    import pickle

    (d / "peers.json").write_bytes(pickle.dumps(Payload()))
    _rehash(d, "peers.json")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_flip_forest_byte, "sha256 mismatch for .*forest_auth.npz"),
        (_wrong_recorded_hash, "sha256 mismatch for .*forest_network.npz"),
        (_reorder_features, "feature names do not match"),
        (_unknown_forest_feature, "unknown features"),
        (_forest_feature_count, "expects .* features"),
        (_pickled_object_array, "cannot load array 'value'"),
        (_raw_pickle_as_forest, "not a pickle-free .npz"),
        (_raw_pickle_as_peers, "peers"),
    ],
)
def test_tampered_artifacts_are_refused_and_no_code_runs(
    tmp_path: Path, tamper: Callable[[Path], None], message: str
) -> None:
    """Refused with a message naming the problem; pickles planted on the path never run."""
    d = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL, d)
    tamper(d)
    UNPICKLED.clear()
    with pytest.raises(ValueError, match=message) as info:  # ModelError or ForestFormatError
        load_model(d)
    assert isinstance(info.value, ModelError | ForestFormatError)
    assert UNPICKLED == []


def test_a_planted_pickle_really_would_run(tmp_path: Path) -> None:
    """The payload of the tests above does run code when unpickled (the tests can fail)."""
    import pickle

    UNPICKLED.clear()
    pickle.loads(pickle.dumps(Payload()))  # noqa: S301
    assert UNPICKLED == ["payload ran"]
    UNPICKLED.clear()


def test_unlisted_files_in_the_model_dir_are_never_opened(tmp_path: Path) -> None:
    import pickle

    d = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL, d)
    (d / "model.pkl").write_bytes(pickle.dumps(Payload()))
    (d / "forest_auth.joblib").write_bytes(pickle.dumps(Payload()))
    UNPICKLED.clear()
    assert load_model(d).version == _meta(DEFAULT_MODEL)["version"]
    assert UNPICKLED == []


def test_load_path_never_unpickles_or_evaluates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the shipped model with every code-loading primitive booby-trapped."""
    import builtins
    import marshal
    import pickle

    def trap(*_: Any, **__: Any) -> Any:
        raise AssertionError("code-loading primitive called on the model load path")

    for module, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (marshal, "load"),
        (marshal, "loads"),
        (builtins, "eval"),
        (builtins, "exec"),
    ]:
        monkeypatch.setattr(module, name, trap)
    assert load_model(DEFAULT_MODEL).kinds


def test_load_path_modules_import_no_deserializer_that_runs_code() -> None:
    """Static check: model/forest loading uses np.load(allow_pickle=False) and JSON only."""
    import ast

    from tests.conftest import REPO

    banned = {"pickle", "joblib", "marshal", "shelve", "dill", "cloudpickle", "skops"}
    for name in ("model.py", "forest.py", "baseline.py", "config.py", "policy.py"):
        tree = ast.parse((REPO / "detector" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not {m.split(".")[0] for m in mods} & banned, (name, mods)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load":
                kw = {k.arg: k.value for k in node.keywords}
                if "allow_pickle" in kw or name == "forest.py":
                    value = kw.get("allow_pickle")
                    assert isinstance(value, ast.Constant) and value.value is False, name
