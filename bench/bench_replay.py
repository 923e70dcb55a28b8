"""Core replay benchmark: end-to-end events/s on one core, with and without the model.

Runs in one process, one thread, on the same events, interleaved so machine
noise hits every variant alike (for each round and batch size, the variants
take turns batch by batch, each on its own state; figures are medians over
rounds):

* the full pipeline (parse, a batch at a time with ``parse_batch`` as the
  replay CLI does -> context -> baseline -> features -> forest score -> policy
  -> decision) with each model (``models/default``, 100 trees, and
  optionally a second model, e.g. 200 trees trained at bench time);
* the same pipeline with the model replaced by a constant scorer
  (a constant scorer: no feature matrix, no forest, no calibration),
  i.e. parse, baseline, features and decide only -- the pipeline's floor.
* the first model's full pipeline once more under the interpreter's own GC
  thresholds (700, 10, 10); the others run under the replay CLI's default
  (``detector.gctune.DEFAULT_THRESHOLD``), as ``detector replay`` does.
* the first model's compiled pipeline once more with every event its policy
  gate cannot prove allowed (every step-up and revoke) handed over whole to
  the Python pipeline, as before session 12, instead of judged by
  ``Detector._judge`` with the rest kept in Rust.

Each variant starts from the baselines it built itself on a warm-up prefix of
the events (untimed), so the timed events meet realistic, non-empty state.

Usage::

    python bench/bench_replay.py [--model models/default] [--users 200] [--days 7]

(``python bench/run.py --only core`` runs it as part of the suite.)
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from common import REPO, generated_lines, median, pct, pinned

from detector import events as events_module
from detector import native
from detector.engine import Detector, EngineState, Scorer
from detector.events import Event, accepted_events, parse_batch
from detector.gctune import DEFAULT_THRESHOLD, PYTHON_THRESHOLD
from detector.model import Model, load_model


class ScorerClock:
    """The wall time spent inside a detector's scorers, added up.

    Gives the model's cost measured from inside the same run, beside the
    with/without difference (which machine noise can swamp on a shared machine).
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, scorer: Scorer) -> Scorer:
        """Return ``scorer`` with the time of every call added to :attr:`seconds`."""
        clock = time.perf_counter

        def timed(rows: list[list[float]]) -> Any:
            t = clock()
            out = scorer(rows)
            self.seconds += clock() - t
            return out

        return timed


def _constant_scorer(rows: list[list[float]]) -> Any:
    """Score every row 0 with risk 0: no feature matrix, no forest, no calibration."""
    zeros = [0.0] * len(rows)
    return zeros, zeros


def detector_for(
    model: Model, with_model: bool, use_native: bool
) -> tuple[Detector, ScorerClock]:
    """Return a detector on ``model`` (compiled kernels or pure Python) and its scorer clock.

    Without model, each kind's scorer is replaced by a constant one (risk 0:
    the policy decides on its rules alone), so what remains is the pipeline's
    floor: parse, context, baseline, features and decide. The scorers are
    replaced in place, where the engine (Python or compiled loop) reads them.

    The compiled engine scores one event at a time inside Rust: a Python
    clock around its scorer would be called per event and cost more than the
    forest, so its scorers are left unwrapped (the clock reads 0; the
    model's share comes from with/without) and its floor's constant scorer
    is the compiled one.
    """
    det = Detector(model, native=use_native)
    clock = ScorerClock()
    scorers = det.scorers
    module = native.load() if use_native else None
    engine = use_native and det.new_state().baselines.__class__ is not dict
    for kind in list(scorers):
        if engine and module is not None:
            if not with_model:
                scorers[kind] = module.ConstantScorer(0.0, 0.0)
        else:
            scorers[kind] = clock.wrap(scorers[kind] if with_model else _constant_scorer)
    return det, clock


def trees_of(model: Model) -> int:
    """Return the number of trees per forest (the largest over kinds)."""
    return max(int(m.forest.n_trees) for m in model.kinds.values() if m.forest is not None)


def copy_state(s: EngineState) -> EngineState:
    """Return an independent copy: a ``dict``'s values are immutable, a ``BaselineMap`` copies."""
    baselines: Any = s.baselines
    return EngineState(baselines.copy(), dict(s.ips), dict(s.sessions))


def parsed_events(lines: Sequence[bytes]) -> list[Event]:
    """Parse a batch of lines as the replay CLI does (``parse_batch``), rejects left out."""
    return accepted_events(*parse_batch(list(lines)))


def run(det: Detector, lines: Sequence[bytes], batch: int,
        state: EngineState | None = None) -> tuple[float, list[float], EngineState]:
    """Parse and process ``lines`` in batches of ``batch``.

    Returns (seconds, per-batch latency in ms, final state). ``state`` is
    modified in place (a fresh one when omitted).
    """
    state = state if state is not None else det.new_state()
    lat: list[float] = []
    clock = time.perf_counter
    started = clock()
    for i in range(0, len(lines), batch):
        t = clock()
        events = parsed_events(lines[i : i + batch])
        det.process(events, state)
        lat.append((clock() - t) * 1000.0)
    return clock() - started, lat, state


@dataclass
class Variant:
    """One pipeline measured in the interleaved rounds."""

    name: str
    trees: int
    with_model: bool
    native: bool
    det: Detector
    clock: ScorerClock
    warm: EngineState
    seconds: dict[int, list[float]]
    model_s: dict[int, list[float]]
    p50: dict[int, list[float]]
    p99: dict[int, list[float]]
    #: The collector's thresholds while this variant runs: the replay CLI's
    #: default, or the interpreter's for the one variant that measures them.
    gc_threshold: tuple[int, int, int] = DEFAULT_THRESHOLD
    #: The compiled engine hands its escalations over whole (``judge=False``).
    handed_over_whole: bool = False


def _lockstep(variants: Sequence[Variant], timed: Sequence[bytes], batch: int) -> None:
    # Every variant processes batch i before any processes batch i+1, in an
    # order that alternates (ABCD, DCBA, ...): a burst of load from another
    # process hits all variants alike instead of whichever ran at that moment.
    states = [copy_state(v.warm) for v in variants]
    # Freeze the copies too: a collection triggered by one variant would
    # otherwise scan every variant's state (the pure-Python core's baselines
    # are millions of objects) and charge it to the one that triggered it.
    gc.freeze()
    secs = [0.0] * len(variants)
    lats: list[list[float]] = [[] for _ in variants]
    model0 = [v.clock.seconds for v in variants]
    clock = time.perf_counter
    order = list(range(len(variants)))
    for step, i in enumerate(range(0, len(timed), batch)):
        chunk = timed[i : i + batch]
        for j in order if step % 2 == 0 else reversed(order):
            # The pure-Python core parses in Python too (a module-wide switch).
            events_module.use_native_parser(variants[j].native)
            gc.set_threshold(*variants[j].gc_threshold)
            t = clock()
            events = parsed_events(chunk)
            variants[j].det.process(events, states[j])
            dt = clock() - t
            secs[j] += dt
            lats[j].append(dt * 1000.0)
    for j, v in enumerate(variants):
        v.seconds.setdefault(batch, []).append(secs[j])
        v.model_s.setdefault(batch, []).append(v.clock.seconds - model0[j])
        v.p50.setdefault(batch, []).append(pct(lats[j], 50))
        v.p99.setdefault(batch, []).append(pct(lats[j], 99))


def measure_core(
    models: Sequence[Model],
    lines: Sequence[bytes],
    timed_events: int,
    batches: Sequence[int] = (1, 10, 100, 1000),
    rounds: int = 3,
    cpu: int | None = 0,
    log: Any = None,
    python_core: bool = True,
) -> dict[str, Any]:
    """Measure the core pipeline, with and without each model, interleaved batch by batch.

    The pipeline runs on the compiled kernels when they are built
    (``detector.native``); with ``python_core`` the pure-Python core on the
    first model takes part too, for the kernels' speed-up in the same run.

    The last ``timed_events`` of ``lines`` are timed; the ones before warm
    each variant's state up. Returns a dict with ``rows`` (one per trees x
    batch: events/s with and without model, the model's share of the time
    both as ``1 - without/with`` and as measured inside the scoring calls,
    batch latency p50/p99 in ms, the pure-Python core's events/s and the
    ratio; medians over rounds), the engine and the parameters.
    """
    say = log or (lambda _m: None)
    timed = list(lines[-timed_events:])
    warmup = list(lines[:-timed_events]) if len(lines) > timed_events else []
    variants: list[Variant] = []
    compiled = native.load() is not None
    with pinned(cpu) as on_cpu:
        for m, model in enumerate(models):
            n_trees = trees_of(model)
            # The pure-Python core beside the compiled one, on the first model:
            # the kernels' speed-up measured in the same run.
            kinds = [(True, True), (False, True)] if compiled else [(True, False), (False, False)]
            if compiled and python_core and m == 0:
                kinds.append((True, False))
            for with_model, use_native in kinds:
                det, clock = detector_for(model, with_model, use_native)
                events_module.use_native_parser(use_native)
                _, _, warm = run(det, warmup, 1000)
                variants.append(Variant(
                    f"{n_trees} trees {'with' if with_model else 'without'} model"
                    f" ({'native' if use_native else 'python'})",
                    n_trees, with_model, use_native, det, clock, warm, {}, {}, {}, {}))
            if m == 0:
                # The first model once more under the interpreter's GC
                # thresholds: what the replay CLI's tuned ones save.
                det, clock = detector_for(model, True, compiled)
                events_module.use_native_parser(compiled)
                _, _, warm = run(det, warmup, 1000)
                variants.append(Variant(
                    f"{n_trees} trees with model, interpreter's GC thresholds", n_trees, True,
                    compiled, det, clock, warm, {}, {}, {}, {}, PYTHON_THRESHOLD))
                module = native.load()
                if compiled and module is not None:
                    # And with its escalations handed over whole (before session 12).
                    det, clock = detector_for(model, True, True)
                    det._bl_engine = native.bl_engine(module, det, judge=False)
                    _, _, warm = run(det, warmup, 1000)
                    variants.append(Variant(
                        f"{n_trees} trees with model, escalations handed over whole", n_trees,
                        True, True, det, clock, warm, {}, {}, {}, {},
                        handed_over_whole=True))
        say(f"core: {len(warmup)} warm-up + {len(timed)} timed events, "
            f"{len(variants)} variants, {rounds} rounds, cpu {on_cpu}")
        # The warm states of all variants live in this one process; freezing
        # them keeps the cyclic GC from rescanning them, which would charge
        # every variant's heap to whichever variant triggers a collection.
        gc.collect()
        gc.freeze()
        previous_threshold = gc.get_threshold()
        try:
            parse_s: list[float] = []
            for r in range(rounds):
                # Parsing alone, once per round (a single pass can land on a
                # burst of load from another process): the median is reported.
                events_module.use_native_parser(compiled)
                gc.set_threshold(*DEFAULT_THRESHOLD)
                t = time.perf_counter()
                for i in range(0, len(timed), 1000):
                    parsed_events(timed[i : i + 1000])
                parse_s.append(time.perf_counter() - t)
                for batch in batches:
                    _lockstep(variants, timed, batch)
                say(f"core: round {r + 1}/{rounds} done")
        finally:
            gc.set_threshold(*previous_threshold)
            gc.unfreeze()
            events_module.use_native_parser(True)
    n = len(timed)
    rows = []
    python_gc = next((v for v in variants if v.gc_threshold == PYTHON_THRESHOLD), None)
    whole = next((v for v in variants if v.handed_over_whole), None)
    for v in variants:
        if not v.with_model or (compiled and not v.native) or v is python_gc or v is whole:
            continue
        floor = next(f for f in variants if f.trees == v.trees and not f.with_model)
        py = next((f for f in variants if f.trees == v.trees and f.with_model
                   and not f.native and f is not v and f is not python_gc
                   and f is not whole), None)
        gc_twin = (python_gc if python_gc is not None and python_gc.trees == v.trees
                   and python_gc.native == v.native else None)
        for batch in batches:
            s_with, s_without = median(v.seconds[batch]), median(floor.seconds[batch])
            s_py = median(py.seconds[batch]) if py is not None else None
            s_gc = median(gc_twin.seconds[batch]) if gc_twin is not None else None
            s_whole = (median(whole.seconds[batch]) if whole is not None
                       and whole.trees == v.trees else None)
            rows.append({
                "handed_over_whole_eps": None if s_whole is None else n / s_whole,
                "judged_over_handed_over": None if s_whole is None else s_whole / s_with,
                "native": v.native,
                "python_gc_eps": None if s_gc is None else n / s_gc,
                "tuned_over_python_gc": None if s_gc is None else s_gc / s_with,
                "python_core_eps": None if s_py is None else n / s_py,
                "native_over_python": None if s_py is None else s_py / s_with,
                "trees": v.trees, "batch": batch,
                "with_model_eps": n / s_with, "without_model_eps": n / s_without,
                "with_over_without_time": s_with / s_without,
                "model_share": 1.0 - s_without / s_with,
                "model_share_inside": median(
                    [m / s for m, s in zip(v.model_s[batch], v.seconds[batch], strict=True)]),
                "p50_ms": median(v.p50[batch]), "p99_ms": median(v.p99[batch]),
                "floor_p50_ms": median(floor.p50[batch]),
                "floor_p99_ms": median(floor.p99[batch]),
            })
    return {"events": n, "warmup_events": len(warmup), "rounds": rounds, "cpu": on_cpu,
            "gc_threshold": list(DEFAULT_THRESHOLD),
            "parse_only_eps": n / median(parse_s), "rows": rows, "engine": native.status()}


def baseline_sizes(model: Model, lines: Sequence[bytes]) -> npt.NDArray[np.int64]:
    """Replay ``lines`` and return the serialised (JSON) size of every entity's baseline."""
    _, _, state = run(Detector(model), lines, 1000)
    return np.array([len(orjson.dumps(b.to_dict())) for b in state.baselines.values()])


def main() -> int:
    """Run the core benchmark alone and print its table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", help="model dir (repeatable); "
                   "default models/default")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--timed-events", type=int, default=20_000)
    p.add_argument("--batches", default="1,10,100,1000")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    args = p.parse_args()

    lines = generated_lines(args.users, args.days, args.seed)
    models = [load_model(m) for m in (args.model or [REPO / "models" / "default"])]
    res = measure_core(models, lines, args.timed_events,
                       [int(b) for b in args.batches.split(",")], args.rounds,
                       None if args.cpu < 0 else args.cpu,
                       log=lambda m: print(m, file=sys.stderr))
    print(f"engine: {res['engine']}; parse only: {res['parse_only_eps']:,.0f} events/s")
    print("| trees | batch | with model (events/s) | without model (events/s) | "
          "with/without time | model share | inside scoring | batch p50 (ms) | "
          "batch p99 (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in res["rows"]:
        if r["python_gc_eps"] is not None:
            print(f"(interpreter's GC thresholds, {r['trees']} trees, batch {r['batch']}: "
                  f"{r['python_gc_eps']:,.0f} events/s; tuned / interpreter's "
                  f"{r['tuned_over_python_gc']:.2f}x)")
        if r["handed_over_whole_eps"] is not None:
            print(f"(escalations handed over whole, {r['trees']} trees, batch {r['batch']}: "
                  f"{r['handed_over_whole_eps']:,.0f} events/s; judged / handed over "
                  f"{r['judged_over_handed_over']:.2f}x)")
        if r["python_core_eps"] is not None:
            print(f"(pure-Python core, {r['trees']} trees, batch {r['batch']}: "
                  f"{r['python_core_eps']:,.0f} events/s; compiled / Python "
                  f"{r['native_over_python']:.2f}x)")
        print(f"| {r['trees']} | {r['batch']} | {r['with_model_eps']:,.0f} | "
              f"{r['without_model_eps']:,.0f} | {r['with_over_without_time']:.2f} | "
              f"{r['model_share']:.0%} | {r['model_share_inside']:.0%} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} |")
    sizes = baseline_sizes(models[0], lines)
    print(f"baseline bytes per entity (serialised JSON): mean {sizes.mean():.0f}, "
          f"p99 {np.percentile(sizes, 99):.0f}, max {sizes.max()} over {len(sizes)} entities")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
