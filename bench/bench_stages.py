"""Per-stage core profile: CPU us/event per stage, baseline bytes, side by side.

(The suite's core replay figures come from ``bench_replay.py`` via
``bench/run.py``; this script is the per-stage breakdown used to optimise the
core, see the "Core speed and state size" section of BENCHMARKS.md.)

Runs in one process, one thread, on the same events:

* parse only (the parser's floor),
* the full pipeline (parse -> baseline -> features -> score -> decide) with
  the model, at several batch sizes,
* the same pipeline with the forests replaced by a constant ("without
  model"), so that "with model / without model" is the model's cost,

and reports serialised baseline bytes per entity (mean, p99, max), resident
bytes per baseline (deep ``sys.getsizeof``), and CPU microseconds per event
of each stage at batch 100.

Usage::

    python bench/bench_stages.py [--model models/default] [--users 200] [--days 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import orjson

from detector.baseline import EMPTY, Baseline, update
from detector.engine import Detector, EngineState
from detector.events import Event, parse_event
from detector.features import EMPTY_CONTEXT
from detector.generate import GeneratorConfig, write_dataset
from detector.model import load_model


def run(det: Detector, lines: list[bytes], batch: int) -> tuple[float, list[float], EngineState]:
    """Return (seconds, per-batch latencies in ms, final state) of parse + process."""
    state = EngineState()
    lat: list[float] = []
    started = time.perf_counter()
    for i in range(0, len(lines), batch):
        t = time.perf_counter()
        events = [parse_event(raw) for raw in lines[i : i + batch]]
        det.process(events, state)
        lat.append((time.perf_counter() - t) * 1000.0)
    return time.perf_counter() - started, lat, state


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/default")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--batches", default="1,10,100,1000")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(GeneratorConfig(users=args.users, days=args.days, seed=args.seed), Path(tmp))
        lines = (Path(tmp) / "events.jsonl").read_bytes().splitlines()
    model = load_model(args.model)
    trees = {
        k.value: int(m.forest.roots.shape[0]) if m.forest else 0 for k, m in model.kinds.items()
    }
    print(f"events: {len(lines)} ({args.users} users x {args.days} days), model {model.version}, "
          f"trees {trees}", file=sys.stderr)

    t = time.perf_counter()
    for raw in lines:
        parse_event(raw)
    parse_s = time.perf_counter() - t

    full = Detector(model)
    floor = Detector(model.without_forests())
    rows = []
    state = None
    for batch in [int(b) for b in args.batches.split(",")]:
        best_full = best_floor = float("inf")
        lat_full: list[float] = []
        for _ in range(args.repeat):
            s_full, lat, state = run(full, lines, batch)
            if s_full < best_full:
                best_full, lat_full = s_full, lat
            s_floor, _, _ = run(floor, lines, batch)
            best_floor = min(best_floor, s_floor)
        rows.append((batch, len(lines) / best_full, len(lines) / best_floor,
                     best_full / best_floor, statistics.median(lat_full),
                     float(np.percentile(lat_full, 99))))

    print(f"\nparse only: {len(lines) / parse_s:,.0f} events/s "
          f"({parse_s / len(lines) * 1e6:.1f} us/event)")
    print("\n| batch | with model (events/s) | without model (events/s) | with/without time "
          "| batch p50 (ms) | batch p99 (ms) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch, ev_full, ev_floor, ratio, p50, p99 in rows:
        print(
            f"| {batch} | {ev_full:,.0f} | {ev_floor:,.0f} | {ratio:.2f} "
            f"| {p50:.2f} | {p99:.2f} |"
        )

    assert state is not None
    sizes = np.array([len(orjson.dumps(b.to_dict())) for b in state.baselines.values()])
    print(f"\nbaseline bytes per entity (serialised JSON): mean {sizes.mean():.0f}, "
          f"p99 {np.percentile(sizes, 99):.0f}, max {sizes.max()} over {len(sizes)} entities")
    resident = np.array([_deep_size(b) for b in state.baselines.values()])
    print(f"baseline bytes per entity (resident, deep sys.getsizeof): mean {resident.mean():.0f}, "
          f"p99 {np.percentile(resident, 99):.0f}")
    # The collector's full passes walk every live container; an entry point
    # that freezes what it loaded (gc.freeze()) spares them the model and
    # imports. Measured here, not done by the core (it sets no process state).
    gc.collect()
    gc.freeze()
    frozen = min(run(full, lines, 100)[0] for _ in range(max(args.repeat, 1)))
    gc.unfreeze()
    print(f"\nbatch 100 with model, after gc.freeze(): {len(lines) / frozen:,.0f} events/s")
    print("\nper stage (us/event, batch 100, CPU time, best of "
          f"{max(args.repeat, 3)}):")
    for name, us in stages(full, lines, max(args.repeat, 3)).items():
        print(f"  {name}: {us:.1f}")
    return 0


def stages(det: Detector, lines: list[bytes], repeat: int) -> dict[str, float]:
    """Return CPU us/event of each stage at batch 100, each timed on its own (best of ``repeat``).

    ``baseline update`` and ``features`` replay the speculative pass (every
    event learned with weight 1) over the baselines as they were before each
    event; ``score + decide`` is what ``process`` costs beyond context,
    features and update (forest calls, policy, decisions, bookkeeping).
    """
    events = [parse_event(raw) for raw in lines]
    before: list[Baseline] = []
    current: dict[str, Baseline] = {}
    cfg = det.cfg
    for e in events:
        b = current.get(e.entity_key, EMPTY)
        before.append(b)
        current[e.entity_key] = update(b, e, cfg, 1.0)
    n = len(events)
    best: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> None:
        t = time.process_time()
        fn()
        us = (time.process_time() - t) / n * 1e6
        best[name] = min(best.get(name, us), us)

    def process() -> None:
        state = EngineState()
        for i in range(0, n, 100):
            det.process(events[i : i + 100], state)

    def context() -> None:
        state = EngineState()
        for i in range(0, n, 100):
            det.context(events[i : i + 100], state)

    pairs = list(zip(events, before, strict=True))
    for _ in range(repeat):
        timed("parse", lambda: [parse_event(raw) for raw in lines])
        timed("context (ip, session)", context)
        timed("baseline update", lambda: _each(lambda e, b: update(b, e, cfg, 1.0), pairs))
        timed("features", lambda: _each(
            lambda e, b: det.features.extract(e, b, EMPTY_CONTEXT), pairs
        ))
        timed("process (all but parse)", process)
    best["score + decide (process - context - update - features)"] = (
        best["process (all but parse)"] - best["context (ip, session)"]
        - best["baseline update"] - best["features"]
    )
    return best


def _each(fn: Callable[[Event, Baseline], object], pairs: list[tuple[Event, Baseline]]) -> None:
    """Call ``fn`` on every pair, keeping no result alive (as the engine does)."""
    for e, b in pairs:
        fn(e, b)


def _deep_size(obj: object) -> int:
    """Return the bytes held by ``obj`` and everything it references (shared singletons once)."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen or o is None or isinstance(o, bool):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, Mapping):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, tuple | list):
            stack.extend(o)
    return total


if __name__ == "__main__":
    raise SystemExit(main())
