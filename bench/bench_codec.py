"""Internal record codec: the compiled encoder and decoder against Python's, side by side.

The worker forwards events between its stages in packed records: it packs
them (``detector.stream.stages.pack``) and decodes them
(``decode_records``) at each of three hops. This script packs the same
generated events as the worker does (4 partitions, varied IP and session
context) and decodes every record, with the compiled codec
(``native/src/codec.rs``) and in Python only (orjson), in alternating
rounds, and prints CPU microseconds per event for each and their ratios.
It checks that both ways decode to equal events, from either encoding.

Usage::

    python bench/bench_codec.py [--users 300] [--days 3] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable

from common import generated_lines

from detector.context import IpStats
from detector.events import ParseError, parse_event
from detector.gctune import DEFAULT_THRESHOLD, apply_threshold
from detector.stream import stages
from detector.stream.stages import Routed, Source, decode_records, pack


def _routed(lines: list[bytes]) -> list[tuple[str, Routed]]:
    rng = random.Random(3)
    out: list[tuple[str, Routed]] = []
    for i, line in enumerate(lines):
        try:
            event = parse_event(line)
        except ParseError:
            continue
        ip = None if rng.random() < 0.3 else IpStats(rng.randrange(20), rng.randrange(5), 1)
        changes = () if rng.random() < 0.9 else (("s-1", "user:a", "203.0.113.9"),)
        out.append((stages.ip_key(event), Routed(event, Source("zt.auth", i % 4, i), ip, changes)))
    return out


def _cpu_us_per_event(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    """Print the figures; return 0, or 1 when the two decoders disagree."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    apply_threshold(DEFAULT_THRESHOLD)  # the worker's collector thresholds
    routed = _routed(generated_lines(args.users, args.days, 11))
    n = len(routed)
    if not stages.use_native_codec(True):
        print("the compiled codec is not built (scripts/build-native)", file=sys.stderr)
        return 1
    records = [raw for _, raw in pack(routed, 4)]
    stages.use_native_codec(False)
    python_records = [raw for _, raw in pack(routed, 4)]

    def decode_all(chunks: list[bytes]) -> list[Routed]:
        return [r for raw in chunks for r in decode_records(raw)]

    python_out = decode_all(records)
    stages.use_native_codec(True)
    expected = sorted((r for _, r in routed), key=lambda r: r.origin.offset)
    for out in (decode_all(records), decode_all(python_records), python_out):
        if sorted(out, key=lambda r: r.origin.offset) != expected:
            print("the codecs disagree", file=sys.stderr)
            return 1
    figures: dict[str, list[float]] = {
        "pack python": [], "pack compiled": [], "decode python": [], "decode compiled": []}
    for _ in range(args.rounds):
        gc.collect()
        for name, on in (("python", False), ("compiled", True)):
            stages.use_native_codec(on)
            figures[f"pack {name}"].append(_cpu_us_per_event(lambda: pack(routed, 4), n))
            figures[f"decode {name}"].append(
                _cpu_us_per_event(lambda: decode_all(records), n))
    stages.use_native_codec(True)
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"{n:,} events in {len(records):,} records "
          f"({sum(map(len, records)) / n:.0f} bytes per event), {args.rounds} rounds, medians")
    for step in ("pack", "decode"):
        py, compiled = med[f"{step} python"], med[f"{step} compiled"]
        print(f"  {step:6s} Python (orjson) {py:6.2f} us CPU per event, compiled "
              f"{compiled:6.2f} us ({py / compiled:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
