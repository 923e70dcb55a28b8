"""Shared helpers for the benchmark scripts: machine facts, percentiles, CPU pinning, events.

The scripts in ``bench/`` import this module as a sibling (they run as
scripts, so their own directory is on ``sys.path``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def machine_info() -> dict[str, Any]:
    """Return the facts a reader needs to compare runs: CPU, cores, memory, versions, date."""
    import sklearn

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def pct(values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0..100) of ``values`` (linear interpolation)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: Sequence[float]) -> float:
    """Return the median of ``values``."""
    return float(statistics.median(values))


@contextmanager
def pinned(cpu: int | None) -> Iterator[int | None]:
    """Pin this process to one CPU for the block, then restore the previous affinity.

    Yields the CPU pinned to (``None`` when pinning is unavailable or not asked for).
    Restoring matters: subprocesses started later (workers, broker clients)
    would otherwise inherit the single-core mask.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def generated_lines(users: int, days: int, seed: int, attacks: bool = True) -> list[bytes]:
    """Return the generator's OCSF events (``detector generate``) as JSON lines, in time order."""
    from detector.generate import GeneratorConfig, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(
            GeneratorConfig(users=users, days=days, seed=seed, attacks=attacks), Path(tmp)
        )
        return (Path(tmp) / "events.jsonl").read_bytes().splitlines()


def train_model(out_dir: Path, trees: int, users: int, days: int, seed: int) -> Path:
    """Train a model with the project's own ``detector train`` code on generated data.

    The data are generated without attacks (like ``models/default``'s), seeded,
    so the model is reproducible. Returns ``out_dir``.
    """
    from detector.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        from detector.generate import GeneratorConfig, write_dataset

        write_dataset(
            GeneratorConfig(users=users, days=days, seed=seed, attacks=False), Path(tmp)
        )
        train(
            [Path(tmp) / "events.jsonl"],
            out_dir,
            TrainConfig(n_estimators=trees, seed=0, name=out_dir.name,
                        step_up_budget=0.25, revoke_budget=0.1),
        )
    return out_dir
