"""GC thresholds of the entry points: parsed, applied, restored, and the decisions unchanged."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector import gctune
from detector.cli import main
from detector.stream import worker as worker_module
from detector.stream.settings import WorkerSettings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _keep_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("python", (700, 10, 10)), ("PYTHON", (700, 10, 10)), ("1000000,50,50", (1_000_000, 50, 50)),
     (" 20000 , 20 ,20 ", (20_000, 20, 20))],
)
def test_parse_threshold(text: str, expected: tuple[int, int, int]) -> None:
    assert gctune.parse_threshold(text) == expected
    assert gctune.parse_threshold(gctune.format_threshold(expected)) == expected


@pytest.mark.parametrize("text", ["", "off", "700,10", "700,10,10,10", "-1,10,10", "7e2,10,10",
                                  "0,10,10", "700,0,10"])
def test_parse_threshold_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="gc threshold"):
        gctune.parse_threshold(text)


def test_the_default_raises_every_threshold_of_the_interpreter() -> None:
    assert all(d > p for d, p in zip(gctune.DEFAULT_THRESHOLD, gctune.PYTHON_THRESHOLD,
                                     strict=True))


def test_apply_sets_and_returns_the_previous() -> None:
    gc.set_threshold(700, 10, 10)
    assert gctune.apply_threshold((5000, 7, 3)) == (700, 10, 10)
    assert gc.get_threshold() == (5000, 7, 3)


def test_worker_applies_its_threshold_before_loading_and_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int, int]] = []

    class Stop(Exception):
        pass

    def metrics() -> None:
        seen.append(gc.get_threshold())
        raise Stop

    monkeypatch.setattr(worker_module, "StreamMetrics", metrics)
    gc.set_threshold(700, 10, 10)
    settings = WorkerSettings(model_dir=REPO / "models" / "default", gc_threshold="123456,7,8")
    with pytest.raises(Stop):
        worker_module.run_worker(settings)
    assert seen == [(123456, 7, 8)]
    assert gc.get_threshold() == (700, 10, 10)


def test_replay_decides_alike_under_either_threshold_and_restores_it(tmp_path: Path) -> None:
    events = tmp_path / "events"
    assert main(["generate", "--users", "12", "--days", "2", "--out", str(events),
                 "--seed", "4"]) == 0
    gc.set_threshold(700, 10, 10)
    outs = []
    for threshold in ("python", "1000000,50,50"):
        out = tmp_path / f"decisions-{threshold.replace(',', '-')}.jsonl"
        assert main(["replay", "--model", str(REPO / "models" / "default"), "--events",
                     str(events / "events.jsonl"), "--decisions", str(out),
                     "--gc-threshold", threshold]) == 0
        assert gc.get_threshold() == (700, 10, 10)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") > 100


def test_gc_pauses_are_timed_per_generation_while_entered() -> None:
    from detector.stream.metrics import GcPauses, StreamMetrics

    m = StreamMetrics()

    def count(generation: int) -> float:
        value = m.registry.get_sample_value("detector_gc_pause_ms_count",
                                            {"generation": str(generation)})
        return value or 0.0

    with GcPauses(m.gc_pause_ms) as pauses:
        assert pauses in gc.callbacks
        gc.collect(0)
        gc.collect(2)
    assert count(0) >= 1 and count(2) >= 1
    assert (m.registry.get_sample_value("detector_gc_pause_ms_sum", {"generation": "2"})
            or 0.0) > 0.0
    assert pauses not in gc.callbacks
    before = count(2)
    gc.collect(2)
    assert count(2) == before  # no longer watching
