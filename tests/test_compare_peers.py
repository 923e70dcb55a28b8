"""bench/compare_peers.py runs end to end on a tiny split and writes an honest table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compare_peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "compare_peers", REPO / "bench" / "compare_peers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_peers"] = module
    spec.loader.exec_module(module)
    return module


def test_compare_peers_tiny_run(compare_peers: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "EVALUATION.md"
    js = tmp_path / "peers.json"
    code = compare_peers.main([
        "--train-users", "30", "--train-days", "3", "--test-users", "30", "--test-days", "3",
        "--warmup-days", "1", "--trees", "10", "--hst-train-rows", "3000",
        "--hst-window", "250", "--out", str(out), "--json", str(js),
        "--plot", str(tmp_path / "cmp.png"),
    ])
    assert code == 0
    text = out.read_text()
    for peer in ("(a) this detector", "(a') (a), forest only", "(b) rules only",
                 "(c) River HalfSpaceTrees", "(d) IsolationForest, raw fields"):
        assert peer in text
    assert "| event ROC-AUC on risk |" in text and "## Issue 4's goals" in text
    peers = orjson.loads(js.read_bytes())["peers"]
    assert set(peers) == {"a", "a'", "b", "c", "d"}
    assert all(0.0 <= (p["roc_auc"] or 0.0) <= 1.0 for p in peers.values())
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("values", "higher", "best"),
    [
        ([0.9, 0.95, 0.95], True, {1, 2}),  # ties are all bold
        ([1.2, 0.0, 0.5], False, {1}),
        ([None, 0.4], True, {1}),
    ],
)
def test_best_marks_ties_and_direction(
    compare_peers: ModuleType, values: list[float | None], higher: bool, best: set[int]
) -> None:
    assert compare_peers._best(values, higher) == best
