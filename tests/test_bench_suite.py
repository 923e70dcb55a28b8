"""Smoke test of the benchmark suite (bench/run.py): tiny sizes, no Kafka, no timing asserts.

It checks that the in-process parts run end to end, that every expected row is
in the output table with positive, finite figures, and that the generated
section of BENCHMARKS.md is replaced between its markers without touching the
hand-written history.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"

pytestmark = pytest.mark.slow

HISTORY = "## History\n\nhand-written figures that must survive\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """Run the in-process parts once: (raw figures, stdout, the BENCHMARKS.md it wrote)."""
    tmp = tmp_path_factory.mktemp("bench")
    md = tmp / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro\n\n" + HISTORY)
    out = tmp / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(  # noqa: S603
        [sys.executable, str(BENCH / "run.py"), "--quick", "--only", "core,forest,memory",
         "--cpu", "-1", "--benchmarks-md", str(md), "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, md


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_core_rows_cover_trees_and_batches(quick_run: tuple[dict[str, Any], str, Path]) -> None:
    res, _, _ = quick_run
    rows = res["core"]["rows"]
    assert sorted((r["trees"], r["batch"]) for r in rows) == sorted(
        (t, b) for t in (100, 200) for b in (1, 10, 100, 1000)
    )
    for r in rows:
        for key in ("with_model_eps", "without_model_eps", "with_over_without_time",
                    "p50_ms", "p99_ms", "floor_p50_ms", "floor_p99_ms"):
            assert _positive(r[key]), (key, r)
        assert r["p99_ms"] >= r["p50_ms"]
        assert math.isfinite(r["model_share"]) and r["model_share"] < 1.0
        if r["native"]:
            # The compiled engine scores inside Rust, one event at a time: no
            # Python clock is wrapped around its scorers (it would cost more
            # than the forest), so the share comes from with/without alone.
            assert r["model_share_inside"] == 0.0
        else:
            assert 0.0 < r["model_share_inside"] < 1.0
    assert _positive(res["core"]["parse_only_eps"])


def test_forest_rows_and_equality(quick_run: tuple[dict[str, Any], str, Path]) -> None:
    res, _, _ = quick_run
    rows = res["forest"]["rows"]
    assert sorted((r["trees"], r["batch"]) for r in rows) == sorted(
        (t, b) for t in (100, 200) for b in (1, 10, 100, 1000)
    )
    for r in rows:
        assert _positive(r["sklearn_us_per_row"]) and _positive(r["compiled_us_per_row"])
        assert _positive(r["speedup"])
        assert 0.0 <= r["max_abs_diff"] <= res["forest"]["tolerance"]


def test_memory_figures(quick_run: tuple[dict[str, Any], str, Path]) -> None:
    res, _, _ = quick_run
    m = res["memory"]
    for key in ("decoded_rss_per_entity", "decoded_traced_per_entity", "table_rss_per_entity",
                "table_traced_per_entity", "serialised_mean", "serialised_p99",
                "rocksdb_bytes_per_100k", "decoded_rss_1m_gb", "rocksdb_1m_gb"):
        assert _positive(m[key]), (key, m[key])
    # A baseline serialises to at least a few hundred bytes and the decoded form is larger.
    assert m["serialised_p99"] >= m["serialised_mean"] > 100
    assert m["decoded_traced_per_entity"] > m["serialised_mean"]


def test_table_has_every_row(quick_run: tuple[dict[str, Any], str, Path]) -> None:
    _, stdout, _ = quick_run
    for label in (
        "core replay, one core, 100 trees, batch 1,000",
        "model's share of the pipeline time",
        "compiled forest vs sklearn score_samples, 100 trees, batch 1 ",
        "compiled forest vs sklearn score_samples, 100 trees, batch 1,000",
        "compiled scores equal -score_samples",
        "serialised baseline per entity, mean (p99)",
        "resident per entity, Rust-held baselines",
        "resident per entity, decoded Python baselines",
        "resident per entity, serialised values",
        "1,000,000 entities, Rust-held in memory",
        "1,000,000 entities, decoded in memory",
        "1,000,000 entities, worker rocksdb:// store on disk",
    ):
        row = next((ln for ln in stdout.splitlines() if ln.startswith(f"| {label}")), None)
        assert row is not None, label
        assert re.search(r"\| (met|\*\*missed\*\*) \|$", row), row
    assert "Not run in this run: kafka, scaling." in stdout
    assert not re.search(r"\b(nan|inf|n/a)\b", stdout), "a non-finite figure in the table"


def test_benchmarks_md_section_is_replaced_and_history_kept(
    quick_run: tuple[dict[str, Any], str, Path],
) -> None:
    _, stdout, md = quick_run
    text = md.read_text()
    assert text.count("<!-- bench-suite:begin") == 1 and text.count("<!-- bench-suite:end") == 1
    assert text.endswith(HISTORY)
    assert text.index("bench-suite:end") < text.index("## History")
    # A second write replaces the section instead of adding one.
    sys.path.insert(0, str(BENCH))
    try:
        import run as suite  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    suite.write_section(md, "## Suite results (generated)\n\nsecond\n")
    again = md.read_text()
    assert again.count("<!-- bench-suite:begin") == 1
    assert "second" in again and "core replay, one core" not in again
    assert again.endswith(HISTORY) and again.startswith("# Benchmarks\n\nintro\n")


def test_render_from_saved_figures_reproduces_the_table(
    quick_run: tuple[dict[str, Any], str, Path], tmp_path: Path,
) -> None:
    res, stdout, _ = quick_run
    saved = tmp_path / "figures.json"
    saved.write_text(json.dumps(res))
    proc = subprocess.run(  # noqa: S603
        [sys.executable, str(BENCH / "run.py"), "--render", str(saved), "--no-write"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == stdout
