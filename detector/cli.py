"""The ``detector`` command line: generate, train, replay, demo.

This is an entry point: it configures logging and progress output and calls
the pure core. Nothing here decides anything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

logger = logging.getLogger("detector")

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"


def _default_model() -> Path:
    # Installed in place (pip install -e .), models/ sits beside the package;
    # otherwise use ./models/default.
    return DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else Path("models/default")


def _progress(description: str, total: int | None = None):  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    )


def cmd_generate(args: argparse.Namespace) -> int:
    """Write a synthetic workforce dataset."""
    from detector.generate import GeneratorConfig, write_dataset

    cfg = GeneratorConfig(
        users=args.users,
        days=args.days,
        seed=args.seed,
        attacks=not args.no_attacks,
        attack_days_from=args.attack_days_from,
    )
    started = time.perf_counter()
    summary = write_dataset(cfg, Path(args.out))
    elapsed = time.perf_counter() - started
    print(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2).decode())
    print(f"wrote {summary.events} events to {args.out} in {elapsed:.1f}s", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model directory from event files."""
    from detector.train import TrainConfig, train

    tcfg = TrainConfig(
        n_estimators=args.trees,
        max_samples=args.max_samples,
        seed=args.seed,
        step_up_budget=args.step_up_budget,
        revoke_budget=args.revoke_budget,
        step_up_risk=args.step_up_risk,
        revoke_risk=args.revoke_risk,
        name=args.name or Path(args.out).name,
    )
    paths = [Path(p) for p in args.events]
    report = train(paths, Path(args.out), tcfg, log=lambda m: print(m, file=sys.stderr))
    print(
        orjson.dumps(
            {
                "model_dir": str(report.model_dir),
                "version": report.version,
                "events": report.events,
                "rejected": report.rejected,
                "by_kind": report.by_kind,
                "entities": report.entities,
                "entity_days": report.entity_days,
                "thresholds": {
                    "step_up": report.thresholds.step_up,
                    "revoke": report.thresholds.revoke,
                },
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay event files through a model; write decisions and rejects."""
    from detector.engine import Detector
    from detector.model import load_model
    from detector.replay import replay

    paths = [Path(p) for p in args.events]
    total_bytes = sum(p.stat().st_size for p in paths)
    det = Detector(load_model(args.model))
    rejects_fh = open(args.rejects, "wb") if args.rejects else None  # noqa: SIM115
    try:
        with open(args.decisions, "wb") as out, _progress("replay") as bar:
            task = bar.add_task("replay", total=None)
            stats = replay(
                det,
                paths,
                out,
                rejects_fh,
                batch_size=args.batch_size,
                progress=lambda n: bar.update(task, completed=n),
            )
    finally:
        if rejects_fh is not None:
            rejects_fh.close()
    rate = stats.accepted / stats.seconds if stats.seconds else 0.0
    summary = {
        "lines": stats.lines,
        "accepted": stats.accepted,
        "rejected": stats.rejected,
        "reject_reasons": dict(stats.reject_reasons),
        "actions": dict(stats.actions),
        "signals": stats.signals,
        "seconds": round(stats.seconds, 3),
        "events_per_s": round(rate),
        "input_mb": round(total_bytes / 1e6, 2),
        "model_version": det.model.version,
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the embedded demo (no broker)."""
    from detector.demo import run_demo

    return run_demo(
        model_dir=Path(args.model) if args.model else _default_model(),
        users=args.users,
        seed=args.seed,
        warmup_days=args.warmup_days,
        show=args.show,
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``detector`` command."""
    p = argparse.ArgumentParser(
        prog="detector",
        description="Streaming behavioral anomaly detector for zero-trust authorization.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic workforce with labelled attacks")
    g.add_argument("--users", type=int, default=200)
    g.add_argument("--days", type=int, default=7)
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--no-attacks", action="store_true", help="benign traffic only")
    g.add_argument(
        "--attack-days-from", type=int, default=0, help="attacks start on this day index"
    )
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="fit isolation forests on replayed history")
    t.add_argument("--events", action="append", required=True, help="JSONL file (repeatable)")
    t.add_argument("--out", required=True, help="model directory, e.g. models/mine")
    t.add_argument("--trees", type=int, default=100)
    t.add_argument("--max-samples", type=int, default=256)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--step-up-budget", type=float, default=0.5, help="per 100 entity-days")
    t.add_argument("--revoke-budget", type=float, default=0.2, help="per 1,000 entity-days")
    t.add_argument("--step-up-risk", type=float, default=None, help="explicit risk threshold")
    t.add_argument("--revoke-risk", type=float, default=None, help="explicit risk threshold")
    t.add_argument("--name", default=None)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("replay", help="decide every event of JSONL files, in order")
    r.add_argument("--model", required=True, help="model directory")
    r.add_argument("--events", action="append", required=True, help="JSONL file (repeatable)")
    r.add_argument("--decisions", required=True, help="output JSONL, one decision per event")
    r.add_argument("--rejects", default=None, help="output JSONL of rejected lines")
    r.add_argument("--batch-size", type=int, default=1000)
    r.set_defaults(func=cmd_replay)

    d = sub.add_parser("demo", help="embedded demo: a small organisation, a day with attacks")
    d.add_argument("--model", default=None, help="model directory (default: models/default)")
    d.add_argument("--users", type=int, default=120)
    d.add_argument("--seed", type=int, default=2026)
    d.add_argument("--warmup-days", type=int, default=7)
    d.add_argument("--show", type=int, default=25, help="signals to print as they fire")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``detector`` command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code: int = args.func(args)
    except (OSError, ValueError) as exc:
        print(f"detector {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
