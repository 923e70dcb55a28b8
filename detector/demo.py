"""``detector demo``: the embedded default, no broker, no arguments.

Builds a small synthetic organisation, learns its normal week through the
engine, then streams one more day with attack campaigns, printing signals as
they fire, and ends with a summary: throughput, signals by action, attack
campaigns caught and missed, and false alarms.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from detector.config import DAY_MS
from detector.engine import Decision, Detector
from detector.evaluate import load_labels
from detector.generate import GeneratorConfig, write_dataset
from detector.metrics import join, quality
from detector.model import load_model
from detector.replay import Reject, batched_events, iter_lines, parse_lines
from detector.signals import iso_time

_STYLE = {"revoke": "bold red", "step_up": "yellow"}


def run_demo(
    model_dir: Path,
    users: int = 120,
    seed: int = 2026,
    warmup_days: int = 7,
    show: int = 25,
    console: Console | None = None,
) -> int:
    """Run the demo and print its summary; return the exit code."""
    con = console or Console()
    model = load_model(model_dir)
    det = Detector(model)
    con.print(
        f"[bold]zt-detector demo[/] model [cyan]{model.version}[/] "
        f"({users} users, {warmup_days} days of history, then 1 day with attacks)"
    )
    with tempfile.TemporaryDirectory(prefix="zt-demo-") as tmp:
        gen = GeneratorConfig(
            users=users,
            days=warmup_days + 1,
            seed=seed,
            attacks=True,
            attack_days_from=warmup_days,
        )
        summary = write_dataset(gen, Path(tmp))
        labels = load_labels(Path(tmp) / "labels.jsonl")
        rejects: list[Reject] = []
        state = det.new_state()
        live_from = gen.start_ms + warmup_days * DAY_MS
        day_decisions: list[Decision] = []
        shown = 0
        n_events = 0
        started = time.perf_counter()
        items = parse_lines(iter_lines([Path(tmp) / "events.jsonl"]))
        for batch in batched_events(items, 1000, rejects.append):
            decisions = det.process(batch, state)
            n_events += len(decisions)
            for d in decisions:
                if d.event.ts_ms < live_from:
                    continue
                day_decisions.append(d)
                if d.signal_id is not None and shown < show:
                    shown += 1
                    _print_signal(con, d, labels.get(d.event_id, {}))
        elapsed = time.perf_counter() - started

    if shown >= show:
        con.print(f"[dim]... (first {show} signals shown)[/]")
    records = [d.to_dict() for d in day_decisions]
    report = quality(join(records, labels))
    actions = Counter(d.action.value for d in day_decisions)
    signals = Counter(d.action.value for d in day_decisions if d.signal_id is not None)

    table = Table(title="Attack campaigns on the live day", show_lines=False)
    table.add_column("scenario")
    table.add_column("campaigns", justify="right")
    table.add_column("caught", justify="right")
    table.add_column("missed", justify="right")
    table.add_column("events to detect (median)", justify="right")
    for name, s in report.scenarios.items():
        ttd = s["median_events_to_detect"]
        table.add_row(
            name,
            str(s["campaigns"]),
            str(s["caught"]),
            str(s["campaigns"] - s["caught"]),
            "-" if ttd is None else f"{ttd:g}",
        )
    con.print(table)
    false_step = sum(
        1
        for d in day_decisions
        if d.action.value == "step_up" and labels.get(d.event_id, {}).get("label") != "attack"
    )
    false_revoke = sum(
        1
        for d in day_decisions
        if d.action.value == "revoke" and labels.get(d.event_id, {}).get("label") != "attack"
    )
    con.print(
        f"events: {n_events} ({summary.events} generated, {len(rejects)} rejected) "
        f"in {elapsed:.1f}s = [bold]{n_events / max(elapsed, 1e-9):,.0f} events/s[/]"
    )
    con.print(
        f"live day: {len(day_decisions)} events, decisions {dict(actions)}, "
        f"signals sent {dict(signals)}"
    )
    caught = sum(s["caught"] for s in report.scenarios.values())
    total = sum(s["campaigns"] for s in report.scenarios.values())
    con.print(f"attacks caught: [bold]{caught}/{total}[/] campaigns")
    for name, b in report.benign.items():
        con.print(
            f"benign look-alikes '{name}': {b['campaigns']} campaigns, "
            f"{b['step_up']} step_up, {b['revoke']} revoke"
        )
    con.print(
        f"false alarms on the live day: {false_step} step_up, {false_revoke} revoke "
        f"(event ROC-AUC {report.roc_auc if report.roc_auc is None else round(report.roc_auc, 4)})"
    )
    return 0


def _print_signal(con: Console, d: Decision, label: dict[str, object]) -> None:
    action = d.action.value
    truth = label.get("scenario") or "normal"
    reasons = "; ".join(r.text for r in d.reasons[:2])
    con.print(
        f"{iso_time(d.event.ts_ms)[11:19]} [{_STYLE[action]}]{action:8}[/] "
        f"{d.event.entity_kind.value}:{d.event.entity} risk={d.risk:.4f} "
        f"[dim]({truth})[/] {reasons}",
        highlight=False,
        no_wrap=True,
        overflow="ellipsis",
    )
