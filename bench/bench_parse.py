"""parse_event us/event: the raw reader against the compiled orjson path and pure Python.

``ParseKernels.raw`` (``native/src/jparse.rs``) reads a document's bytes
straight to its Event; without it, parse_event decodes the document with
``orjson.loads`` and runs the compiled fast path over the dict; with the
compiled parser off, it runs the Python fast path. The three are timed side
by side in one process, interleaved, on the same lines (the last ``--lines``
of a generated dataset), best and median of ``--repeat`` rounds; also the
share of lines the raw reader accepts (the rest take the orjson path).

Usage::

    python bench/bench_parse.py [--users 200] [--days 7] [--seed 99] [--lines 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import generated_lines

import detector.events as events_mod

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
    args = p.parse_args()
    lines = generated_lines(args.users, args.days, args.seed)[-args.lines :]
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


if __name__ == "__main__":
    main()
