"""The worker keeps the last good model: ``ModelHolder.reload`` with tampered directories.

No broker: a real :class:`ModelHolder` over a copy of ``models/default`` and a
real :class:`StreamMetrics`, as the worker builds them.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import generate_latest

from detector.model import sha256_file
from detector.stream.metrics import StreamMetrics
from detector.stream.worker import ModelHolder
from tests.conftest import DEFAULT_MODEL
from tests.unpickle_probe import UNPICKLED, Payload


def _meta(d: Path) -> dict[str, Any]:
    return dict(orjson.loads((d / "model.json").read_bytes()))


def _write_meta(d: Path, meta: dict[str, Any]) -> None:
    (d / "model.json").write_bytes(orjson.dumps(meta))


def _new_version(d: Path, version: str) -> None:
    meta = _meta(d)
    meta["version"] = version
    _write_meta(d, meta)


def _tamper_forest(d: Path) -> None:
    data = bytearray((d / "forest_auth.npz").read_bytes())
    data[-100] ^= 0xFF
    (d / "forest_auth.npz").write_bytes(bytes(data))
    _new_version(d, "tampered")  # model.json changes too, so the reload is attempted


def _hash_mismatch(d: Path) -> None:
    meta = _meta(d)
    meta["files"]["peers.json"] = "0" * 64
    meta["version"] = "bad-hash"
    _write_meta(d, meta)


def _feature_names(d: Path) -> None:
    meta = _meta(d)
    meta["feature_names"] = list(reversed(meta["feature_names"]))
    meta["version"] = "bad-features"
    _write_meta(d, meta)


def _object_array(d: Path) -> None:
    with np.load(d / "forest_network.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["threshold"] = np.array([Payload()], dtype=object)
    np.savez(d / "forest_network.npz", allow_pickle=True, **arrays)
    meta = _meta(d)
    meta["files"]["forest_network.npz"] = sha256_file(d / "forest_network.npz")
    meta["version"] = "pickle"
    _write_meta(d, meta)


def _model_json_is_pickle(d: Path) -> None:
    (d / "model.json").write_bytes(pickle.dumps(Payload()))


def _model_json_gone(d: Path) -> None:
    (d / "model.json").unlink()


def _half_written(d: Path) -> None:
    raw = (d / "model.json").read_bytes()
    (d / "model.json").write_bytes(raw[: len(raw) // 2])


@pytest.fixture
def holder(tmp_path: Path) -> ModelHolder:
    d = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, d)
    return ModelHolder(d, StreamMetrics())


def _reloads(h: ModelHolder, result: str) -> float:
    value = h.metrics.registry.get_sample_value("detector_model_reloads_total", {"result": result})
    return value or 0.0


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_forest,
        _hash_mismatch,
        _feature_names,
        _object_array,
        _model_json_is_pickle,
        _model_json_gone,
        _half_written,
    ],
)
def test_reload_refuses_a_tampered_dir_and_keeps_the_last_good_model(
    holder: ModelHolder,
    tamper: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good_detector, good_version = holder.detector, holder.version
    UNPICKLED.clear()
    tamper(holder.model_dir)
    with caplog.at_level(logging.ERROR, logger="detector.stream.worker"):
        assert holder.reload() == "failed"
    assert UNPICKLED == []
    assert holder.detector is good_detector and holder.version == good_version
    assert _reloads(holder, "failed") == 1.0 and _reloads(holder, "loaded") == 0.0
    page = generate_latest(holder.metrics.registry).decode()
    assert f'detector_model_info{{version="{good_version}"}} 1.0' in page
    assert any("model reload refused" in r.getMessage() for r in caplog.records)
    # forced reloads (SIGHUP) refuse it just the same
    assert holder.reload(force=True) == "failed"
    assert holder.detector is good_detector


def test_reload_after_a_refusal_accepts_the_next_good_model(holder: ModelHolder) -> None:
    good_version = holder.version
    _hash_mismatch(holder.model_dir)
    assert holder.reload() == "failed"
    # the operator restores the artifacts and publishes a new version
    shutil.copy(DEFAULT_MODEL / "model.json", holder.model_dir / "model.json")
    _new_version(holder.model_dir, "v2")
    assert holder.reload() == "loaded"
    assert holder.version == "v2" != good_version
    assert holder.reload() == "unchanged"
    page = generate_latest(holder.metrics.registry).decode()
    assert 'detector_model_info{version="v2"} 1.0' in page
    assert good_version not in page.split("detector_model_info")[-1]


def test_holder_refuses_to_start_on_a_tampered_dir(tmp_path: Path) -> None:
    """At start there is no last good model: the worker fails to start, loudly."""
    d = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, d)
    _tamper_forest(d)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        ModelHolder(d, StreamMetrics())
