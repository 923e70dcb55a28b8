"""``detector replay`` from two checkouts side by side: events/s of the CLI itself, in turns.

The core replay benchmark (``bench_replay.py``) times parse + process in one
process; this one times the command an engineer runs, end to end (reading the
file, parsing, the engine, writing every decision), for this checkout and
another one (``--checkout DIR``, its compiled module built there with
``scripts/build-native``), alternating which runs first in each round. Each
run reports its own ``events_per_s`` (lines read to the last decision
written, after the model is loaded). The outputs of the two are compared
byte for byte: a speed-up that changed a decision would not be one.

Usage::

    git worktree add /tmp/before <commit> && (cd /tmp/before && scripts/build-native)
    python bench/bench_replay_ab.py --checkout /tmp/before --rounds 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kafka import checkout_launcher  # noqa: E402  (the bench directory is not a package)
from common import REPO, generated_lines, median  # noqa: E402


def replay_once(launcher: tuple[str, ...], model: Path, events: Path, out: Path,
                cpu: int | None) -> float:
    """Run ``detector replay`` once with ``launcher``; return its events/s."""
    cmd = [*launcher, "replay", "--model", str(model), "--events", str(events),
           "--decisions", str(out)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    done = subprocess.run(cmd, capture_output=True, check=True)  # noqa: S603  (our own argv)
    return float(orjson.loads(done.stdout)["events_per_s"])


def main() -> int:
    """Run the rounds, print one line per run and the medians' ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkout", type=Path, required=True, help="the other checkout (before)")
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cpu", type=int, default=1, help="CPU to pin each run to (-1: none)")
    args = p.parse_args()
    cpu = None if args.cpu < 0 else args.cpu
    this = (sys.executable, "-m", "detector.cli")
    other = checkout_launcher(args.checkout)
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        lines = generated_lines(args.users, args.days, args.seed)
        events.write_bytes(b"\n".join(lines) + b"\n")
        outs = {"before": Path(tmp) / "before.jsonl", "now": Path(tmp) / "now.jsonl"}
        rates: dict[str, list[float]] = {"before": [], "now": []}
        print(f"{len(lines):,} generated events ({args.users} users x {args.days} days, "
              f"seed {args.seed}); before = {args.checkout}, now = {REPO}")
        for r in range(args.rounds):
            order = ["before", "now"] if r % 2 == 0 else ["now", "before"]
            for name in order:
                launcher = other if name == "before" else this
                eps = replay_once(launcher, args.model, events, outs[name], cpu)
                rates[name].append(eps)
                print(f"round {r} {name:6} {eps:10,.0f} events/s")
        same = outs["before"].read_bytes() == outs["now"].read_bytes()
    b, n = median(rates["before"]), median(rates["now"])
    print(f"median: before {b:,.0f}, now {n:,.0f} events/s; now / before {n / b:.2f}x; "
          f"decisions {'byte-identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
