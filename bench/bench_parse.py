"""parse_event us/event: the raw reader against the compiled orjson path and pure Python.

``ParseKernels.raw`` (``native/src/jparse.rs``) reads a document's bytes
straight to its Event; without it, parse_event decodes the document with
``orjson.loads`` and runs the compiled fast path over the dict; with the
compiled parser off, it runs the Python fast path. The three are timed side
by side in one process, interleaved, on the same lines (the last ``--lines``
of a generated dataset), best and median of ``--repeat`` rounds; also the
share of lines the raw reader accepts (the rest take the orjson path).

With ``--pipeline``, also the whole compiled core (parse + process, batch
``--batch``, ``models/default``) with the raw reader on and off, batch by
batch in alternating order, each on its own copy of a warmed-up state, on
one pinned core (like ``bench_replay.py``).

Usage::

    python bench/bench_parse.py [--users 200] [--days 7] [--seed 99] [--lines 20000]
                                [--pipeline] [--batch 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench_replay import copy_state, detector_for, run
from common import REPO, generated_lines, pinned

import detector.events as events_mod
from detector.model import load_model

#: (name, use_native_parser arguments)
VARIANTS = (
    ("raw reader", (True, True)),
    ("compiled, no raw", (True, False)),
    ("python", (False, True)),
)


def main() -> None:
    """Print us/event of each variant and the raw reader's acceptance share."""
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--lines", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--pipeline", action="store_true")
    p.add_argument("--batch", type=int, default=1000)
    args = p.parse_args()
    everything = generated_lines(args.users, args.days, args.seed)
    lines = everything[-args.lines :]
    if not events_mod.use_native_parser(True) or events_mod._raw_event is None:
        raise SystemExit("the compiled parser is not built")
    raw = events_mod._raw_event
    accepted = sum(raw(line) is not None for line in lines)
    parse_event = events_mod.parse_event
    times: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    try:
        for _ in range(args.repeat):
            for name, switch in VARIANTS:
                events_mod.use_native_parser(*switch)
                started = time.perf_counter()
                for line in lines:
                    parse_event(line)
                times[name].append((time.perf_counter() - started) / len(lines) * 1e6)
    finally:
        events_mod.use_native_parser(True)
    print(f"{len(lines)} lines (users={args.users} days={args.days} seed={args.seed}); "
          f"raw reader accepted {accepted} ({100 * accepted / len(lines):.2f} %)")
    for name, t in times.items():
        print(f"  {name:18s} {min(t):6.3f} us/event best, {statistics.median(t):6.3f} median")
    if args.pipeline:
        pipeline(everything[: -args.lines], lines, args.batch, args.repeat)


def pipeline(warmup: list[bytes], timed: list[bytes], batch: int, repeat: int) -> None:
    """Print the compiled core's events/s with the raw reader on and off, interleaved."""
    model = load_model(REPO / "models" / "default")
    switches = {"raw reader": True, "no raw": False}
    dets = {name: detector_for(model, True, True)[0] for name in switches}
    events_mod.use_native_parser(True)
    warm = {name: run(det, warmup, batch)[2] for name, det in dets.items()}
    secs: dict[str, list[float]] = {name: [] for name in switches}
    with pinned(0):
        try:
            for _ in range(repeat):
                states = {name: copy_state(warm[name]) for name in switches}
                total = dict.fromkeys(switches, 0.0)
                order = list(switches)
                for step, i in enumerate(range(0, len(timed), batch)):
                    chunk = timed[i : i + batch]
                    for name in order if step % 2 == 0 else reversed(order):
                        events_mod.use_native_parser(True, raw=switches[name])
                        started = time.perf_counter()
                        dets[name].process([events_mod.parse_event(r) for r in chunk], states[name])
                        total[name] += time.perf_counter() - started
                for name in switches:
                    secs[name].append(total[name])
        finally:
            events_mod.use_native_parser(True)
    print(f"core pipeline, models/default, batch {batch}, {len(timed)} events:")
    for name, s in secs.items():
        print(f"  {name:18s} {len(timed) / statistics.median(s):9,.0f} events/s median, "
              f"{len(timed) / min(s):9,.0f} best")


if __name__ == "__main__":
    main()
