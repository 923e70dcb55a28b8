"""Detection quality of a model on a freshly generated, labelled organisation.

Generates an organisation with a different seed (and by default a larger
size) than the shipped model was trained on, replays it through the engine
from empty baselines, and scores the decisions of the days after a warm-up
(baselines need history; the warm-up days carry no attacks).

Usage::

    python bench/quality.py [--model models/default] [--users 300] [--days 10] [--warmup-days 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from detector.config import DAY_MS
from detector.engine import Detector, EngineState
from detector.evaluate import load_labels
from detector.generate import GeneratorConfig, write_dataset
from detector.metrics import join, quality
from detector.model import load_model
from detector.replay import batched_events, iter_lines, parse_lines


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/default")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--warmup-days", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default=None, help="also write the metrics here")
    args = p.parse_args()

    gen = GeneratorConfig(users=args.users, days=args.days, seed=args.seed,
                          attack_days_from=args.warmup_days)
    det = Detector(load_model(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_dataset(gen, Path(tmp))
        labels = load_labels(Path(tmp) / "labels.jsonl")
        state = EngineState()
        scored = []
        start = gen.start_ms + args.warmup_days * DAY_MS
        items = parse_lines(iter_lines([Path(tmp) / "events.jsonl"]))
        for batch in batched_events(items, 1000, lambda r: None):
            for d in det.process(batch, state):
                if d.event.ts_ms >= start:
                    scored.append(d.to_dict())
    report = quality(join(scored, labels)).to_dict()
    report["setup"] = {"model": det.model.version, "seed": args.seed, "users": args.users,
                       "days": args.days, "warmup_days": args.warmup_days,
                       "generated_events": summary.events, "scored_events": len(scored)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print("\n| scenario | campaigns | caught | recall | median events to detect |",
          file=sys.stderr)
    print("|---|---:|---:|---:|---:|", file=sys.stderr)
    for name, s in report["scenarios"].items():
        print(f"| {name} | {s['campaigns']} | {s['caught']} | {s['recall']:.2f} | "
              f"{s['median_events_to_detect']} |", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
